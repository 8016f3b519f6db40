"""Atomic file writes: a crash leaves the old file or none, never half of one (run documents, the outbox)."""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path


def write_atomic(path: str | Path, text: str, lock: bool = False) -> int | None:
    """Write through a temporary file, fsync, rename, fsync the directory.

    With `lock`, the file is flocked before it gets its name and the locked descriptor is returned (the caller
    closes it to release the lock): another process can never see the file unlocked between rename and lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        if lock:
            fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "w") as f:  # a dup: closing it keeps `fd`, and so the lock, open
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)  # the rename itself must survive a power cut too
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    if lock:
        return fd
    os.close(fd)
    return None
