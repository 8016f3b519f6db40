"""Alert evaluation resumes from its checkpoint (db.alerts.checkpoint) and judges only the runs that arrived since:
judging after every push leaves the same alert rows and the same checkpoints as judging once at the end, through a
drop that turns active and resolves, a lone dip, a pass@1 drop (per-problem outcomes), runs that finish in the same
second, a run that arrives out of order and an annotation at a run judged already (those two judge the job anew)."""
from __future__ import annotations

import copy
import datetime as dt
import random
import uuid

from typer.testing import CliRunner

from core import rundoc
from db import store
from db.alerts import evaluate as evaluation
from db.alerts.deliver import evaluate_and_deliver
from db.engine import open_store, session_scope
from db.models import Alert, AlertSeriesState, Annotation
from db.testing import new_database
from runner.cli import app

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
PROBLEMS = 40


def _doc(template: dict, at: dt.datetime, decode: float, passed: int) -> dict:
    doc = copy.deepcopy(template)
    doc.update(run_id=str(uuid.uuid4()), started_at=at.isoformat(), finished_at=at.isoformat())
    doc["perf"][0]["first_token_tokens_per_s"] = {"median": 1.2}
    doc["perf"][0]["decode_tokens_per_s"] = {"median": decode}
    doc["humaneval"] = {"problems": PROBLEMS, "samples_per_problem": 1, "passed": passed,
                        "pass_at_k": {"1": passed / PROBLEMS},
                        "results": [{"task_id": f"HumanEval/{i}", "sample": 0, "completion": "", "passed": i < passed,
                                     "verdict": "passed" if i < passed else "failed: "} for i in range(PROBLEMS)]}
    return rundoc.validate(doc)


def _history(reference_docs, days: int = 140) -> list[tuple[str, object]]:
    """("push", document) and ("annotate", run id) in the order they happen."""
    rng = random.Random(11)
    cand, base = reference_docs

    def speed(level: float) -> float:
        return level * rng.lognormvariate(0, 0.01)

    events, drop_start = [], None
    for i in range(days):
        day = T0 + dt.timedelta(days=i)
        factor = 0.8 if i == 30 else 0.85 if 60 <= i < 75 else 1.0  # a lone dip; a drop that lasts, then recovers
        passed = 6 if 100 <= i < 104 else 14  # pass@1: 8 problems lost
        events.append(("push", _doc(base, day, speed(16.5), 14)))
        c = _doc(cand, day + dt.timedelta(hours=1), speed(8.9 * factor), passed)
        events.append(("push", c))
        if i == 40:  # a rerun that finishes in the same second, pushed after it
            events.append(("push", _doc(cand, day + dt.timedelta(hours=1), speed(8.9), 14)))
        if i == 90:  # an A100 run from day 85 that reaches the store late
            events.append(("push", _doc(base, T0 + dt.timedelta(days=85, hours=2), speed(16.5), 14)))
        if i == 120:
            drop_start = c["run_id"]
        if i >= 120:  # an intended change, too small to alert on: the 910B3 is 2% slower from day 120 on
            c["perf"][0]["decode_tokens_per_s"] = {"median": speed(8.9 * 0.98)}
        if i == 123:  # annotated at a run judged three days ago: its reference restarts there
            events.append(("annotate", drop_start))
    return events


def _state(engine) -> tuple[list, dict]:
    with session_scope(engine) as s:
        rows = sorted((a.series, a.opened_candidate_run, a.opened_baseline_run, a.latest_candidate_run,
                       a.latest_baseline_run, a.state, a.moved, a.baseline_ratio, a.ratio, a.change_pct, a.reason,
                       a.batch_size, a.level) for a in s.query(Alert))
        # each store stamps pushed_at itself: the last run judged is named by its finish time and id
        checkpoints = {(c.fingerprint, c.candidate_device, c.baseline_device):
                       {**c.data, "last": [c.data["last"][0], c.data["last"][2]]} for c in s.query(AlertSeriesState)}
    return rows, checkpoints


def _annotate(engine, run_id: str) -> None:
    with session_scope(engine) as s:
        s.add(Annotation(run_id=run_id, note="CANN 8.0 -> 8.1", created_at=dt.datetime.now(dt.timezone.utc)))


def test_judging_after_every_push_equals_judging_once(store_url, request, tmp_path, reference_docs, monkeypatch):
    resumed, since = [], evaluation._since

    def spy(*args):
        out = since(*args)
        resumed.append(out is not None)
        return out

    monkeypatch.setattr(evaluation, "_since", spy)
    events = _history(reference_docs)
    every = open_store(store_url)
    once_url = (f"sqlite:///{tmp_path / 'once.db'}" if store_url.startswith("sqlite")
                else new_database(request.getfixturevalue("postgres_server")))
    once = open_store(once_url)
    for what, arg in events:
        for engine in (every, once):
            (store.push(engine, arg) if what == "push" else _annotate(engine, arg))
        evaluate_and_deliver(every, None)
    # every evaluation but the first, the late run's and the annotation's resumed from the checkpoint
    assert len(resumed) == len(events) - 1 and resumed.count(False) == 2
    resumed.clear()
    evaluate_and_deliver(once, None)
    assert resumed == []  # no checkpoint yet: judged from the start
    rows, checkpoints = _state(every)
    assert (rows, checkpoints) == _state(once)
    by_metric = {(r[0].split("/")[1], r[5]) for r in rows}
    assert {("decode_tokens_per_s", s) for s in ("outlier", "resolved")} <= by_metric
    assert ("pass_at_1", "resolved") in by_metric  # active while the 8 problems were lost, then back
    assert not [r for r in rows if r[5] in ("suspected", "active")]
    # the annotation restarted the 910B3 reference at day 120: it holds its 20 runs since (a window is 50)
    (ckpt,) = checkpoints.values()
    series = ckpt["series"][f"{reference_docs[0]['job']['fingerprint']}/decode_tokens_per_s/910B3-vs-A100/bs1"]
    assert len(series["detector"]["devices"]["candidate"]["accepted"]) == 20

    # a rebuild judges everything again and leaves the same rows and checkpoints
    assert CliRunner().invoke(app, ["alerts", "check", "--rebuild", "--db", store_url]).exit_code == 0
    assert _state(every) == (rows, checkpoints)
    every.dispose()
    once.dispose()


def test_a_stale_or_missing_checkpoint_is_judged_anew(tmp_path, reference_docs):
    """A checkpoint that no longer matches the runs (here: runs deleted behind its back) or none at all: the job is
    judged from the start, with the same result."""
    engine = open_store(f"sqlite:///{tmp_path / 's.db'}")
    events = [e for e in _history(reference_docs, 80) if e[0] == "push"]
    for _, doc in events:
        store.push(engine, doc)
        evaluate_and_deliver(engine, None)
    expected = _state(engine)
    with session_scope(engine) as s:
        s.query(AlertSeriesState).delete()
    evaluate_and_deliver(engine, None)
    assert _state(engine) == expected
    with session_scope(engine) as s:
        for c in s.query(AlertSeriesState):
            c.data = {**c.data, "runs": {d: n + 1 for d, n in c.data["runs"].items()}}  # out of step with the runs
    store.push(engine, _doc(reference_docs[0], T0 + dt.timedelta(days=90), 8.9, 14))
    evaluate_and_deliver(engine, None)
    _, checkpoints = _state(engine)
    assert all(c["runs"] == {"910B3": 82, "A100": 80} for c in checkpoints.values())  # 80 days, a rerun, one more
