"""The "competitor comparison" section of a ModelZoo README, from the store: the accuracy table and the performance
table with its ratio row, laid out as the Ascend ModelZoo guides lay them out (Chinese: their own wording, 首token推理速度
and 增量推理速度; English: the wording of `runner compare`), and a footnote with the run ids, dates, environment and
the significance of the differences. As markdown to paste into a README, or as one self-contained HTML file with
bar charts (inline SVG: it opens without a network).

The numbers are the comparison's (db/compare.py via db.queries.comparison, formatted by db/tables.py); this module
only words and lays them out.

Example:
    with session_scope(open_store(url)) as s:
        print(render(build(s, "503d79e90157b72b", "910B3", "A100"), lang="zh", fmt="markdown"))
"""
from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.errors import UserError
from core.metrics import ACCURACY_ROWS, METRICS, SPEED, format_value, titled
from core.rules import mcnemar_p
from db import compare, queries
from db.stats import ALPHA
from db.models import utc

LANGS = ("en", "zh")
FORMATS = ("markdown", "html")
# the guide's wording, cell by cell, for the table cells that are words (devices and numbers stay as they are)
ZH_CELLS = {"HumanEval problems": "问题总数", "passed": "通过总数", "ratio": "对比", "device": "设备",
            "batch size": "batch_size", titled(METRICS["first_token_tokens_per_s"]): "首token推理速度(token/s)",
            titled(METRICS["decode_tokens_per_s"]): "增量推理速度(token/s)"}
ZH_LABELS = {"pass_at_1": "pass@1", "first_token_tokens_per_s": "首token推理速度",
             "decode_tokens_per_s": "增量推理速度"}
TEXT = {
    "en": {"title": "Competitor comparison", "accuracy": "Accuracy (HumanEval)", "speed": "Performance",
           "notes": "Notes:", "about": "Job {job} (model {model}, {dtype}, tensor parallel {tp}, fingerprint {fp}); "
                                      "ratio = {cand} / {base}; from the devcompare store.",
           "run": "{device}: run {id}, {origin}, {when}.", "no_run": "{device}: no run of this job.",
           "imported": 'imported from "{source}"', "measured": "measured on {name}",
           "finished": "finished {at}", "undated": "the source gives no date",
           "env": "Environment: {items}.", "env_none": "Environment: not recorded (imported runs carry none).",
           "env_item": "{key} {values}", "env_sep": "; ", "env_side": "{value} ({device})", "same": "{value} on both",
           "unrecorded": "not recorded",
           "acc": "Accuracy: {cand} vs {base} problems passed ({diff:+d}); ",
           "acc_test": "pass@1 difference {d:+.4f} over {n} paired problems (95% paired-bootstrap interval "
                       "{lo:+.4f} to {hi:+.4f}), {verdict} (exact McNemar p = {p:.3g} on {c} vs {b} problems passed "
                       "on one device only, alpha = {alpha}).",
           "significant": "significant", "not_significant": "not significant",
           "acc_none": "significance not available: {why}.", "no_side": "there is no {device} run",
           "acc_bound": "significance not available: {why}; but a difference of {d} problem(s) is not significant "
                        "whatever they are (the smallest exact McNemar p it can have is {p:.3g}).",
           "no_results": "imported aggregates have no per-problem results",
           "no_pairs": "the runs have no per-problem results in common",
           "speed_row": "{metric} at batch size {bs}: ratio {ratio}, 95% interval {interval} ({c} / {b} repeats).",
           "speed_none": "{metric} at batch size {bs}: interval not available ({why}).",
           "no_repeats": "imported aggregates keep no raw repeats", "few_repeats": "too few repeats or no record",
           "to": "{lo} to {hi}", "chart_speed": "{metric}, batch size {bs}", "chart_acc": "pass@1",
           "chart_ratio": "{title}: ratio {ratio}"},
    "zh": {"title": "竞品对比", "accuracy": "精度(HumanEval)", "speed": "性能", "notes": "注：",
           "about": "作业 {job}（模型 {model}，{dtype}，张量并行 {tp}，指纹 {fp}）；对比 = {cand} / {base}；"
                    "数据来自 devcompare 数据库。",
           "run": "{device}：运行 {id}，{origin}，{when}。", "no_run": "{device}：此作业没有运行。",
           "imported": "导入自「{source}」", "measured": "实测于 {name}", "finished": "完成于 {at}",
           "undated": "来源未给出日期", "env": "环境：{items}。", "env_none": "环境：未记录（导入的数据不含环境信息）。",
           "env_item": "{key} {values}", "env_sep": "；", "env_side": "{value}（{device}）", "same": "{value}（两者相同）",
           "unrecorded": "未记录",
           "acc": "精度：通过总数 {cand} 对 {base}（{diff:+d}）；",
           "acc_test": "pass@1 差 {d:+.4f}，配对题目 {n} 道（95% 配对 bootstrap 区间 {lo:+.4f} 至 {hi:+.4f}），"
                       "{verdict}（精确 McNemar 检验 p = {p:.3g}，仅一方通过的题目 {c} 对 {b}，α = {alpha}）。",
           "significant": "差异显著", "not_significant": "差异不显著",
           "acc_none": "显著性不可用：{why}。", "no_side": "缺少 {device} 的运行",
           "acc_bound": "显著性不可用：{why}；但无论逐题结果如何，{d} 道题的差异都不显著（精确 McNemar 检验的 p 至少为 "
                        "{p:.3g}）。",
           "no_results": "导入的汇总数据没有逐题结果", "no_pairs": "两次运行没有共同的逐题结果",
           "speed_row": "{metric}（batch_size {bs}）：对比 {ratio}，95% 区间 {interval}（重复 {c} / {b} 次）。",
           "speed_none": "{metric}（batch_size {bs}）：区间不可用（{why}）。",
           "no_repeats": "导入的汇总数据没有原始重复测量", "few_repeats": "重复次数不足或缺少记录",
           "to": "{lo} 至 {hi}", "chart_speed": "{metric}，batch_size {bs}", "chart_acc": "pass@1",
           "chart_ratio": "{title}：对比 {ratio}"},
}
COLORS = ("#4c78a8", "#f58518")  # candidate, baseline: the dashboard's (Vega's) first two category colours


