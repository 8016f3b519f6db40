"""Compare: the reference report's two tables (accuracy; speed per batch size, ratio = candidate / baseline) for one
job and device pair, plus what the report lacks: significance of the accuracy difference, intervals of the speed
ratios, energy per token where the runs metered board power, bandwidth utilisation, greedy-token agreement and an
environment diff; the tables as markdown to copy and as CSV to download.
"""
import streamlit as st

from core.metrics import format_value as fmt
from dashboard import _data as data
from dashboard import _format
from dashboard import _ui as ui
from db import report as readme
from db import tables
from dashboard.views import _precision

st.title("Compare")
url = data.store_url()


def run_line(device: str, run: dict | None) -> str:
    if run is None:
        return f"**{ui.md(device)}**: no run of this job"
    origin = f"imported from “{ui.md(run['imported_from'])}”" if run["source"] == "imported" else "measured"
    name = f"{ui.md(run['device_name'])}, " if run["device_name"] else ""
    count = f"{run['device_count']} devices, " if run["device_count"] else ""
    finished = ("date not in the source" if "finished_at" in run["missing"] else
                f"finished {ui.when(run['finished_at'])}")
    return f"**{ui.md(device)}**: run `{run['id']}` ({name}{count}{origin}, {finished})"


def accuracy_significance(view: dict) -> None:
    test, rows = view["accuracy_test"], {r["metric"]: r for r in view["accuracy"]}
    passed = rows["passed"]
    if passed["candidate"] is not None and passed["baseline"] is not None:
        diff = passed["candidate"] - passed["baseline"]
        head = (f"Accuracy difference: {diff:+d} problem{'' if abs(diff) == 1 else 's'} passed "
                f"({passed['candidate']} vs {passed['baseline']})")
    else:
        head = "Accuracy difference: not available (a side is missing)"
    if test is None:
        bound = readme.never_significant(view)
        extra = (f" Still, a difference of {bound[0]} problem(s) on the same problems is **not significant** whatever "
                 f"the per-problem outcomes: the smallest exact McNemar p it can have is {bound[1]:.3g}."
                 if bound is not None else "")
        st.markdown(f"{head}. Significance: **not available**: {ui.md(view['accuracy_test_unavailable'])}.{extra}")
        return
    lo, hi = test.interval
    st.markdown(f"{head}. pass@1 difference {test.difference:+.4f} over {test.problems} paired problems "
                f"(95% paired-bootstrap interval {lo:+.4f} to {hi:+.4f}): **{test.label()}**.")


def speed_intervals(view: dict) -> None:
    rows = [["batch size", "metric", "ratio", "95% interval", "repeats (candidate / baseline)"]]
    for r in view["speed_intervals"]:
        interval = (f"{fmt(r['interval'][0], 'ratio')} to {fmt(r['interval'][1], 'ratio')}" if r["interval"]
                    else f"not available: {r['why']}")
        # no raw repeats stored (imported aggregates): how many there were is unknown, not zero
        repeats = " / ".join(str(n) if n else _format.UNKNOWN for n in r["repeats"])
        rows.append([str(r["batch_size"]), r["metric"], fmt(r["ratio"], "ratio"), interval, repeats])
    if len(rows) > 1:
        ui.table(rows)
    st.caption("Interval: bootstrap of median(candidate repeats) / median(baseline repeats), each device's repeats "
               "resampled independently.")


def energy(view: dict) -> None:
    if view["energy_table"] is None:
        st.caption("No energy records: these runs predate power sampling or were imported.")
        return
    ui.table(view["energy_table"])
    st.caption(" ".join(filter(None, (ui.md(view["energy_meters"]), "n/a: the side had no figure, for the reason given "
                                                             "(never a zero)."))))


def bandwidth(view: dict) -> None:
    fields = {"bandwidth_gbps": "decode bandwidth", "bandwidth_util": "of the device's peak",
              "peak_memory_bytes": "peak memory", "cpu_other_cores": "other processes' CPU use",
              "cpu_contention": "CPU contention"}
    rows = [{"device": r["device"], "batch_size": r["batch_size"],
             **{k: _format.field_value(k, r[k]) for k in fields}} for r in view["bandwidth"]]
    if not rows:
        st.info("No perf records on either side.")
        return
    ui.records(rows, {"device": "device", "batch_size": "batch size", **fields})
    if all(r["bandwidth_gbps"] is None for r in view["bandwidth"]):
        st.caption("Not recorded by these runs (imported reports publish only tokens/s).")


