"""`runner doctor`: the preflight report for one host and, optionally, one job. Loads no weights.

Order: the device (detected in a subprocess, with its count and free memory), the installed stack against the
supported table, the job's memory fit at every tensor-parallel size its heads allow (the smallest that fits is
suggested), an all-reduce over the job's ranks on this host with the job's process group, the disk for the outbox
and the model cache. A failed check does not stop the others.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserError
from runner.preflight import Check, fit, host, stacks

GB = fit.GB


@dataclass
class Report:
    device_class: str
    job: str | None
    checks: list[Check] = field(default_factory=list)
    fits: list[fit.Fit] = field(default_factory=list)
    device_type: str = "cpu"

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def as_dict(self) -> dict:
        return {"device": self.device_class, "job": self.job, "ok": self.ok,
                "checks": [c.as_dict() for c in self.checks], "memory_fit": [f.as_dict() for f in self.fits],
                "supported_stacks": {"rows": stacks.rows(self.device_type), "verified": list(stacks.VERIFIED)}}


def _device_check(device) -> Check:
    if device.type == "cpu":
        return Check("device", "ok", f"cpu: {device.count} cores ({device.name}); host memory "
                     f"{device.free_bytes[0] / GB:.1f} GB available of {device.total_bytes[0] / GB:.1f} GB; "
                     f"backend {device.backend}", data={"count": device.count, "name": device.name})
    memory = ", ".join(f"{i}: {f / GB:.1f} of {t / GB:.1f} GB free"
                       for i, (f, t) in enumerate(zip(device.free_bytes, device.total_bytes)))
    return Check("device", "ok", f"{device.count} x {device.name} ({device.device_class}); backend {device.backend}; "
                 f"memory {memory}", data={"count": device.count, "name": device.name,
                                           "free_bytes": list(device.free_bytes),
                                           "total_bytes": list(device.total_bytes)})


def _fit_check(spec, device, config, nnodes: int, tokenizer, report: Report) -> None:
    report.fits = fit.fits(config, spec, device, device.free_bytes, nnodes=nnodes, tokenizer=tokenizer)
    mine = next((f for f in report.fits if f.tensor_parallel == spec.model.tensor_parallel), None)
    if mine is None:
        from runner.tp.launch import valid_sizes

        report.checks.append(Check("memory fit", "fail", f"model.tensor_parallel = {spec.model.tensor_parallel} "
                                   "does not divide the model's attention and KV heads",
                                   f"sizes that work: {', '.join(map(str, valid_sizes(config)))}"))
        return
    line = fit.describe(mine, spec.model.name, spec.model.dtype)
    working = [f.tensor_parallel for f in report.fits if f.fits]
    smallest = f"; smallest size that fits: TP {working[0]}" if working else ""
    report.checks.append(Check("memory fit", "ok" if mine.fits else "fail", line + ("" if mine.fits else smallest),
                               None if mine.fits else fit.alternatives(report.fits), data=mine.as_dict()))


def run(device_class: str, job: Path | None = None, *, model_path: str | None = None, nnodes: int = 1,
        collective: bool = True) -> Report:
    from runner import devices, models
    from runner.preflight import collective as coll
    from runner.spec import load_spec

    devices.known(device_class)
    spec = load_spec(job) if job is not None else None
    report = Report(device_class, str(job) if job else None, device_type=devices.DEVICE_CLASSES[device_class][0])
    try:
        device = devices.detect(device_class)
        report.checks.append(_device_check(device))
    except UserError as e:
        device = None
        report.checks.append(Check("device", "fail", str(e)))
    report.checks.extend(host.check_stack(report.device_type))
    model_bytes, in_cache = None, False
    if spec is not None:
        config = models.config_for(spec.model, model_path)
        directory = models.local_dir(spec.model, model_path)
        path = model_path or spec.model.path
        # the demo alias and .gguf files are converted into the model cache on first use
        in_cache = directory is None and ((path is None and spec.model.name in models.ALIASES)
                                          or str(path).endswith(".gguf"))
        tokenizer = None
        if directory is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(directory)
        if device is None:
            report.checks.append(Check("memory fit", "skip", "no device to size the job against"))
        else:
            _fit_check(spec, device, config, nnodes, tokenizer, report)
            model_bytes = report.fits[0].weights_bytes if report.fits else None  # TP 1 holds every weight
            here = -(-spec.model.tensor_parallel // nnodes)
            if not collective:
                pass
            elif device.type != "cpu" and here > device.count:
                report.checks.append(Check("collective", "skip", f"{here} ranks per host, {device.count} devices here"))
            else:
                report.checks.append(coll.measure(device, here))
    report.checks.append(host.check_disk(model_bytes, in_cache))
    return report


def render(report: Report) -> str:
    """The report as text: one line per check (a fix under it), the fit table, the supported stacks."""
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
    lines = [f"runner doctor --device {report.device_class}" + (f" --job {report.job}" if report.job else "")]
    for c in report.checks:
        lines.append(f"  {marks[c.status]}  {c.name:<13} {c.summary}")
        if c.fix:
            lines.append(f"        {'':<13} fix: {c.fix}")
    if report.fits:
        lines += ["", "memory fit per tensor-parallel size (per rank: weights + KV cache + headroom; GB)"]
        table = [["TP", "weights", "KV cache", "headroom", "per rank", "ranks here", "needed", "available", "fits"]]
        for f in report.fits:
            table.append([str(f.tensor_parallel), f"{f.weights_bytes / GB:.1f}", f"{f.kv_bytes / GB:.2f}",
                          f"{f.headroom_bytes / GB:.1f}", f"{f.per_rank_bytes / GB:.1f}", str(f.ranks_on_host),
                          f"{f.need_bytes / GB:.1f}",
                          "n/a" if f.available_bytes is None else f"{f.available_bytes / GB:.1f}",
                          "yes" if f.fits else "no"])
        lines += _columns(table)
    lines += ["", f"supported stacks ({report.device_type})"] + _columns(stacks.rows(report.device_type))
    lines += [f"  verified here: {v}" for v in stacks.VERIFIED]
    lines.append(f"\n{'all checks passed' if report.ok else 'some checks failed'}")
    return "\n".join(lines) + "\n"


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
