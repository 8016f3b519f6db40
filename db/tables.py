"""A comparison (db/compare.py) as text: the two tables, and the energy table where a run has energy records, as
rows of strings (what the CLI and the dashboard show), and rendered as markdown, CSV or JSON for `runner compare`,
with the token agreement and the per-layer precision where the runs have them. A table without rows is left out (a
serving-only job has no eager timing): one line says so instead."""
from __future__ import annotations

import csv
import io
import json

from core.errors import UserError
from core.metrics import ACCURACY_ROWS, ENERGY, SPEED, format_value, titled
from db.compare import Comparison
from db.models import Run, utc


def tables(cmp: Comparison) -> tuple[list[list[str]], list[list[str]]]:
    """The two tables as rows of strings, header first: what markdown, CSV and the dashboard show."""
    acc = [["", cmp.candidate, cmp.baseline, "ratio"]]
    for metric, row in zip(ACCURACY_ROWS, cmp.accuracy):
        acc.append([metric.label, metric.format(row["candidate"]), metric.format(row["baseline"]),
                    format_value(row["ratio"], "ratio")])
    speed = [["device", "batch size"] + [titled(m) for m in SPEED]]
    for row in cmp.speed:
        bs = str(row["batch_size"])
        for side, device in (("candidate", cmp.candidate), ("baseline", cmp.baseline)):
            speed.append([device, bs] + [m.format(row[m.name][side]) for m in SPEED])
        speed.append(["ratio", bs] + [format_value(row[m.name]["ratio"], "ratio") for m in SPEED])
    return acc, speed


NO_SPEED = "No eager timing: neither run has perf records (the job has no [perf] section)."


def energy_table(cmp: Comparison) -> list[list[str]] | None:
    """Per batch size and energy metric: both devices, the ratio and which direction is better; "n/a" and the
    reason where a side has no figure. None when neither run has energy records."""
    if not cmp.energy:
        return None
    rows = [["batch size", "metric", cmp.candidate, cmp.baseline, "ratio", "better"]]
    for row in cmp.energy:
        for m in ENERGY:
            cell = row[m.name]
            values = [m.format(cell[side]) if cell[side] is not None else f"n/a ({cell['why'][side]})"
                      for side in ("candidate", "baseline")]
            rows.append([str(row["batch_size"]), titled(m), *values, format_value(cell["ratio"], "ratio"),
                         "higher" if m.higher_is_better else "lower"])
    return rows


def meters_line(cmp: Comparison) -> str:
    """Which meter each side read, how often, over how many devices ("" when neither had one)."""
    parts = []
    for side, device in (("candidate", cmp.candidate), ("baseline", cmp.baseline)):
        meter = next((r["meters"][side] for r in cmp.energy if side in r["meters"]), None)
        if meter is not None:
            every = f", a reading every {meter['interval_s']:.3g} s" if meter["interval_s"] else ""
            count = f", {meter['devices']} device{'' if meter['devices'] == 1 else 's'}" if meter["devices"] else ""
            parts.append(f"{device}: {meter['source']}{every}{count}")
    return f"Energy during the timed repeats ({'; '.join(parts)})." if parts else ""


def _markdown_table(rows: list[list[str]]) -> str:
    cells = [[c.replace("|", "\\|") for c in r] for r in rows]  # a reason or a name may hold a pipe
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)


def _energy_markdown(cmp: Comparison) -> str:
    rows = energy_table(cmp)
    if rows is None:
        return ""
    return (f"\n**Energy**, ratio = {cmp.candidate} / {cmp.baseline}. {meters_line(cmp)}\n\n"
            f"{_markdown_table(rows)}\n")


def _run_line(label: str, run: Run | None) -> str:
    if run is None:
        return f"{label}: no run"
    src = f", imported from {run.imported_from}" if run.source == "imported" else ""
    return f"{label}: run {run.id} ({run.device_name or run.device_class}, {utc(run.finished_at):%Y-%m-%d %H:%M} UTC{src})"


def _divergence(ta: dict) -> str:
    return ("identical throughout" if ta["first_divergence"] is None else
            f"first divergence at token {ta['first_divergence']['position']} of {ta['first_divergence']['task']}")


def _agreement_line(cmp: Comparison) -> str:
    ta = cmp.token_agreement
    if ta is None:
        return ""
    return f"\nGreedy token agreement ({ta['tokens']} probe tokens): {ta['share']:.2%}, {_divergence(ta)}\n"


def agreement_table(cmp: Comparison) -> list[list[str]] | None:
    ta = cmp.token_agreement
    if ta is None:
        return None
    return [["greedy token agreement", "probe tokens", "first divergence"],
            [f"{ta['share']:.2%}", str(ta["tokens"]), _divergence(ta)]]