@dataclass(frozen=True)
class Report:
    view: dict  # db.queries.comparison: the tables, the runs, the statistics
    speed: list[dict]  # db.compare.Comparison.speed: {batch_size, <metric>: {candidate, baseline, ratio}}
    runs: dict  # "candidate"/"baseline" -> what the footnote says of the run (or None)


def build(session: Session, fingerprint: str, candidate: str, baseline: str) -> Report:
    """The comparison of one job on a device pair, with what the footnote says about its two runs."""
    cmp = compare.build(session, fingerprint, candidate, baseline)
    runs = {}
    for side, run in (("candidate", cmp.candidate_run), ("baseline", cmp.baseline_run)):
        runs[side] = None if run is None else {
            "id": run.id, "device": run.device_class, "name": run.device_name, "count": run.device_count,
            "source": run.source, "imported_from": run.imported_from, "missing": set(run.missing or []),
            "finished_at": utc(run.finished_at), "model": run.model_name, "dtype": run.dtype,
            "tp": run.tensor_parallel}
    return Report(queries.comparison(session, cmp.fingerprint, candidate, baseline), cmp.speed, runs)


def md_escape(text) -> str:
    """Stored text made literal inside a line of markdown: the marks that would start emphasis, code, a link, an
    HTML tag, a table cell or (in Streamlit) a formula are escaped."""
    return re.sub(r"([\\`*_{}\[\]<>#|~$])", r"\\\1", str(text))


