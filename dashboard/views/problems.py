"""Problems: which HumanEval problems pass on one device only, with the paired test over them, and any problem's
completions and verdicts from both devices side by side.
"""
import streamlit as st

from core.rules import problem_passed
from dashboard import _data as data
from dashboard import _ui as ui

st.title("Problems")
url = data.store_url()


def pick_run(device: str, runs: list[dict], key: str) -> dict | None:
    if not runs:
        st.markdown(f"**{ui.md(device)}**: no run of this job")
        return None
    by_id = {r["id"]: r for r in runs}
    run_id = st.selectbox(
        f"{device} run", list(by_id), key=key,
        format_func=lambda i: (f"{ui.when(by_id[i]['finished_at'])} · {i[:8]} · {by_id[i]['source']}"
                               f"{'' if by_id[i]['results'] else ' · no per-problem results'}"))
    return by_id[run_id]


def verdicts(samples: list[dict]) -> str:
    if not samples:
        return "no result"
    return "; ".join(s["verdict"] if len(samples) == 1 else f"#{s['sample']}: {s['verdict']}" for s in samples)


def outcome(fraction) -> str:
    return "no result" if fraction is None else "passed" if problem_passed(fraction) else "failed"


with ui.store_errors(url):
    job, candidate, baseline = ui.pick_job_and_pair(url)
    left, right = st.columns(2)
    with left:
        cand_run = pick_run(candidate, data.job_runs(url, job["fingerprint"], candidate), "candidate_run")
    with right:
        base_run = pick_run(baseline, data.job_runs(url, job["fingerprint"], baseline), "baseline_run")
    if cand_run is None or base_run is None:
        st.stop()
    lacking = [(d, r) for d, r in ((candidate, cand_run), (baseline, base_run)) if not r["results"]]
    if lacking:
        for device, run in lacking:
            why = " (an imported report gives only totals)" if run["source"] == "imported" else ""
            st.info(f"The {device} run `{run['id']}` has no per-problem results{why}: pick another run, or submit "
                    f"one with `runner submit --device {device} --job JOB.toml`.", icon=":material/info:")
        st.stop()

    diff = data.problem_diff(url, cand_run["id"], base_run["id"])
    test, why = data.accuracy_test(url, cand_run, base_run, candidate, baseline)
    if test is not None:
        cols = st.columns(4)
        cols[0].metric("passed on both", test.both)
        cols[1].metric(f"{candidate} only", test.candidate_only)
        cols[2].metric(f"{baseline} only", test.baseline_only)
        cols[3].metric("neither", test.neither)
        st.markdown(f"Over {test.problems} problems both runs have: **{test.label()}**.")
    else:
        st.info(f"Paired test not available: {ui.md(why)}.")

    one_sided = [e for e in diff if e["candidate_pass"] is not None and e["baseline_pass"] is not None
                 and problem_passed(e["candidate_pass"]) != problem_passed(e["baseline_pass"])]
    st.subheader("Passed on one device only")
    if one_sided:
        ui.table([["problem", "passes on", f"{candidate} verdict", f"{baseline} verdict"]] + [
            [e["task_id"], candidate if problem_passed(e["candidate_pass"]) else baseline,
             verdicts(e["candidate"]), verdicts(e["baseline"])] for e in one_sided])
    else:
        st.success("No problem passes on one device only: the two runs agree problem by problem.")

    st.subheader("Side by side")
    show = st.radio("Problems", ["passed on one device only", "all problems"], horizontal=True, key="show",
                    index=0 if one_sided else 1)
    pool = one_sided if show == "passed on one device only" and one_sided else diff
    by_task = {e["task_id"]: e for e in pool}
    task = st.selectbox("Problem", list(by_task), key="task",
                        format_func=lambda t: f"{t}: {candidate} {outcome(by_task[t]['candidate_pass'])}, "
                                              f"{baseline} {outcome(by_task[t]['baseline_pass'])}")
    entry = by_task[task]
    for column, device, side in zip(st.columns(2), (candidate, baseline), ("candidate", "baseline")):
        with column:
            st.markdown(f"**{ui.md(device)}**: {outcome(entry[f'{side}_pass'])}")
            if not entry[side]:
                st.caption("no result for this problem")
            for s in entry[side]:
                tokens = f", {s['generated_tokens']} tokens" if s["generated_tokens"] is not None else ""
                st.caption(f"sample {s['sample']}: {ui.md(s['verdict'])}{tokens}")
                st.code(s["completion"] or "(empty completion)", language="python")
