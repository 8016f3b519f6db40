"""Tensor parallel: `runner submit` launches N ranks under torchrun itself, so the user still types one command.

Each rank (runner.tp.rank) initialises its process group (hccl / nccl / gloo) and loads the model with transformers'
own tensor-parallel plan; all ranks run the same forward calls, rank 0 records. Every rank leaves a status file; a
failing rank ends the run with an error naming the rank and its message, torchrun stops the other ranks, and
nothing is pushed or written. A size that does not divide the attention and KV heads is refused before any rank
starts, with the sizes that work.

A size larger than one host's devices runs across hosts: the same command on every host with `--nnodes N
--node-rank K --master-addr HOST0` (torchrun's static rendezvous at HOST0:--master-port). Each host starts
size / N ranks; node 0 holds rank 0 and so the run document; the other nodes' ranks take node 0's job.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.errors import RunError, UserError
from runner.devices import Device
from runner.spec import JobSpec

RENDEZVOUS_TIMEOUT_S = 900  # how long the first host waits for the others to join


@dataclass(frozen=True)
class Nodes:
    """Where the ranks of one job run: this host alone, or node `rank` of `count` hosts meeting at `master_addr`."""
    count: int = 1
    rank: int = 0
    master_addr: str | None = None
    master_port: int = 29500

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.rank < self.count:
            raise UserError(f"--node-rank must be in 0..{self.count - 1} for --nnodes {self.count}, got {self.rank}")
        if self.count > 1 and not self.master_addr:
            raise UserError("--nnodes > 1 needs --master-addr: the address of node 0, reachable from every node")

    def per_node(self, size: int) -> int:
        if size % self.count:
            raise UserError(f"model.tensor_parallel = {size} does not split evenly over --nnodes {self.count}")
        return size // self.count

    def torchrun_args(self, size: int) -> list[str]:
        if self.count == 1:
            return ["--standalone", f"--nproc_per_node={size}"]
        return [f"--nnodes={self.count}", f"--node_rank={self.rank}", f"--nproc_per_node={self.per_node(size)}",
                f"--master_addr={self.master_addr}", f"--master_port={self.master_port}",
                f"--rdzv_conf=timeout={RENDEZVOUS_TIMEOUT_S}"]

    def local_ranks(self, size: int) -> range:
        """The global ranks torchrun's static rendezvous places on this host."""
        n = size // self.count
        return range(self.rank * n, (self.rank + 1) * n)


def valid_sizes(config) -> list[int]:
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    return [n for n in range(1, heads + 1) if heads % n == 0 and kv % n == 0]


def check_size(config, size: int, device: Device, nodes: Nodes = Nodes()) -> None:
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    sizes = valid_sizes(config)
    if size not in sizes:
        raise UserError(f"model.tensor_parallel = {size} does not divide the model's {heads} attention heads and "
                        f"{kv} KV heads; sizes that work: {', '.join(map(str, sizes))}")
    here = nodes.per_node(size)
    if device.type != "cpu" and here > device.count:
        hosts = -(-size // device.count)
        more = f"; run it on {hosts} hosts with --nnodes {hosts}" if nodes.count == 1 and size % hosts == 0 else ""
        raise UserError(f"model.tensor_parallel = {size} needs {here} {device.device_class} devices on this host; "
                        f"it has {device.count}{more}")


def _rank_failure(status_dir: Path, ranks: range, returncode: int) -> str:
    """One line: the first rank to fail (the others usually fail because it did), and where the tracebacks are."""
    errors, silent = [], []
    for rank in ranks:
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


def run_tensor_parallel(spec: JobSpec | None, device: Device, model_path: str | None, nodes: Nodes = Nodes(),
                        size: int | None = None) -> dict | None:
    """Run the job on `spec.model.tensor_parallel` ranks; returns rank 0's run document (None on nodes > 0).
    Without a spec (an agent following node 0), the ranks take node 0's job and `size` says how many there are."""
    size = spec.model.tensor_parallel if spec is not None else size
    with tempfile.TemporaryDirectory(prefix="devcompare-tp-") as tmp:
        tmp = Path(tmp)
        cmd = [sys.executable, "-m", "runner.tp.launch", *nodes.torchrun_args(size), "--monitor_interval=0.5",
               "-m", "runner.tp.rank", "--device", device.device_class, "--workdir", str(tmp)]
        if spec is not None:
            (tmp / "spec.json").write_text(json.dumps(spec.to_dict()))
            cmd += ["--spec", str(tmp / "spec.json")]
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
        if returncode != 0 or (nodes.rank == 0 and not doc_path.exists()):
            where = f" (node {nodes.rank} of {nodes.count})" if nodes.count > 1 else ""
            why = _rank_failure(tmp, nodes.local_ranks(size), returncode)
            if nodes.count > 1 and not any(tmp.glob("rank*.json")):
                why = (f"no rank started (torchrun exit code {returncode}): did all {nodes.count} nodes join "
                       f"{nodes.master_addr}:{nodes.master_port} within {RENDEZVOUS_TIMEOUT_S} s?")
            raise RunError(f"tensor-parallel run ({size} ranks){where} failed: {why}")
        return json.loads(doc_path.read_text()) if nodes.rank == 0 else None


if __name__ == "__main__":
    # torchrun, minus its multi-screen ChildFailedError dump: failures are reported from the ranks' status files
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(sys.argv[1:])
    except ChildFailedError:
        sys.exit(1)