def _tables(report: Report, lang: str) -> tuple[list[list[str]], list[list[str]]]:
    """The two tables as rows of strings, header first, in the language's wording."""
    words = ZH_CELLS if lang == "zh" else {}
    out = []
    for rows in (report.view["accuracy_table"], report.view["speed_table"]):
        out.append([[words.get(c, c) if i == 0 or j == 0 else c for j, c in enumerate(row)]
                    for i, row in enumerate(rows)])
    return out[0], out[1]


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _markdown_table(rows: list[list[str]]) -> str:
    """Columns padded to line up in the README's source, as the guides keep them (CJK characters count twice)."""
    rows = [[c.replace("|", "\\|") for c in row] for row in rows]
    widths = [max(3, *(_width(r[i]) for r in rows)) for i in range(len(rows[0]))]
    line = lambda row: "| " + " | ".join(c + " " * (w - _width(c)) for c, w in zip(row, widths)) + " |"
    return "\n".join([line(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows[1:]])


def _label(metric_name: str, lang: str) -> str:
    return ZH_LABELS.get(metric_name, METRICS[metric_name].label) if lang == "zh" else METRICS[metric_name].label


def _notes(report: Report, lang: str, code, text) -> list[str]:
    """The footnote's lines. Stored values go through `code` (an identifier) or `text` (free text), which make them
    literal in the output format; the sentences around them are this module's own."""
    t, view, runs = TEXT[lang], report.view, report.runs
    cand, base = text(view["candidate"]), text(view["baseline"])
    first = runs["candidate"] or runs["baseline"]
    lines = [t["about"].format(job=code(view["job_name"]), model=code(first["model"]), dtype=text(first["dtype"]),
                               tp=first["tp"], fp=code(view["fingerprint"]), cand=cand, base=base)]
    for side, device in (("candidate", cand), ("baseline", base)):
        run = runs[side]
        if run is None:
            lines.append(t["no_run"].format(device=text(device)))
            continue
        name = text(run["name"] or device)
        origin = (t["imported"].format(source=text(run["imported_from"])) if run["source"] == "imported" else
                  t["measured"].format(name=f"{name} x{run['count']}" if run["count"] else name))
        when = (t["undated"] if "finished_at" in run["missing"] else
                t["finished"].format(at=f"{run['finished_at']:%Y-%m-%d %H:%M} UTC"))
        lines.append(t["run"].format(device=text(device), id=code(run["id"]), origin=origin, when=when))
    lines.append(_environment(view, t, text))
    lines.append(_accuracy(view, runs, t))
    lines += _speed(view, runs, t, lang)
    return lines


def _environment(view: dict, t: dict, text) -> str:
    items = []
    for r in view["environment"]:
        if r["key"] not in dict(queries.VERSION_KEYS) or (r["candidate"] is None and r["baseline"] is None):
            continue
        if r["same"]:
            values = t["same"].format(value=text(r["candidate"]))
        else:
            values = " / ".join(t["env_side"].format(value=t["unrecorded"] if v is None else text(v), device=text(d))
                                for v, d in ((r["candidate"], view["candidate"]), (r["baseline"], view["baseline"])))
        items.append(t["env_item"].format(key=r["label"], values=values))
    return t["env"].format(items=t["env_sep"].join(items)) if items else t["env_none"]


def _accuracy(view: dict, runs: dict, t: dict) -> str:
    passed = next(r for r in view["accuracy"] if r["metric"] == ACCURACY_ROWS[1].label)
    head = (t["acc"].format(cand=passed["candidate"], base=passed["baseline"],
                            diff=passed["candidate"] - passed["baseline"])
            if passed["candidate"] is not None and passed["baseline"] is not None else "")
    test = view["accuracy_test"]
    if test is None:
        lacking = [d for s, d in (("candidate", view["candidate"]), ("baseline", view["baseline"])) if runs[s] is None]
        imported = any(r is not None and r["source"] == "imported" for r in runs.values())
        why = (t["no_side"].format(device=lacking[0]) if lacking else t["no_results"] if imported else t["no_pairs"])
        bound = never_significant(view)
        if bound is not None:
            return head + t["acc_bound"].format(why=why, d=bound[0], p=bound[1])
        return head + t["acc_none"].format(why=why)

    lo, hi = test.interval
    return head + t["acc_test"].format(
        d=test.difference, n=test.problems, lo=lo, hi=hi, p=test.p_value, c=test.candidate_only,
        b=test.baseline_only, alpha=ALPHA, verdict=t["significant" if test.significant else "not_significant"])


def never_significant(view: dict) -> tuple[int, float] | None:
    """Without per-problem outcomes (imported aggregates): (d, p) when the passed counts, d problems apart on the same
    problems, could not be a significant difference whatever those outcomes are; else None.

    With b - c = d fixed, the exact McNemar p is smallest at c = 0: if even that p is not below alpha, no split of
    the discordant problems makes the difference significant (54 vs 53 of 164: d = 1, p >= 1)."""
    rows = {r["metric"]: r for r in view["accuracy"]}
    problems, passed = rows[ACCURACY_ROWS[0].label], rows[ACCURACY_ROWS[1].label]
    if None in (passed["candidate"], passed["baseline"]) or problems["candidate"] != problems["baseline"]:
        return None
    d = abs(passed["candidate"] - passed["baseline"])
    p = mcnemar_p(d, 0)
    return (d, p) if p >= ALPHA else None


def _speed(view: dict, runs: dict, t: dict, lang: str) -> list[str]:
    labels = {titled(m): _label(m.name, lang) for m in SPEED}
    imported = any(r is not None and r["source"] == "imported" for r in runs.values())
    lines = []
    for r in view["speed_intervals"]:
        metric = labels.get(r["metric"], r["metric"])
        if r["interval"] is None:
            why = t["no_repeats"] if imported else t["few_repeats"]
            lines.append(t["speed_none"].format(metric=metric, bs=r["batch_size"], why=why))
            continue
        interval = t["to"].format(lo=format_value(r["interval"][0], "ratio"), hi=format_value(r["interval"][1], "ratio"))
        lines.append(t["speed_row"].format(metric=metric, bs=r["batch_size"], ratio=format_value(r["ratio"], "ratio"),
                                           interval=interval, c=r["repeats"][0], b=r["repeats"][1]))
    return lines


def _markdown(report: Report, lang: str) -> str:
    t = TEXT[lang]
    acc, speed = _tables(report, lang)
    notes = _notes(report, lang, code=lambda s: md_escape(s) if "`" in str(s) else f"`{s}`", text=md_escape)
    speed_text = f"### {t['speed']}\n\n{_markdown_table(speed)}\n\n" if len(speed) > 1 else ""  # no eager timing
    return (f"## {t['title']}\n\n### {t['accuracy']}\n\n{_markdown_table(acc)}\n\n{speed_text}"
            f"{t['notes']}\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")


def _svg_bars(title: str, bars: list[tuple[str, float | None, str]], kind: str) -> str:
    """One horizontal bar chart: a bar per device, its value at the bar's end; a missing value is written, not drawn."""
    width, left, bar_h, gap, top = 560, 90, 26, 10, 34
    values = [v for _, v, _ in bars if v is not None]
    scale = (width - left - 80) / max(values) if values and max(values) > 0 else 0
    height = top + len(bars) * (bar_h + gap) + 6
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="{html.escape(title)}" font-family="sans-serif" font-size="13">',
             f'<text x="0" y="18" font-weight="bold">{html.escape(title)}</text>']
    for i, (label, value, color) in enumerate(bars):
        y = top + i * (bar_h + gap)
        parts.append(f'<text x="{left - 8}" y="{y + bar_h * 0.68:.0f}" text-anchor="end">{html.escape(label)}</text>')
        if value is None:
            parts.append(f'<text x="{left}" y="{y + bar_h * 0.68:.0f}" fill="#666">{format_value(None)}</text>')
            continue
        w = max(value * scale, 1)
        parts.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + bar_h * 0.68:.0f}">{format_value(value, kind)}</text>')
    return "".join(parts) + "</svg>"


