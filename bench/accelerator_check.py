"""Accelerator check: everything this project must do on a GPU or NPU host, in one go, with its figures.

1. detection: the device class, count and free memory (the subprocess probe `runner submit` uses);
2. doctor: the preflight for the smoke job (stack against the table, memory fit, all-reduce, disk);
3. the CUDA / NPU tests (`pytest -m "cuda or npu"`): they skip without hardware, so here they must pass;
4. the smoke and demo jobs at TP 1 (`runner submit --out`): TTFT, decode speed, bandwidth utilisation against the
   device's peak, energy per token (or why there is none).

Writes its section of BENCHMARKS.md. On a host without a GPU or NPU it says so, records the attempt (when, where,
why no device) and exits 2: it never reports a CPU's figures as an accelerator's.

Run: .venv/bin/python -m bench.accelerator_check [--job jobs/smoke.toml --job jobs/demo-cpu.toml]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._report import write_section

REPO = Path(__file__).resolve().parent.parent
SECTION, TITLE = "accelerator_check", "Accelerator check: detection, doctor, device tests, smoke and demo jobs"
MEASURES = ["runner", "core", "jobs"]


def find_accelerator() -> tuple[str | None, str | None, list[str]]:
    """(device class, device type, why not per type) from the same subprocess probe `runner submit` uses."""
    from runner import devices

    reasons = []
    for device_type in ("cuda", "npu"):
        seen = devices.probe_in_subprocess(device_type)
        if not seen["ok"]:
            reasons.append(f"{device_type}: {seen['why']}")
            continue
        device_class = devices.classify(seen["names"][0])
        if device_class is None:
            reasons.append(f"{device_type}: '{seen['names'][0]}' is not a known device class")
            continue
        return device_class, device_type, reasons
    return None, None, reasons


def run_tests(device_type: str) -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", device_type, "-p", "no:cacheprovider",
                           "tests/test_devices.py", "tests/test_power.py"], cwd=REPO, capture_output=True, text=True)
    last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
    return proc.returncode == 0 and "skipped" not in last, last


def run_job(device_class: str, job: Path) -> tuple[dict | None, str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        proc = subprocess.run([sys.executable, "-m", "runner.cli", "submit", "--device", device_class, "--job",
                               str(job), "--out", str(out)], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            return None, (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return json.loads(out.read_text()), ""


def job_rows(job: Path, doc: dict) -> list[str]:
    energy = {e["batch_size"]: e for e in (doc.get("extra") or {}).get("energy", [])}
    rows = []
    for rec in doc["perf"]:
        e = energy.get(rec["batch_size"], {})
        joules = (f"{e['tokens_per_joule']:.2f} tokens/J ({e['source']}, every {e['interval_s']:.2f} s)"
                  if e.get("tokens_per_joule") else f"not available: {e.get('reason') or (e.get('why') or {})}")
        util = rec.get("bandwidth_util")
        rows.append(f"| {job.stem} | {rec['batch_size']} | {rec['ttft_ms']['median']:.1f} | "
                    f"{rec['decode_tokens_per_s']['median']:.1f} | {rec['bandwidth_gbps']:.0f} | "
                    f"{'n/a' if util is None else f'{util:.1%}'} | {joules} |")
    he = doc.get("humaneval")
    if he:
        rows.append(f"| {job.stem} | HumanEval | {he['passed']}/{he['problems']} passed | | | | |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", action="append", type=Path, help="job files to run at TP 1 (default: smoke, demo)")
    args = ap.parse_args()
    jobs = args.job or [REPO / "jobs" / "smoke.toml", REPO / "jobs" / "demo-cpu.toml"]

    device_class, device_type, reasons = find_accelerator()
    if device_class is None:
        why = "; ".join(reasons)
        print(f"no accelerator on this host ({why}): nothing measured", file=sys.stderr)
        write_section(SECTION, TITLE, f"Not run on an accelerator yet: the last attempt found none ({why}). The "
                      "figures appear here once the script runs on a GPU or NPU host.")
        return 2

    from runner import devices
    from runner.preflight import doctor

    device = devices.detect(device_class)
    failures = []
    lines = [f"Device: {device.count} x {device.name} (class {device_class}, {device_type}); free memory "
             + ", ".join(f"{f / 1e9:.1f} GB" for f in device.free_bytes) + "."]
    report = doctor.run(device_class, REPO / "jobs" / "smoke.toml")
    lines += ["", "Doctor (smoke job):", ""] + [f"- {c.status}: {c.name}: {c.summary}" for c in report.checks]
    failures += [f"doctor {c.name}" for c in report.checks if c.status == "fail"]
    ok, summary = run_tests(device_type)
    lines += ["", f"Device tests (`pytest -m {device_type}`): {summary}"]
    if not ok:
        failures.append("device tests")
    lines += ["", "| job | batch | TTFT (ms) | decode tokens/s | bandwidth (GB/s) | bandwidth util | energy |",
              "|---|---|---|---|---|---|---|"]
    for job in jobs:
        doc, error = run_job(device_class, job)
        if doc is None:
            failures.append(f"{job.stem}: {error}")
            lines.append(f"| {job.stem} | failed: {error} | | | | | |")
            continue
        lines += job_rows(job, doc)
    lines += ["", "Failures: " + "; ".join(failures) if failures else "Every step passed."]
    write_section(SECTION, TITLE, "\n".join(lines))
    print("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
