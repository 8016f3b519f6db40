"""The collective check: all-reduce bus bandwidth over this host's ranks of a job, with the process group the job
would use (hccl, nccl or gloo), no model involved.

Bus bandwidth as nccl-tests defines it: an all-reduce of S bytes over n ranks moves 2(n-1)/n x S through each
rank's links, so busbw = S x 2(n-1)/n / time, comparable across rank counts (algbw = S / time is not).

Run: python -m runner.tp.launch --standalone --nproc_per_node=N -m runner.preflight.collective --device D --out F
(`measure` does that and reads F back).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.preflight import Check

SIZE_BYTES = {"cpu": 16 << 20, "cuda": 256 << 20, "npu": 256 << 20}
ITERATIONS = {"cpu": 5, "cuda": 20, "npu": 20}
TIMEOUT_S = 300


def bus_bandwidth(size_bytes: int, ranks: int, seconds_per_op: float) -> float:
    """GB/s through each rank's links (nccl-tests' busbw for all-reduce)."""
    return size_bytes * 2 * (ranks - 1) / ranks / seconds_per_op / 1e9


def _rank_main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    import torch
    import torch.distributed as dist

    from runner import devices
    from runner.tp.rank import init_group

    local_rank, world = int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    device = devices.bind(args.device, local_rank)
    if device.type == "cpu":
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // world))
    init_group(device)
    size, iterations = SIZE_BYTES[device.type], ITERATIONS[device.type]
    x = torch.ones(size // 4, dtype=torch.float32, device=device.torch_device(local_rank))
    for _ in range(2):  # warm-up: the first calls set up the communicator
        dist.all_reduce(x)
    devices.synchronize(device.type)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(x)
    devices.synchronize(device.type)
    seconds = (time.perf_counter() - t0) / iterations
    slowest = torch.tensor([seconds], dtype=torch.float32, device=x.device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)  # the slowest rank's time is the collective's
    seconds = float(slowest.item())
    if dist.get_rank() == 0:
        Path(args.out).write_text(json.dumps({
            "backend": device.backend, "ranks": world, "bytes": size, "iterations": iterations,
            "seconds_per_op": seconds, "busbw_gbps": bus_bandwidth(size, world, seconds)}))
    dist.barrier()
    dist.destroy_process_group()


def measure(device, ranks: int) -> Check:
    """All-reduce over `ranks` ranks on this host; a Check with the bus bandwidth, or why it failed."""
    if ranks < 2:
        return Check("collective", "skip", "one rank on this host: no collective to check")
    with tempfile.TemporaryDirectory(prefix="devcompare-collective-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "runner.tp.launch", "--standalone", f"--nproc_per_node={ranks}",
               "--monitor_interval=0.5", "-m", "runner.preflight.collective", "--device", device.device_class,
               "--out", str(out)]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
        except subprocess.TimeoutExpired:
            return Check("collective", "fail", f"{device.backend} all-reduce over {ranks} ranks did not finish in "
                         f"{TIMEOUT_S} s", "check the interconnect (nvidia-smi topo -m, hccn_tool) and its settings")
        if proc.returncode != 0 or not out.exists():
            last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
            return Check("collective", "fail", f"{device.backend} all-reduce over {ranks} ranks failed: {last}")
        r = json.loads(out.read_text())
    return Check("collective", "ok", f"{r['backend']} all-reduce over {r['ranks']} ranks: {r['busbw_gbps']:.2f} GB/s "
                 f"bus bandwidth ({r['bytes'] >> 20} MiB, {r['seconds_per_op'] * 1e3:.1f} ms per all-reduce)", data=r)


if __name__ == "__main__":
    _rank_main()
