"""Serving runs in the store: the rows a run document's `serving` section becomes (one per load level), the comparison
of two devices per concurrency level or request rate (latest run of each, db/pairing.py), its rendering as markdown,
CSV or JSON after the eager tables, and the latency-throughput points the dashboard draws.

ratio = candidate / baseline of the medians, as in the eager tables; for latencies (and failures) lower is better,
so a ratio above 1 means the candidate is slower there.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.metrics import SERVING, format_value, ratio, titled
from db import compare
from db.models import Run, ServingRecord
from db.pairing import latest_run
from db.tables import _markdown_table

# a level's settings and bookkeeping, stored as they are (the metrics follow core.metrics.SERVING)
PLAIN = ("mode", "level", "requests", "completed", "not_sent", "failures", "duration_s", "input_tokens",
         "output_tokens", "token_source", "exact_output_share", "raw")
MODES = ("concurrency", "rate")  # table order: concurrency levels first, then rates


def rows(run_id: str, section: dict | None) -> list[dict]:
    """A run document's `serving` section as serving_records rows (every row with the same keys)."""
    out = []
    for lv in (section or {}).get("levels", []):
        row = {"run_id": run_id, **{k: lv.get(k) for k in PLAIN}}
        for m in SERVING:
            value = lv.get(m.name)
            row[m.name] = (value or {}).get("median") if m.quantiles else value
            for q in m.quantiles:
                row[f"{m.name}_{q}"] = (value or {}).get(q)
        out.append(row)
    return out


def records(session: Session, run: Run | None) -> list[ServingRecord]:
    if run is None:
        return []
    return list(session.scalars(select(ServingRecord).where(ServingRecord.run_id == run.id)))


def level_label(mode: str, level: float) -> str:
    return f"concurrency {level:g}" if mode == "concurrency" else f"{level:g} req/s"


@dataclass
class ServingComparison:
    candidate: str
    baseline: str
    candidate_run: Run | None
    baseline_run: Run | None
    # {"mode", "level", <metric>: {"candidate", "baseline", "ratio", and per side its quantiles}}
    levels: list[dict] = field(default_factory=list)


def _value(rec: ServingRecord | None, name: str, q: str | None = None):
    if rec is None:
        return None
    return getattr(rec, f"{name}_{q}" if q else name)


def build(session: Session, cmp: compare.Comparison) -> ServingComparison | None:
    """The serving levels of the eager comparison's runs; None when neither run has any."""
    sides = {"candidate": records(session, cmp.candidate_run), "baseline": records(session, cmp.baseline_run)}
    if not any(sides.values()):
        return None
    by_level: dict[tuple, dict] = {}
    for side, recs in sides.items():
        for rec in recs:
            by_level.setdefault((MODES.index(rec.mode), rec.level), {})[side] = rec
    out = ServingComparison(cmp.candidate, cmp.baseline, cmp.candidate_run, cmp.baseline_run)
    for (mode, level), pair in sorted(by_level.items()):
        row = {"mode": MODES[mode], "level": level}
        for m in SERVING:
            c, b = _value(pair.get("candidate"), m.name), _value(pair.get("baseline"), m.name)
            row[m.name] = {"candidate": c, "baseline": b, "ratio": ratio(c, b)}
            for q in m.quantiles:
                row[m.name][q] = {s: _value(pair.get(s), m.name, q) for s in ("candidate", "baseline")}
        out.levels.append(row)
    return out


def table(sc: ServingComparison) -> list[list[str]]:
    """Rows of strings, header first: per level the candidate, the baseline and their ratio; latencies as median
    and p99."""
    header = ["level", "device"]
    for m in SERVING:
        short = m.name.removeprefix("serving_").removesuffix("_ms").upper()  # TTFT, TPOT, ITL, E2E as vLLM prints
        header += [f"{short} {q} ({m.unit})" for q in ("median", "p99")] if m.quantiles else [titled(m)]
    out = [header]
    for row in sc.levels:
        label = level_label(row["mode"], row["level"])
        for side, device in (("candidate", sc.candidate), ("baseline", sc.baseline)):
            cells = [label, device]
            for m in SERVING:
                cells.append(m.format(row[m.name][side]))
                cells += [m.format(row[m.name][q][side]) for q in m.quantiles if q == "p99"]
            out.append(cells)
        cells = [label, "ratio"]
        for m in SERVING:
            cells.append(format_value(row[m.name]["ratio"], "ratio"))
            cells += ["" for q in m.quantiles if q == "p99"]
        out.append(cells)
    return out