def _charts(report: Report, lang: str) -> list[str]:
    """A chart per speed metric and batch size, and one for pass@1: the two devices' bars, the ratio in the title."""
    t, view = TEXT[lang], report.view
    sides = (view["candidate"], view["baseline"])
    charts = []
    pass1 = next(r for r in view["accuracy"] if r["metric"] == METRICS["pass_at_1"].label)
    rows = [(t["chart_acc"], pass1, "fraction")]
    words = ZH_CELLS if lang == "zh" else {}
    speed_rows = [(t["chart_speed"].format(metric=words.get(titled(m), titled(m)), bs=row["batch_size"]),
                   row[m.name], m.kind) for row in report.speed for m in SPEED]
    for title, values, kind in rows + speed_rows:
        title = t["chart_ratio"].format(title=title, ratio=format_value(values["ratio"], "ratio"))
        charts.append(_svg_bars(title, [(d, values[s], c) for d, s, c in zip(sides, ("candidate", "baseline"), COLORS)],
                                kind))
    return charts


def _html(report: Report, lang: str) -> str:
    t = TEXT[lang]
    acc, speed = _tables(report, lang)

    def table(rows):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    notes = _notes(report, lang, code=lambda s: f"<code>{html.escape(str(s))}</code>",
                   text=lambda s: html.escape(str(s)))
    title = f"{t['title']}: {report.view['job_name']}, {report.view['candidate']} / {report.view['baseline']}"
    return (f'<!doctype html>\n<html lang="{"zh-CN" if lang == "zh" else "en"}"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:0.5em 0 1em}th,td{border:1px solid #bbb;padding:4px 10px}"
            "td:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3}"
            ".charts{display:flex;flex-wrap:wrap;gap:12px 32px}li{margin:0.3em 0}code{font-size:90%}"
            f"</style></head><body>\n<h2>{html.escape(t['title'])}</h2>\n<h3>{html.escape(t['accuracy'])}</h3>\n"
            f"{table(acc)}\n" + (f"<h3>{html.escape(t['speed'])}</h3>\n{table(speed)}\n" if len(speed) > 1 else "")
            + '<div class="charts">'
            + "".join(_charts(report, lang)) + f"</div>\n<p>{html.escape(t['notes'])}</p>\n<ul>"
            + "".join(f"<li>{n}</li>" for n in notes) + "</ul>\n</body></html>\n")


def check(lang: str, fmt: str) -> None:
    if lang not in LANGS:
        raise UserError(f"--lang must be {' or '.join(LANGS)}, not {lang!r}")
    if fmt not in FORMATS:
        raise UserError(f"--format must be {' or '.join(FORMATS)}, not {fmt!r}")


def render(report: Report, lang: str = "en", fmt: str = "markdown") -> str:
    check(lang, fmt)
    return _markdown(report, lang) if fmt == "markdown" else _html(report, lang)