def agreement(view: dict) -> None:
    ta = view["token_agreement"]
    if ta is None:
        runs = view["runs"]
        lacking = [view[side] for side in ("candidate", "baseline") if runs[side] is None]
        imported = [view[side] for side in ("candidate", "baseline") if runs[side] and runs[side]["source"] == "imported"]
        why = (f"there is no {ui.md(lacking[0])} run of this job" if lacking else
               f"the {ui.md(' and '.join(imported))} run{'s are' if len(imported) > 1 else ' is'} imported, "
               "without a token probe" if imported else
               "both runs need a token probe of the same prompts")
        st.markdown(f"Greedy token agreement: **not available** ({why}).")
    else:
        where = ("identical throughout" if ta["first_divergence"] is None else
                 f"first divergence at token {ta['first_divergence']['position']} of {ta['first_divergence']['task']}")
        st.markdown(f"Greedy token agreement: **{ta['share']:.2%}** of {ta['tokens']} probe tokens, {where}.")
    for device, ba in view["batch_agreement"].items():
        if ba and ba.get("share") is not None:
            st.markdown(f"Batched vs batch-1 HumanEval completions on {ui.md(device)}: {ba['identical']} of {ba['prompts']} "
                        f"identical ({ba['share']:.0%}).")


def environment(view: dict) -> None:
    rows = [["", view["candidate"], view["baseline"], "same?"]]
    has_run = [view["runs"][side] is not None for side in ("candidate", "baseline")]
    for r in view["environment"]:
        values = [("not recorded" if v is None else str(v)) if ran else "no run"
                  for v, ran in zip((r["candidate"], r["baseline"]), has_run)]
        unknown = not all(has_run) or (r["candidate"] is None and r["baseline"] is None)
        rows.append([r["label"], *values, "" if unknown else "same" if r["same"] else "differs"])
    ui.table(rows)
    imported = [view[side] for side in ("candidate", "baseline")
                if view["runs"][side] is not None and view["runs"][side]["source"] == "imported"]
    if imported:
        st.caption(f"Imported runs ({', '.join(imported)}) carry no environment: the published report did not give it.")


def export(view: dict) -> None:
    st.caption("Markdown as READMEs use it: the copy button is at the top right of the block.")
    st.code(view["markdown"], language="markdown")
    name = f"{view['job_name']}-{view['candidate']}-vs-{view['baseline']}"
    cols = st.columns(5, vertical_alignment="bottom")
    cols[0].download_button("CSV", view["csv"], file_name=f"{name}.csv", mime="text/csv", on_click="ignore",
                            icon=":material/download:", help="The two tables as CSV")
    cols[1].download_button("Markdown", view["markdown"], file_name=f"{name}.md", mime="text/markdown",
                            on_click="ignore", icon=":material/download:", help="The block above")
    # the ModelZoo README's competitor-comparison section, as `runner report` writes it
    lang = cols[2].segmented_control("README section", ["en", "zh"], default="en", key="report_lang",
                                     format_func={"en": "English", "zh": "中文"}.get,
                                     help="The competitor comparison of a ModelZoo README: the guide's two tables "
                                          "and wording, with a footnote (`runner report`)") or "en"
    for col, fmt_name, ext, mime in ((cols[3], "markdown", "md", "text/markdown"), (cols[4], "html", "html",
                                                                                     "text/html")):
        col.download_button(f"README {ext}", data.report(url, view["fingerprint"], view["candidate"],
                                                         view["baseline"], lang, fmt_name),
                            file_name=f"{name}-readme-{lang}.{ext}", mime=mime, on_click="ignore",
                            icon=":material/download:", key=f"readme_{ext}")


with ui.store_errors(url):
    job, candidate, baseline = ui.pick_job_and_pair(url)
    view = data.comparison(url, job["fingerprint"], candidate, baseline)
    st.markdown(f"**{ui.md(view['job_name'])}** · `{job['model_name']}` · fingerprint `{view['fingerprint']}` · "
                f"{ui.md(candidate)} vs {ui.md(baseline)}, ratio = {ui.md(candidate)} / {ui.md(baseline)}")
    st.markdown("\n".join(f"- {run_line(d, view['runs'][side])}"
                          for side, d in (("candidate", candidate), ("baseline", baseline))))

    st.subheader("Accuracy (HumanEval)")
    ui.table(view["accuracy_table"])
    accuracy_significance(view)

    st.subheader("Speed")
    if len(view["speed_table"]) > 1:
        ui.table(view["speed_table"])
        speed_intervals(view)
    else:  # a serving-only job: its numbers are on the Serving page
        st.markdown(f"{ui.md(tables.NO_SPEED)} Serving levels, where the job has them, are on the Serving page.")

    st.subheader("Energy")
    energy(view)

    st.subheader("Bandwidth utilisation and memory")
    bandwidth(view)

    st.subheader("Agreement between devices")
    agreement(view)
    _precision.section(url, view)

    st.subheader("Environment")
    environment(view)

    st.subheader("Copy or download")
    export(view)
