"""Starting an engine on this host for `runner serve` (and the tests and benchmark): the command line for the job,
the process in its own process group, a wait until it answers, and a stop that leaves nothing behind."""
from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from core.errors import RunError, UserError
from runner.spec import JobSpec

# the package that provides each engine's executable, for the error when it is missing
PACKAGES = {"vllm": "vllm (on Ascend: vllm plus vllm-ascend)", "transformers": "transformers[serving]"}


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now. A host that does not resolve, or is no address of this machine, is the user's to
    fix (--host), found before any engine starts."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as s:
            s.bind(address)
            return s.getsockname()[1]
    except (OSError, ValueError) as e:  # ValueError: a name IDNA cannot encode
        raise UserError(f"--host {host!r}: the engine cannot listen there ({e})") from None


def url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def executable(name: str) -> str:
    """`name` from this Python's environment first (a venv's bin is not always on PATH), then PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if found is None:
        raise UserError(f"the engine is not installed: `{name}` not found (pip install {PACKAGES.get(name, name)})")
    return found


def command(spec: JobSpec, model_dir: Path, host: str, port: int, device_type: str) -> list[str]:
    """The engine's command line: the job's own `serving.engine.command` when it has one, else `vllm serve` (vllm,
    vllm-ascend) or `transformers serve` with the job's tensor-parallel size, dtype and declared settings."""
    s, m = spec.serving, spec.model
    fields = {"model": str(model_dir), "host": host, "port": port, "tp": m.tensor_parallel, "dtype": m.dtype}
    if s.engine.command:
        try:
            argv = shlex.split(s.engine.command.format(**fields))
        except (KeyError, IndexError, ValueError) as e:
            raise UserError(f"serving.engine.command: cannot fill it in ({e!r}); it may use "
                            f"{', '.join('{' + k + '}' for k in fields)}") from None
        return [executable(argv[0]), *argv[1:]]
    name = s.engine.name
    if name in ("vllm", "vllm-ascend"):
        return [executable("vllm"), "serve", str(model_dir), "--host", host, "--port", str(port),
                "--tensor-parallel-size", str(m.tensor_parallel), "--dtype", m.dtype, *s.engine.settings]
    if name == "transformers":
        if m.tensor_parallel != 1:
            raise UserError("transformers serve runs one device: set model.tensor_parallel = 1")
        return [executable("transformers"), "serve", str(model_dir), "--host", host, "--port", str(port),
                "--dtype", m.dtype, "--device", "cpu" if device_type == "cpu" else "auto", *s.engine.settings]
    raise UserError(f"runner serve starts vllm, vllm-ascend or transformers; for engine {name!r} set "
                    "serving.engine.command (or start it yourself and use runner submit --endpoint)")


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the engine is local: no proxy


def _answers(url: str) -> bool:
    for path in ("/health", "/v1/models"):
        try:
            with _DIRECT.open(url + path, timeout=2) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            continue
    return False


def _tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    return " | ".join(line.strip() for line in text[-lines:]) or "no output"


@contextlib.contextmanager
def running(argv: list[str], url: str, startup_timeout_s: float, env: dict | None = None):
    """Run `argv` until the block ends; enter once `url` answers /health (or /v1/models). An engine that exits or
    does not answer in time is a one-line RunError with the end of its log."""
    log = Path(tempfile.mkstemp(prefix="devcompare-engine-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not _answers(url):
            if proc.poll() is not None:
                raise RunError(f"{Path(argv[0]).name} exited with code {proc.returncode} before answering: "
                               f"{_tail(log)} (log: {log})")
            if time.monotonic() > deadline:
                raise RunError(f"{Path(argv[0]).name} did not answer at {url} within {startup_timeout_s:g} s: "
                               f"{_tail(log)} (log: {log})")
            time.sleep(0.5)
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM to the engine's process group (its workers too), SIGKILL after the grace period."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
