"""One writer per folder: a run folder, a prepared-data folder or an ablation folder is written by one
process at a time.

`writing(folder, option=...)` holds an advisory lock (`fcntl.flock`) on `PARENT/.NAME.lock` while a command
writes `folder` (beside it, not in it: `gpv prepare` replaces its whole folder); the file names the holder
(host, pid, start time). A second writer finds the lock held and stops at once, before writing anything,
with a GPVError (exit code 2) naming the holder. The kernel drops a flock when its process dies, so a lock
file left by a killed process is taken over, with a warning that names it. The file is removed on release.
Readers (evaluate, predict, report) take no lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from gpvcli.errors import GPVError
from gpvcli.io import pid_running

log = logging.getLogger(__name__)
HOST = socket.gethostname()
_held: set[Path] = set()           # lock files held by this process: taking one again is a no-op


def lock_file(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


@contextlib.contextmanager
def writing(folder: str | os.PathLike, *, option: str) -> Iterator[None]:
    """Hold the lock of `folder` for the block (nested in a block of this process holding it: nothing
    more); `option` is the command-line option that picks another folder (named in the refusal)."""
    folder = Path(folder)
    path = lock_file(folder)
    key = path.resolve()
    if key in _held:               # this process holds it already (an ablation variant trained by `train`)
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    _held.add(key)
    try:
        fd = _acquire(path, folder, option)
    except BaseException:
        _held.discard(key)
        raise
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)
        _held.discard(key)


def _acquire(path: Path, folder: Path, option: str) -> int:
    """An open descriptor of the lock file `path`, locked by this process, with this process named in it."""
    for _ in range(10):          # the holder may remove the file between our open and our lock: open again
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise GPVError(f"{folder} is being written by {_describe(holder)}",
                           hint=f"wait for it, or use another {option}") from None
        except OSError as e:     # a filesystem without flock: judge by the holder named in the file
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise
            holder = _holder(fd)
            if holder and (holder.get("host") != HOST or pid_running(holder.get("pid", -1))) \
                    and holder.get("pid") != os.getpid():
                os.close(fd)
                raise GPVError(f"{folder} is being written by {_describe(holder)} (lock file {path}; this "
                               "filesystem cannot lock it)", hint=f"wait for it, or use another {option}") from None
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        os.close(fd)
    else:
        raise GPVError(f"cannot lock {folder}: {path} keeps changing", hint=f"use another {option}")
    previous = _holder(fd)
    if previous:
        log.warning("%s: taking over the lock left by %s, which no longer runs", folder, _describe(previous))
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"host": HOST, "pid": os.getpid(), "started": time.time()}).encode(), 0)
    return fd


def _holder(fd: int) -> dict:
    """The holder recorded in an open lock file ({} when empty or unreadable)."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process"
    started = holder.get("started")
    since = ""
    if isinstance(started, (int, float)):
        fmt = "%H:%M" if time.strftime("%Y-%m-%d", time.localtime(started)) == time.strftime("%Y-%m-%d") \
            else "%Y-%m-%d %H:%M"
        since = f" since {time.strftime(fmt, time.localtime(started))}"
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{since}"
