"""Board power during the timed repeats, turned into joules per token.

Each rank meters the device it owns: NVML on CUDA (the board's energy counter where the GPU has one, Volta and
later; otherwise its power reading), `npu-smi` on Ascend (the chip's real-time power), RAPL on a CPU host (package
energy, counted by the host's local rank 0 for all its ranks, other processes on the host included). A background
thread reads the meter every `interval_s`; energy over a window is the cumulative joules at its end minus at its
start, interpolated between readings. Where no meter exists the record says "not available" and why: never a zero.
"""
from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")
NVML_INTERVAL_S = 0.05
NPU_SMI_INTERVAL_S = 1.0  # each reading is a subprocess: sampling faster would load the host it measures
RAPL_INTERVAL_S = 0.05


@dataclass
class Meter:
    """A source of readings: `kind` "energy" (cumulative joules) or "power" (watts, integrated by the sampler)."""
    name: str
    kind: str
    read: object  # () -> float
    interval_s: float
    shared: bool = False  # another rank's meter already covers this rank's device (RAPL: one package, many ranks)


# -- parsers and unit conversions (kept pure: tested on recorded outputs) -----------------------------------------

_NPU_POWER = re.compile(r"^\s*(?:NPU Real-time Power|Power Dissipation)\(W\)\s*:\s*([0-9.]+)", re.M)


def parse_npu_smi_power(text: str) -> float | None:
    """Watts from `npu-smi info -t power -i ID -c CHIP`: "NPU Real-time Power(W)" on 910-class chips, "Power
    Dissipation(W)" on older boards. A 310's "Rated Power Dissipation(W)" is a rating, not a reading: None."""
    m = _NPU_POWER.search(text)
    return float(m.group(1)) if m else None


def parse_npu_smi_mapping(text: str) -> dict[int, tuple[int, int]]:
    """Chip logic id (what torch_npu numbers) -> (NPU ID, Chip ID) for npu-smi, from `npu-smi info -m`."""
    mapping = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and all(f.isdigit() for f in fields[:3]):
            mapping[int(fields[2])] = (int(fields[0]), int(fields[1]))
    return mapping


def nvml_energy_joules(counter_mj: int) -> float:
    """nvmlDeviceGetTotalEnergyConsumption counts millijoules since the driver loaded."""
    return counter_mj / 1000.0


def nvml_power_watts(milliwatts: int) -> float:
    """nvmlDeviceGetPowerUsage reports milliwatts."""
    return milliwatts / 1000.0


def rapl_joules(readings_uj: list[int], max_range_uj: int) -> float:
    """Joules over successive energy_uj readings of one RAPL domain; the counter wraps at max_energy_range_uj."""
    total = 0
    for a, b in zip(readings_uj, readings_uj[1:]):
        total += b - a if b >= a else b + max_range_uj - a
    return total / 1e6


# -- meters -------------------------------------------------------------------------------------------------------

def _visible(env: str, local_rank: int) -> str:
    ids = [v.strip() for v in os.environ.get(env, "").split(",") if v.strip()]
    return ids[local_rank] if local_rank < len(ids) else str(local_rank)


def _nvml_meter(local_rank: int) -> tuple[Meter | None, str | None]:
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None, "NVML (libnvidia-ml.so.1) cannot be loaded"
    if lib.nvmlInit_v2() != 0:
        return None, "nvmlInit failed"
    handle, which = ctypes.c_void_p(), _visible("CUDA_VISIBLE_DEVICES", local_rank)
    if which.isdigit():
        rc = lib.nvmlDeviceGetHandleByIndex_v2(ctypes.c_uint(int(which)), ctypes.byref(handle))
    else:
        rc = lib.nvmlDeviceGetHandleByUUID(which.encode(), ctypes.byref(handle))
    if rc != 0:
        return None, f"NVML has no handle for CUDA device {which} (error {rc})"
    energy, power = ctypes.c_ulonglong(), ctypes.c_uint()
    if lib.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(energy)) == 0:
        def read_energy() -> float:
            lib.nvmlDeviceGetTotalEnergyConsumption(handle, ctypes.byref(energy))
            return nvml_energy_joules(energy.value)
        return Meter("nvml energy counter", "energy", read_energy, NVML_INTERVAL_S), None
    if lib.nvmlDeviceGetPowerUsage(handle, ctypes.byref(power)) == 0:
        def read_power() -> float:
            lib.nvmlDeviceGetPowerUsage(handle, ctypes.byref(power))
            return nvml_power_watts(power.value)
        return Meter("nvml power", "power", read_power, NVML_INTERVAL_S), None
    return None, "this GPU reports neither an energy counter nor power usage through NVML"


def _npu_smi(args: list[str]) -> str:
    return subprocess.run(["npu-smi", *args], capture_output=True, text=True, timeout=10, check=True).stdout


def _npu_meter(local_rank: int) -> tuple[Meter | None, str | None]:
    if shutil.which("npu-smi") is None:
        return None, "npu-smi is not on PATH (mount /usr/local/bin/npu-smi into the container)"
    logic = int(_visible("ASCEND_RT_VISIBLE_DEVICES", local_rank))
    try:
        npu, chip = parse_npu_smi_mapping(_npu_smi(["info", "-m"])).get(logic, (logic, 0))
        args = ["info", "-t", "power", "-i", str(npu), "-c", str(chip)]
        if parse_npu_smi_power(_npu_smi(args)) is None:
            return None, f"`npu-smi {' '.join(args)}` prints no real-time power"
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"npu-smi failed: {e}"
    return Meter("npu-smi", "power", lambda: parse_npu_smi_power(_npu_smi(args)) or 0.0, NPU_SMI_INTERVAL_S), None


