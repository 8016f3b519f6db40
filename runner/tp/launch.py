"""Tensor parallel: `runner submit` launches N ranks under torchrun itself, so the user still types one command.

Each rank (runner.tp.rank) initialises its process group (hccl / nccl / gloo) and loads the model with transformers'
own `tp_plan="auto"`; all ranks run the same forward calls, rank 0 records. Every rank leaves a status file; a
failing rank ends the run with an error naming the rank and its message, torchrun stops the other ranks, and
nothing is pushed or written. A size that does not divide the attention and KV heads is refused before any rank
starts, with the sizes that work.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from runner.devices import Device
from core.errors import RunError, UserError
from runner.spec import JobSpec


def valid_sizes(config) -> list[int]:
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    return [n for n in range(1, heads + 1) if heads % n == 0 and kv % n == 0]


def check_size(config, size: int, device: Device) -> None:
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    sizes = valid_sizes(config)
    if size not in sizes:
        raise UserError(f"model.tensor_parallel = {size} does not divide the model's {heads} attention heads and "
                        f"{kv} KV heads; sizes that work: {', '.join(map(str, sizes))}")
    if device.type != "cpu" and size > device.count:
        raise UserError(f"model.tensor_parallel = {size} needs {size} {device.device_class} devices; "
                        f"this host has {device.count}")


def _rank_failure(status_dir: Path, size: int, returncode: int) -> str:
    """One line: the first rank to fail (the others usually fail because it did), and where the tracebacks are."""
    errors, silent = [], []
    for rank in range(size):
        path = status_dir / f"rank{rank}.json"
        if not path.exists():
            silent.append(rank)
            continue
        status = json.loads(path.read_text())
        if status.get("error"):
            errors.append((status["at"], rank, status["error"], status["traceback"]))
    if errors:
        errors.sort()
        log = _log_path()
        log.write_text("".join(f"--- rank {r} ---\n{tb}\n" for _, r, _, tb in errors))
        _, rank, message, _ = errors[0]
        others = f" ({len(errors) - 1} other rank(s) failed after it)" if len(errors) > 1 else ""
        return f"rank {rank} failed first: {message}{others}; tracebacks in {log}"
    if silent:
        return (f"rank {silent[0]} died without reporting (torchrun exit code {returncode}; killed, or out of "
                "memory?)")
    return f"torchrun exited with code {returncode}"


def _log_path() -> Path:
    from platformdirs import user_log_dir

    d = Path(user_log_dir("devcompare"))
    d.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkstemp(prefix="tp-failure-", suffix=".log", dir=d)[1])


def run_tensor_parallel(spec: JobSpec, device: Device, model_path: str | None) -> dict:
    """Run the job on `spec.model.tensor_parallel` ranks; returns rank 0's run document."""
    size = spec.model.tensor_parallel
    with tempfile.TemporaryDirectory(prefix="devcompare-tp-") as tmp:
        tmp = Path(tmp)
        (tmp / "spec.json").write_text(json.dumps(spec.to_dict()))
        cmd = [sys.executable, "-m", "runner.tp.launch", "--standalone", f"--nproc_per_node={size}",
               "--monitor_interval=0.5", "-m", "runner.tp.rank", "--spec", str(tmp / "spec.json"),
               "--device", device.device_class, "--workdir", str(tmp)]
        if model_path:
            cmd += ["--model-path", model_path]
        # OMP_NUM_THREADS set explicitly silences torchrun's warning; each rank sets its own thread count anyway
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        # own process group: Ctrl-C or an error here takes every rank down with torchrun
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        try:
            returncode = proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            try:  # torchrun stops its workers on failure; this catches any straggler in the group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        doc_path = tmp / "run.json"
        if returncode != 0 or not doc_path.exists():
            raise RunError(f"tensor-parallel run ({size} ranks) failed: {_rank_failure(tmp, size, returncode)}")
        return json.loads(doc_path.read_text())


if __name__ == "__main__":
    # torchrun, minus its multi-screen ChildFailedError dump: failures are reported from the ranks' status files
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(sys.argv[1:])
    except ChildFailedError:
        sys.exit(1)
