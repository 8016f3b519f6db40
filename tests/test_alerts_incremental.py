"""Alert evaluation resumes from its checkpoint (db.alerts.checkpoint) and judges only the runs that arrived since:
judging after every push leaves the same alert rows, checkpoints and snapshots as judging once at the end, through a
drop that turns active and resolves, a lone dip, a pass@1 drop (per-problem outcomes), runs that finish in the same
second, runs that arrive out of order (one, then several in a row), an annotation at a run judged already and a
deleted run judged already (those rewind to a snapshot, db.alerts.snapshots), and a late run before the first
snapshot (that one judges the job anew)."""
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
from db.alerts import snapshots
from db.models import Alert, AlertSeriesSnapshot, AlertSeriesState, Annotation, Run
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
        if i == 50:  # an A100 run from day 5, before the first snapshot: the job is judged anew
            events.append(("push", _doc(base, T0 + dt.timedelta(days=5, hours=2), speed(16.5), 14)))
        if i == 90:  # an A100 run from day 85 that reaches the store late
            events.append(("push", _doc(base, T0 + dt.timedelta(days=85, hours=2), speed(16.5), 14)))
        if i == 110:  # a host's outbox replays three runs after an outage, each evaluated as it lands
            events += [("push", _doc(base, T0 + dt.timedelta(days=d, hours=2), speed(16.5), 14))
                       for d in (107, 108, 109)]
        if i == 115:  # an A100 run judged already is deleted
            events.append(("delete", events[-6][1]["run_id"]))
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
        snaps = {(c.fingerprint, c.candidate_device, c.baseline_device, c.seq): (c.run_id, c.data)
                 for c in s.query(AlertSeriesSnapshot)}
    return rows, checkpoints, snaps


def _apply(engine, what: str, arg) -> None:
    if what == "push":
        store.push(engine, arg)
    elif what == "annotate":
        _annotate(engine, arg)
    else:
        with session_scope(engine) as s:
            s.delete(s.get(Run, arg))
        store.rebuild_summary(engine)


def _annotate(engine, run_id: str) -> None:
    with session_scope(engine) as s:
        s.add(Annotation(run_id=run_id, note="CANN 8.0 -> 8.1", created_at=dt.datetime.now(dt.timezone.utc)))


def test_judging_after_every_push_equals_judging_once(store_url, request, tmp_path, reference_docs, monkeypatch):
    resumed, since = [], evaluation._since

    def spy(*args):
        out = since(*args)
        resumed.append("full" if out is None else "rewind" if out.rewound else "resume")
        return out

    monkeypatch.setattr(evaluation, "_since", spy)
    events = _history(reference_docs)
    every = open_store(store_url)
    once_url = (f"sqlite:///{tmp_path / 'once.db'}" if store_url.startswith("sqlite")
                else new_database(request.getfixturevalue("postgres_server")))
    once = open_store(once_url)
    for what, arg in events:
        for engine in (every, once):
            _apply(engine, what, arg)
        evaluate_and_deliver(every, None)
    # the first evaluation had no checkpoint; the late run before the first snapshot judged the job anew; the other
    # late runs, the annotation and the deletion rewound to a snapshot; every other one resumed from the checkpoint
    assert len(resumed) == len(events) - 1
    expected, newest = [], ""
    for what, arg in events:
        late = what == "push" and arg["finished_at"] < newest
        expected.append("rewind" if what != "push" or late and not arg["finished_at"].startswith("2026-01-06")
                        else "full" if late else "resume")
        newest = max(newest, arg["finished_at"]) if what == "push" else newest
    assert resumed == expected[1:]
    assert resumed.count("full") == 1 and resumed.count("rewind") == 6
    resumed.clear()
    evaluate_and_deliver(once, None)
    assert resumed == []  # no checkpoint yet: judged from the start
    rows, checkpoints, snaps = _state(every)
    assert (rows, checkpoints, snaps) == _state(once)
    (runs,) = [c["runs"] for c in checkpoints.values()]
    assert sorted(k[3] for k in snaps) == list(range(snapshots.EVERY, sum(runs.values()) + 1, snapshots.EVERY))
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
    assert _state(every) == (rows, checkpoints, snaps)
    every.dispose()
    once.dispose()


def test_a_stale_or_missing_checkpoint_is_judged_anew(tmp_path, reference_docs):
    """No checkpoint at all: the job is judged from the start, with the same result. One that no longer matches the
    runs (here: its counts out of step): judging rewinds to the newest snapshot that still does."""
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
    _, checkpoints, _ = _state(engine)
    # 80 days, a rerun, a late run, one more
    assert all(c["runs"] == {"910B3": 82, "A100": 81} for c in checkpoints.values())


def test_a_rewind_resolves_an_alert_whose_episode_is_gone(tmp_path, reference_docs, monkeypatch):
    """Deleting the run that opened an open alert rewinds to the snapshot before it: that alert is resolved, the
    episode opens again at the next bad run, and a full re-judge leaves the same rows and state."""
    how, since = [], evaluation._since
    monkeypatch.setattr(evaluation, "_since", lambda *a: how.append(since(*a)) or how[-1])
    engine = open_store(f"sqlite:///{tmp_path / 's.db'}")
    for what, doc in _history(reference_docs, 66):
        if what == "push":
            store.push(engine, doc)
            evaluate_and_deliver(engine, None)
    with session_scope(engine) as s:
        (opened,) = [a.opened_candidate_run for a in s.query(Alert).filter(Alert.state.in_(("suspected", "active")))
                     if "/decode_tokens_per_s/" in a.series]
    _apply(engine, "delete", opened)
    how.clear()
    evaluate_and_deliver(engine, None)
    assert [h.rewound for h in how] == [True]
    rows, checkpoints, snaps = _state(engine)
    gone = [r for r in rows if r[1] == opened]
    assert [r[5] for r in gone] == ["resolved"]
    assert [r[5] for r in rows if "/decode_tokens_per_s/" in r[0] and r[5] in ("suspected", "active")] == ["active"]
    evaluate_and_deliver(engine, None, rebuild=True)
    assert _state(engine) == (rows, checkpoints, snaps)
    engine.dispose()