def _rapl_meter(local_rank: int) -> tuple[Meter | None, str | None]:
    if not POWERCAP.exists():
        return None, f"no RAPL: {POWERCAP} does not exist on this host (no powercap driver; usual in a VM)"
    domains = sorted(p for p in POWERCAP.glob("*-rapl:*") if p.name.count(":") == 1)  # packages, not sub-domains
    if not domains:
        return None, f"no RAPL package domain under {POWERCAP}"
    try:
        ranges = [int((d / "max_energy_range_uj").read_text()) for d in domains]
        last = [int((d / "energy_uj").read_text()) for d in domains]
    except OSError as e:
        return None, f"RAPL is not readable ({e.strerror}: energy_uj is root-only on Linux >= 5.10)"
    total = [0.0]

    def read() -> float:
        now = [int((d / "energy_uj").read_text()) for d in domains]
        total[0] += sum(rapl_joules([a, b], r) for a, b, r in zip(last, now, ranges))
        last[:] = now
        return total[0]
    return Meter("rapl", "energy", read, RAPL_INTERVAL_S, shared=local_rank > 0), None


def meter_for(device_type: str, local_rank: int = 0) -> tuple[Meter | None, str | None]:
    """This rank's meter, or (None, why there is none)."""
    try:
        return {"cuda": _nvml_meter, "npu": _npu_meter, "cpu": _rapl_meter}[device_type](local_rank)
    except Exception as e:  # noqa: BLE001 - a broken meter costs the energy figure, never the run
        return None, f"power meter failed: {type(e).__name__}: {e}"


# -- sampling -----------------------------------------------------------------------------------------------------

class Sampler:
    """Reads a meter on a background thread; `joules(t0, t1)` is the energy between two perf_counter times."""

    def __init__(self, meter: Meter):
        self.meter = meter
        self.times: list[float] = []
        self.cumulative: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="power", daemon=True)

    def _sample(self) -> None:
        t, value = time.perf_counter(), self.meter.read()
        if self.meter.kind == "energy":
            self.cumulative.append(value)
        elif not self.cumulative:
            self.cumulative.append(0.0)
            self._watts = value
        else:  # trapezoid between this power reading and the last
            self.cumulative.append(self.cumulative[-1] + (value + self._watts) / 2 * (t - self.times[-1]))
            self._watts = value
        self.times.append(t)

    def _run(self) -> None:
        while not self._stop.wait(self.meter.interval_s):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        return False

    def at(self, t: float) -> float:
        """Cumulative joules at time t, linear between readings (clamped to the first and last)."""
        ts, js = self.times, self.cumulative
        if t <= ts[0]:
            return js[0]
        for i in range(1, len(ts)):
            if t <= ts[i]:
                return js[i - 1] + (js[i] - js[i - 1]) * (t - ts[i - 1]) / (ts[i] - ts[i - 1])
        return js[-1]

    def joules(self, t0: float, t1: float) -> float:
        return self.at(t1) - self.at(t0)

    @property
    def interval_s(self) -> float | None:
        """The mean spacing of the readings actually taken."""
        n = len(self.times)
        return (self.times[-1] - self.times[0]) / (n - 1) if n > 1 else None


# -- per-token figures ------------------------------------------------------------------------------------------

def rank_energy(sampler: Sampler | None, meter: Meter | None, why: str | None, marks: list[tuple[float, float, float]]) -> dict:
    """One rank's joules and seconds in the two phases of the timed repeats; marks are (start, first token, end)."""
    if sampler is None:
        return {"source": None, "reason": why, "shared": False}
    first = sum(sampler.joules(a, b) for a, b, _ in marks)
    decode = sum(sampler.joules(b, c) for _, b, c in marks)
    return {"source": meter.name, "reason": None, "shared": meter.shared, "interval_s": sampler.interval_s,
            "first_token_j": first, "decode_j": decode, "first_token_s": sum(b - a for a, b, _ in marks),
            "decode_s": sum(c - b for _, b, c in marks)}


def per_token(ranks: list[dict], batch_size: int, repeats: int, new_tokens: int) -> dict:
    """The energy record of one batch size from every rank's share: joules per token in the first-token phase (one
    token per sequence) and in decode (new_tokens - 1 per sequence), and decode tokens per joule. A phase shorter
    than two sampling intervals is not measured; a rank without a meter makes the whole record unavailable."""
    missing = next((r for r in ranks if r["source"] is None), None)
    if missing is not None:
        return {"batch_size": batch_size, "available": False, "reason": missing["reason"]}
    counted = [r for r in ranks if not r["shared"]]
    interval = max(r["interval_s"] or 0.0 for r in ranks)
    rec = {"batch_size": batch_size, "available": True, "reason": None, "source": ranks[0]["source"],
           "interval_s": interval, "devices": len(counted)}
    tokens = {"first_token": batch_size * repeats, "decode": batch_size * repeats * (new_tokens - 1)}
    for phase, n in tokens.items():
        seconds = ranks[0][f"{phase}_s"]
        joules = sum(r[f"{phase}_j"] for r in counted)
        if seconds < 2 * interval or joules <= 0:
            rec[f"{phase}_j_per_token"] = None
            rec.setdefault("why", {})[phase] = (f"{seconds * 1e3:.0f} ms in all, under two sampling intervals"
                                                if seconds < 2 * interval else "the meter did not advance")
        else:
            rec[f"{phase}_j_per_token"] = joules / n
    rec["tokens_per_joule"] = 1 / rec["decode_j_per_token"] if rec["decode_j_per_token"] else None
    return rec
