"""Where alert judging stopped, per job and device pair: the `alert_series_state` row's JSON.

Detection is deterministic and a verdict depends only on earlier points, so an evaluation can resume each series'
detector (db.alerts.detect.Detector) from the state it had after the last run judged, and judge only the runs that
arrived since. The checkpoint holds what resuming needs and what tells whether it still holds:
- `last`: the pairing order key (db.pairing.order_key) of the last run judged, and `latest`, each device's latest run
  then (the other side of the next points);
- `runs`: how many runs of each device were judged, against the job_devices counts: a run that arrived out of
  order (or a deleted one) makes them disagree;
- `annotation`: the highest annotation id then: a later annotation at a run judged already changes the past;
- `measured`: the batch sizes and load levels each device measured (which series exist);
- `series`: per series path, its rule (a changed rule judges the series anew) and its detector's state.
Whenever it does not hold, the evaluation rewinds to the newest snapshot before the change (db.alerts.snapshots),
or judges the whole job again, and writes a fresh one.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass

from db.alerts.config import MetricRule
from db.alerts.detect import Detector, Entry, Point, Verdict

VERSION = 1


def _num(x: float | None):
    """A float as JSON takes it: inf, -inf and NaN (a run at 0) as strings."""
    return x if x is None or math.isfinite(x) else str(x)


def _float(v) -> float | None:
    return None if v is None else float(v)


def _point(p: Point) -> list:
    return [p.at.isoformat(), p.candidate, p.baseline, p.candidate_run, p.baseline_run, p.arrived, p.annotation,
            list(p.discordant) if p.discordant is not None else None]


def _point_back(v: list) -> Point:
    at, cand, base, c_run, b_run, arrived, note, disc = v
    return Point(dt.datetime.fromisoformat(at), cand, base, c_run, b_run, arrived, note,
                 tuple(disc) if disc is not None else None)


NUMBERS = ("ratio", "usual_ratio", "change_pct", "limit_pct", "p_value")


def _verdict(v: Verdict) -> dict:
    return {"point": _point(v.point), "state": v.state, "moved": v.moved, "reason": v.reason,
            **{k: _num(getattr(v, k)) for k in NUMBERS}}


def _verdict_back(d: dict) -> Verdict:
    return Verdict(point=_point_back(d["point"]), state=d["state"], moved=d["moved"], reason=d["reason"],
                   **{k: _float(d[k]) for k in NUMBERS})


def detector_state(det: Detector) -> dict:
    """What a later evaluation needs to resume `det` (JSON)."""
    return {"judged": det.judged, "devices": {side: {
        "accepted": list(dev.accepted), "seen": dev.seen,
        "episode": [{"verdict": _verdict(e.verdict), "change": _num(e.change), "log": _num(e.log), "seq": e.seq}
                    for e in dev.episode]} for side, dev in det.devices.items()}}


def resume(state: dict, rule: MetricRule) -> Detector:
    det = Detector(rule)
    det.judged = state["judged"]
    for side, d in state["devices"].items():
        dev = det.devices[side]
        dev.accepted, dev.seen = list(d["accepted"]), d["seen"]
        dev.episode = [Entry(_verdict_back(e["verdict"]), float(e["change"]), float(e["log"]), e["seq"])
                       for e in d["episode"]]
    return det


def rule_state(rule: MetricRule) -> dict:
    return dataclasses.asdict(rule)


@dataclass
class Checkpoint:
    last: tuple[dt.datetime, dt.datetime, str]
    latest: dict[str, str]
    runs: dict[str, int]
    annotation: int
    measured: dict[str, dict[str, list]]
    job_name: str
    series: dict[str, dict]  # series path -> {"rule": rule_state, "detector": detector_state}

    def to_json(self) -> dict:
        return {"version": VERSION, "last": [self.last[0].isoformat(), self.last[1].isoformat(), self.last[2]],
                "latest": self.latest, "runs": self.runs, "annotation": self.annotation, "measured": self.measured,
                "job_name": self.job_name, "series": self.series}

    @classmethod
    def from_json(cls, data: dict | None) -> Checkpoint | None:
        """None when there is none, or it was written by another version of this module."""
        if not data or data.get("version") != VERSION:
            return None
        finished, pushed, run_id = data["last"]
        return cls((dt.datetime.fromisoformat(finished), dt.datetime.fromisoformat(pushed), run_id), data["latest"],
                   data["runs"], data["annotation"], data["measured"], data["job_name"], data["series"])