def _engine(run: Run | None) -> str:
    if run is None:
        return "no run"
    server = (run.environment or {}).get("server") or {}
    engine = server.get("declared_engine") or "unknown engine"
    version = server.get("version")
    if isinstance(version, dict) and version.get("version"):
        return f"{engine} (version {version['version']})"
    return engine


def render(sc: ServingComparison, fmt: str) -> str:
    rows_ = table(sc)
    if fmt == "markdown":
        engines = f"{sc.candidate}: {_engine(sc.candidate_run)}; {sc.baseline}: {_engine(sc.baseline_run)}"
        return (f"\n**Serving** ({engines}); ratio = {sc.candidate} / {sc.baseline}, lower is better for latencies "
                f"and failures\n\n{_markdown_table(rows_)}\n")
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows([[], *rows_])
        return out.getvalue()
    raise ValueError(f"no text rendering for {fmt!r}")


def with_serving(session: Session, cmp: compare.Comparison, text: str, fmt: str) -> str:
    """The eager tables' text, followed by the serving table when the compared runs have serving levels (in JSON, a
    "serving" key of the same object)."""
    sc = build(session, cmp)
    if sc is None:
        return text
    if fmt == "json":
        doc = json.loads(text)
        doc["serving"] = {"candidate_run": sc.candidate_run.id if sc.candidate_run else None,
                          "baseline_run": sc.baseline_run.id if sc.baseline_run else None, "levels": sc.levels}
        return json.dumps(doc, indent=2) + "\n"
    return text + render(sc, fmt)


def curve(session: Session, fingerprint: str, devices: list[str]) -> list[dict]:
    """Latency-throughput points of each device's latest run: one per level, in level order."""
    points = []
    for device in devices:
        run = latest_run(session, fingerprint, device)
        for rec in sorted(records(session, run), key=lambda r: (MODES.index(r.mode), r.level)):
            points.append({"device": device, "run": run.id, "mode": rec.mode, "level": rec.level,
                           "label": level_label(rec.mode, rec.level),
                           **{m.name: getattr(rec, m.name) for m in SERVING}})
    return points


def jobs(session: Session) -> list[tuple[str, str]]:
    """(fingerprint, job name) of every job with serving runs, most recent first."""
    stmt = (select(Run.fingerprint, Run.job_name, Run.finished_at).join(ServingRecord, ServingRecord.run_id == Run.id)
            .distinct().order_by(Run.finished_at.desc()))
    seen: dict[str, str] = {}
    for fp, name, _ in session.execute(stmt):
        seen.setdefault(fp, name)
    return list(seen.items())


def view(session: Session, fingerprint: str, candidate: str, baseline: str) -> dict | None:
    """What the dashboard's Serving page shows, as plain data: the table's rows, its CSV, the curve's points and
    each side's engine and failures; None when neither device's latest run has serving levels."""
    sc = build(session, compare.build(session, fingerprint, candidate, baseline))
    if sc is None:
        return None
    failures = [{"device": device, "level": level_label(r.mode, r.level), **f}
                for device, run in ((candidate, sc.candidate_run), (baseline, sc.baseline_run))
                for r in records(session, run) for f in r.failures or []]
    return {"rows": table(sc), "csv": render(sc, "csv").lstrip("\n"), "points": curve(session, fingerprint,
                                                                                    [candidate, baseline]),
            "engines": {candidate: _engine(sc.candidate_run), baseline: _engine(sc.baseline_run)},
            "runs": {candidate: sc.candidate_run.id if sc.candidate_run else None,
                     baseline: sc.baseline_run.id if sc.baseline_run else None}, "failures": failures}
