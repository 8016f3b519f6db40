"""Compare: the reference report's two tables (accuracy; speed per batch size, ratio = candidate / baseline) for one
job and device pair, plus what the report lacks: significance of the accuracy difference, intervals of the speed
ratios, bandwidth utilisation, greedy-token agreement and an environment diff; the tables as markdown to copy and
as CSV to download.
"""
import streamlit as st

from dashboard import _data as data
from dashboard import _ui as ui
from dashboard.views import _precision
from core.metrics import format_value as fmt

st.title("Compare")
url = data.store_url()


def run_line(device: str, run: dict | None) -> str:
    if run is None:
        return f"**{device}**: no run of this job"
    origin = f"imported from _{run['imported_from']}_" if run["source"] == "imported" else "measured"
    name = f"{run['device_name']}, " if run["device_name"] else ""
    count = f"{run['device_count']} devices, " if run["device_count"] else ""
    return f"**{device}**: run `{run['id']}` ({name}{count}{origin}, finished {ui.when(run['finished_at'])})"


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
        st.markdown(f"{head}. Significance: **not available**: {view['accuracy_test_unavailable']}.")
        return
    lo, hi = test.interval
    st.markdown(f"{head}. pass@1 difference {test.difference:+.4f} over {test.problems} paired problems "
                f"(95% paired-bootstrap interval {lo:+.4f} to {hi:+.4f}): **{test.label()}**.")


def speed_intervals(view: dict) -> None:
    rows = [["batch size", "metric", "ratio", "95% interval", "repeats (candidate / baseline)"]]
    for r in view["speed_intervals"]:
        interval = (f"{fmt(r['interval'][0], 'ratio')} to {fmt(r['interval'][1], 'ratio')}" if r["interval"]
                    else f"not available: {r['why']}")
        rows.append([str(r["batch_size"]), r["metric"], fmt(r["ratio"], "ratio"), interval,
                     f"{r['repeats'][0]} / {r['repeats'][1]}"])
    if len(rows) > 1:
        ui.table(rows)
    st.caption("Interval: bootstrap of median(candidate repeats) / median(baseline repeats), each device's repeats "
               "resampled independently.")


def bandwidth(view: dict) -> None:
    rows = [{**r, "bandwidth_util": None if r["bandwidth_util"] is None else f"{r['bandwidth_util']:.1%}",
             "peak_memory_bytes": None if r["peak_memory_bytes"] is None else f"{r['peak_memory_bytes'] / 2**30:.2f}",
             "cpu_contention": r["cpu_contention"]} for r in view["bandwidth"]]
    if not rows:
        st.info("No perf records on either side.")
        return
    ui.records(rows, {"device": "device", "batch_size": "batch size", "bandwidth_gbps": "decode bandwidth (GB/s)",
                      "bandwidth_util": "of the device's peak", "peak_memory_bytes": "peak memory (GiB)",
                      "cpu_other_cores": "other processes' CPU (cores)", "cpu_contention": "CPU contention"})
    if all(r["bandwidth_gbps"] is None for r in view["bandwidth"]):
        st.caption("Not recorded by these runs (imported reports publish only tokens/s).")


def agreement(view: dict) -> None:
    ta = view["token_agreement"]
    if ta is None:
        st.markdown("Greedy token agreement: **not available** (both runs need a token probe of the same prompts; "
                    "imported runs have none).")
    else:
        where = ("identical throughout" if ta["first_divergence"] is None else
                 f"first divergence at token {ta['first_divergence']['position']} of {ta['first_divergence']['task']}")
        st.markdown(f"Greedy token agreement: **{ta['share']:.2%}** of {ta['tokens']} probe tokens, {where}.")
    for device, ba in view["batch_agreement"].items():
        if ba and ba.get("share") is not None:
            st.markdown(f"Batched vs batch-1 HumanEval completions on {device}: {ba['identical']} of {ba['prompts']} "
                        f"identical ({ba['share']:.0%}).")


def environment(view: dict) -> None:
    rows = [["", view["candidate"], view["baseline"], "same?"]]
    for r in view["environment"]:
        values = ["not recorded" if v is None else str(v) for v in (r["candidate"], r["baseline"])]
        both_missing = r["candidate"] is None and r["baseline"] is None
        rows.append([r["label"], *values, "" if both_missing else "same" if r["same"] else "differs"])
    ui.table(rows)
    imported = [view[side] for side in ("candidate", "baseline")
                if view["runs"][side] is not None and view["runs"][side]["source"] == "imported"]
    if imported:
        st.caption(f"Imported runs ({', '.join(imported)}) carry no environment: the published report did not give it.")


def export(view: dict) -> None:
    st.caption("Markdown as READMEs use it: the copy button is at the top right of the block.")
    st.code(view["markdown"], language="markdown")
    name = f"{view['job_name']}-{view['candidate']}-vs-{view['baseline']}"
    left, right = st.columns(2)
    left.download_button("Download CSV", view["csv"], file_name=f"{name}.csv", mime="text/csv",
                         on_click="ignore", icon=":material/download:")
    right.download_button("Download markdown", view["markdown"], file_name=f"{name}.md", mime="text/markdown",
                          on_click="ignore", icon=":material/download:")


with ui.store_errors(url):
    job, candidate, baseline = ui.pick_job_and_pair(url)
    view = data.comparison(url, job["fingerprint"], candidate, baseline)
    st.markdown(f"**{view['job_name']}** · `{job['model_name']}` · fingerprint `{view['fingerprint']}` · "
                f"{candidate} vs {baseline}, ratio = {candidate} / {baseline}")
    st.markdown("\n".join(f"- {run_line(d, view['runs'][side])}"
                          for side, d in (("candidate", candidate), ("baseline", baseline))))

    st.subheader("Accuracy (HumanEval)")
    ui.table(view["accuracy_table"])
    accuracy_significance(view)

    st.subheader("Speed")
    ui.table(view["speed_table"])
    speed_intervals(view)

    st.subheader("Bandwidth utilisation and memory")
    bandwidth(view)

    st.subheader("Agreement between devices")
    agreement(view)
    _precision.section(url, view)

    st.subheader("Environment")
    environment(view)

    st.subheader("Copy or download")
    export(view)