def _number(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def precision_rows(p: dict, candidate: str, baseline: str) -> list[list[str]]:
    """Per layer, in depth order: estimated relative error and cosine, and each side's largest |value|."""
    rows = [["layer", "relative error", "cosine", f"max abs {candidate}", f"max abs {baseline}"]]
    for r in p["layers"]:
        mark = " (first over)" if r["layer"] == p["first_over"] else ""
        error = f"non-finite values ({' / '.join(map(str, r['nonfinite']))})" if any(r["nonfinite"]) else \
            _number(r["rel_error"], ".2e")
        rows.append([r["layer"] + mark, error, _number(r["cosine"], ".7f"),
                     *(_number(x, ".4g") for x in r["max_abs"])])
    return rows


def precision_text(p: dict | None, candidate: str, baseline: str) -> str:
    """The precision section in markdown ("" when a run has none)."""
    if p is None:
        return ""
    if "unavailable" in p:
        return f"\nPer-layer precision: not comparable: {p['unavailable']}\n"
    first = (f"first layer at or over {p['threshold']:g}: **{p['first_over']}**" if p["first_over"] else
             f"no layer reaches {p['threshold']:g}")
    lines = [f"\n**Per-layer precision**, {candidate} vs {baseline}: {first}. Relative error = norm({candidate} - "
             f"{baseline}) / norm({baseline}) of each layer's output, estimated from the runs' sketches.\n",
             _markdown_table(precision_rows(p, candidate, baseline))]
    lg = p["logits"]
    if lg and lg["positions"]:
        lines.append(f"\nLogits over {lg['positions']} prompt positions: top-1 agreement {lg['top1_agreement']:.2%} "
                     f"({_logits_where(lg)}); KL({baseline} || {candidate}) mean {_number(lg['kl_mean'], '.2e')}, "
                     f"max {_number(lg['kl_max'], '.2e')}")
    return "\n".join(lines) + "\n"


def _logits_where(lg: dict) -> str:
    return ("identical at every position" if lg["first_disagreement"] is None else
            f"first difference at position {lg['first_disagreement']['position']} of "
            f"{lg['first_disagreement']['task']}")


def precision_tables(p: dict | None, candidate: str, baseline: str) -> list[list[list[str]]]:
    """The precision section as CSV tables: the verdict, the logits where there are any, the layers."""
    if p is None:
        return []
    if "unavailable" in p:
        return [[["per-layer precision", "not comparable"], [f"{candidate} vs {baseline}", p["unavailable"]]]]
    verdict = [["per-layer precision", "threshold", "first layer at or over"],
               [f"{candidate} vs {baseline}", f"{p['threshold']:g}", p["first_over"] or "none"]]
    lg = p["logits"]
    logits = [["logits positions", "top-1 agreement", "first difference", f"KL({baseline} || {candidate}) mean",
               "KL max"],
              [str(lg["positions"]), f"{lg['top1_agreement']:.2%}", _logits_where(lg), _number(lg["kl_mean"], ".2e"),
               _number(lg["kl_max"], ".2e")]] if lg and lg["positions"] else None
    return [t for t in (verdict, logits, precision_rows(p, candidate, baseline)) if t is not None]


def render(cmp: Comparison, fmt_name: str = "markdown") -> str:
    acc, speed = tables(cmp)
    if fmt_name == "markdown":
        head = f"**{cmp.job_name}** (fingerprint `{cmp.fingerprint}`), {cmp.candidate} vs {cmp.baseline}"
        runs = "\n".join(f"- {_run_line(d, r)}" for d, r in ((cmp.candidate, cmp.candidate_run),
                                                             (cmp.baseline, cmp.baseline_run)))
        speed_text = _markdown_table(speed) if cmp.speed else NO_SPEED
        return (f"{head}\n\n{runs}\n\n{_markdown_table(acc)}\n\n{speed_text}\n{_energy_markdown(cmp)}"
                f"{_agreement_line(cmp)}{precision_text(cmp.precision, cmp.candidate, cmp.baseline)}")
    if fmt_name == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerows(acc)
        for rows in (speed if cmp.speed else None, energy_table(cmp), agreement_table(cmp),
                     *precision_tables(cmp.precision, cmp.candidate, cmp.baseline)):
            if rows is not None:
                w.writerow([])
                w.writerows(rows)
        return out.getvalue()
    if fmt_name == "json":
        return json.dumps({
            "fingerprint": cmp.fingerprint, "job": cmp.job_name, "candidate": cmp.candidate, "baseline": cmp.baseline,
            "candidate_run": cmp.candidate_run.id if cmp.candidate_run else None,
            "baseline_run": cmp.baseline_run.id if cmp.baseline_run else None,
            "accuracy": cmp.accuracy, "speed": cmp.speed, "energy": cmp.energy, "token_agreement": cmp.token_agreement,
            "precision": cmp.precision}, indent=2) + "\n"
    raise UserError(f"unknown format {fmt_name!r} (markdown, csv, json)")
