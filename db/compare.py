"""Comparison tables: the reference report's two tables (accuracy; speed per batch size) for one job fingerprint
and a device pair, built from the latest run of each device, and rendered as markdown, CSV or JSON.

ratio = candidate / baseline (all metrics here are higher-is-better). A missing side is None ("missing" in text),
never zero; a ratio over a zero or missing baseline is None ("n/a").
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from db.models import Run, utc
from runner.errors import UserError

ACCURACY_ROWS = (("HumanEval problems", "problems"), ("passed", "passed"), ("pass@1", "pass_at_1"))
SPEED_COLUMNS = (("first-token speed (tokens/s)", "first_token_tokens_per_s"),
                 ("incremental speed (tokens/s)", "decode_tokens_per_s"))


def ratio(candidate, baseline):
    if candidate is None or baseline is None or baseline == 0:
        return None
    r = candidate / baseline
    return r if math.isfinite(r) else None  # a denormal baseline overflows: as undefined as a zero one


@dataclass
class Comparison:
    fingerprint: str
    job_name: str | None
    candidate: str
    baseline: str
    candidate_run: Run | None
    baseline_run: Run | None
    accuracy: list[dict] = field(default_factory=list)  # {metric, candidate, baseline, ratio}
    speed: list[dict] = field(default_factory=list)  # {batch_size, <metric>: {candidate, baseline, ratio}}
    token_agreement: dict | None = None  # greedy ids of the fixed probe prompts, candidate vs baseline


def token_agreement(a: dict | None, b: dict | None) -> dict | None:
    """Share of identical greedy token ids over the probe prompts, and the first position where they diverge.

    Positions after a divergence still count in the share (a different prefix usually makes them differ, which is
    the point: the share says how much of the output two devices have in common).
    """
    if not a or not b or a["tasks"] != b["tasks"]:
        return None
    same = total = 0
    first = None  # (task, position)
    for task, x, y in zip(a["tasks"], a["tokens"], b["tokens"]):
        n = min(len(x), len(y))
        same += sum(1 for i in range(n) if x[i] == y[i])
        total += max(len(x), len(y))
        diverge = next((i for i in range(n) if x[i] != y[i]), None if len(x) == len(y) else n)
        if diverge is not None and first is None:
            first = {"task": task, "position": diverge}
    if total == 0:  # probes without tokens: nothing to compare
        return None
    return {"share": same / total, "tokens": total, "first_divergence": first}


def latest_run(session: Session, fingerprint: str, device: str) -> Run | None:
    stmt = (select(Run).where(Run.fingerprint == fingerprint, Run.device_class == device)
            .order_by(Run.finished_at.desc(), Run.pushed_at.desc()).limit(1)
            .options(selectinload(Run.perf), selectinload(Run.accuracy)))
    return session.scalars(stmt).first()


def latest_shared_fingerprint(session: Session, candidate: str, baseline: str) -> str | None:
    """The fingerprint with runs on both devices whose newest run is the most recent."""
    stmt = (select(Run.fingerprint).where(Run.device_class.in_([candidate, baseline]))
            .group_by(Run.fingerprint).having(func.count(func.distinct(Run.device_class)) == 2)
            .order_by(func.max(Run.finished_at).desc()).limit(1))
    return session.scalars(stmt).first()


def build(session: Session, fingerprint: str | None, candidate: str, baseline: str) -> Comparison:
    if candidate == baseline:
        raise UserError(f"--candidate and --baseline are both {candidate}: pick two different device classes")
    if fingerprint is None:
        fingerprint = latest_shared_fingerprint(session, candidate, baseline)
        if fingerprint is None:
            raise UserError(f"no job has runs on both {candidate} and {baseline}: pass --job FILE or --fingerprint F "
                            "(see `runner runs`), or submit a run on the missing device")
    cand, base = latest_run(session, fingerprint, candidate), latest_run(session, fingerprint, baseline)
    if cand is None and base is None:
        raise UserError(f"no runs for fingerprint {fingerprint} on {candidate} or {baseline}")
    cmp = Comparison(fingerprint, (cand or base).job_name, candidate, baseline, cand, base)

    def acc(run: Run | None, attr: str):
        return getattr(run.accuracy, attr) if run is not None and run.accuracy is not None else None

    for label, attr in ACCURACY_ROWS:
        c, b = acc(cand, attr), acc(base, attr)
        cmp.accuracy.append({"metric": label, "candidate": c, "baseline": b, "ratio": ratio(c, b)})
    cmp.token_agreement = token_agreement(cand.token_probe if cand else None, base.token_probe if base else None)
    by_batch = {}
    for side, run in (("candidate", cand), ("baseline", base)):
        for rec in run.perf if run is not None else []:
            by_batch.setdefault(rec.batch_size, {})[side] = rec
    for bs in sorted(by_batch):
        row = {"batch_size": bs}
        for _label, attr in SPEED_COLUMNS:
            c, b = (getattr(by_batch[bs].get(s), attr, None) for s in ("candidate", "baseline"))
            row[attr] = {"candidate": c, "baseline": b, "ratio": ratio(c, b)}
        cmp.speed.append(row)
    return cmp


def fmt(value, kind: str = "value") -> str:
    if value is None:
        return "n/a" if kind == "ratio" else "missing"
    if isinstance(value, int):
        return str(value)
    if kind in ("ratio", "fraction"):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == round(value) else f"{value:.4f}"
    return f"{value:.5g}"


def tables(cmp: Comparison) -> tuple[list[list[str]], list[list[str]]]:
    """The two tables as rows of strings, header first: what markdown, CSV and the dashboard show."""
    acc = [["", cmp.candidate, cmp.baseline, "ratio"]]
    for row in cmp.accuracy:
        kind = "fraction" if row["metric"] == "pass@1" else "value"
        acc.append([row["metric"], fmt(row["candidate"], kind), fmt(row["baseline"], kind), fmt(row["ratio"], "ratio")])
    speed = [["device", "batch size"] + [label for label, _ in SPEED_COLUMNS]]
    for row in cmp.speed:
        bs = str(row["batch_size"])
        for side, device in (("candidate", cmp.candidate), ("baseline", cmp.baseline)):
            speed.append([device, bs] + [fmt(row[attr][side]) for _, attr in SPEED_COLUMNS])
        speed.append(["ratio", bs] + [fmt(row[attr]["ratio"], "ratio") for _, attr in SPEED_COLUMNS])
    return acc, speed


def _markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def _run_line(label: str, run: Run | None) -> str:
    if run is None:
        return f"{label}: no run"
    src = f", imported from {run.imported_from}" if run.source == "imported" else ""
    return f"{label}: run {run.id} ({run.device_name or run.device_class}, {utc(run.finished_at):%Y-%m-%d %H:%M} UTC{src})"


def _agreement_line(cmp: Comparison) -> str:
    ta = cmp.token_agreement
    if ta is None:
        return ""
    where = ("identical throughout" if ta["first_divergence"] is None else
             f"first divergence at token {ta['first_divergence']['position']} of {ta['first_divergence']['task']}")
    return f"\nGreedy token agreement ({ta['tokens']} probe tokens): {ta['share']:.2%}, {where}\n"


def render(cmp: Comparison, fmt_name: str = "markdown") -> str:
    acc, speed = tables(cmp)
    if fmt_name == "markdown":
        head = f"**{cmp.job_name}** (fingerprint `{cmp.fingerprint}`), {cmp.candidate} vs {cmp.baseline}"
        runs = "\n".join(f"- {_run_line(d, r)}" for d, r in ((cmp.candidate, cmp.candidate_run),
                                                             (cmp.baseline, cmp.baseline_run)))
        return f"{head}\n\n{runs}\n\n{_markdown_table(acc)}\n\n{_markdown_table(speed)}\n{_agreement_line(cmp)}"
    if fmt_name == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerows(acc)
        w.writerow([])
        w.writerows(speed)
        return out.getvalue()
    if fmt_name == "json":
        return json.dumps({
            "fingerprint": cmp.fingerprint, "job": cmp.job_name, "candidate": cmp.candidate, "baseline": cmp.baseline,
            "candidate_run": cmp.candidate_run.id if cmp.candidate_run else None,
            "baseline_run": cmp.baseline_run.id if cmp.baseline_run else None,
            "accuracy": cmp.accuracy, "speed": cmp.speed, "token_agreement": cmp.token_agreement}, indent=2) + "\n"
    raise UserError(f"unknown format {fmt_name!r} (markdown, csv, json)")
