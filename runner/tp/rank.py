"""One tensor-parallel rank, started by torchrun from runner.tp.launch (not meant to be run by hand).

Sets this rank's own device before anything asks about a device (`devices.bind`: no rank opens a context on
device 0 first), sets the thread count, initialises the process group with the device's backend (transformers'
plan has no "npu" entry, so we always do it ourselves), takes rank 0's job, runs it, and leaves a status file;
rank 0 also writes the run document.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import traceback
from pathlib import Path

# Every rank waits at the final barrier while rank 0 executes HumanEval and writes the document; the default
# process-group timeout (10 minutes on NCCL and HCCL) would abort a large job after all its work. transformers
# allows its own sharded loading the same two hours.
GROUP_TIMEOUT = dt.timedelta(hours=2)


def init_group(device) -> None:
    import torch.distributed as dist

    dist.init_process_group(backend=device.backend, timeout=GROUP_TIMEOUT)


def shared_spec(path: str | None):
    """Rank 0's job, on every rank. A rank started with a job file of its own (every node ran `runner submit`)
    must have the same job; an agent following node 0 has none and takes node 0's."""
    import torch.distributed as dist

    from core.errors import UserError
    from runner.spec import parse_spec

    mine = json.loads(Path(path).read_text()) if path else None
    box = [mine]
    dist.broadcast_object_list(box, src=0)
    spec = parse_spec(box[0])
    if mine is not None and parse_spec(mine).fingerprint != spec.fingerprint:
        raise UserError(f"this node's job (fingerprint {parse_spec(mine).fingerprint}) is not node 0's "
                        f"({spec.fingerprint}): run the same job file on every node")
    return spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec")
    ap.add_argument("--device", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--model-path")
    args = ap.parse_args()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world, local_world = int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    status = Path(args.workdir) / f"rank{rank}.json"
    try:
        import torch
        import torch.distributed as dist

        from runner import devices
        from runner.submit import run_job

        device = devices.bind(args.device, local_rank)
        if device.type == "cpu":
            # this host's ranks share its cores: oversubscribed threads would measure contention, not the model
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local_world))
        init_group(device)
        spec = shared_spec(args.spec)
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
