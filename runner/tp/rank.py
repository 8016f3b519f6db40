"""One tensor-parallel rank, started by torchrun from runner.tp.launch (not meant to be run by hand).

Sets this rank's device and thread count, initialises the process group with the device's backend (transformers'
tp_plan has no "npu" entry, so we always do it ourselves), runs the job, and leaves a status file; rank 0 also
writes the run document.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--device", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--model-path")
    args = ap.parse_args()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world = int(os.environ["WORLD_SIZE"])
    status = Path(args.workdir) / f"rank{rank}.json"
    try:
        import torch
        import torch.distributed as dist

        from runner import devices
        from runner.spec import parse_spec
        from runner.submit import run_job

        spec = parse_spec(json.loads(Path(args.spec).read_text()))
        device = devices.detect(args.device)
        if device.type == "cpu":
            # ranks share the host's cores: oversubscribed threads would measure contention, not the model
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // world))
        else:
            devices.device_module(device.type).set_device(local_rank)  # before init_process_group (hccl needs it)
        dist.init_process_group(backend=device.backend)
        doc = run_job(spec, device, model_path=args.model_path, rank=rank, world=world, local_rank=local_rank)
        if rank == 0:
            from core import rundoc

            rundoc.write(doc, Path(args.workdir) / "run.json")
        dist.barrier()
        dist.destroy_process_group()
        status.write_text(json.dumps({"ok": True}))
    except BaseException as e:
        message = f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__
        status.write_text(json.dumps({"error": message, "traceback": traceback.format_exc(), "at": time.time()}))
        sys.exit(1)  # the launcher reports it in one line; torchrun stops the other ranks


if __name__ == "__main__":
    main()
