"""Atomic file writing and guarded reading.

Every file the toolkit writes goes to a temporary name in the same folder and is
renamed into place when complete, so an interrupted command never leaves a
half-written file behind. A temporary is named `.NAME.HOST-PID.XXXXXXXX[.tmp]`; the
first write of a process into a folder removes the temporaries there of processes
of this host that no longer run (killed before they could clean up). Before the rename, a
file, or a folder and all it holds, gets the modes of ordinary new files and folders under
the user's umask (`tempfile`, and some writers such as safetensors, make them private), so
teammates can read a run where the umask lets them.

A write that fails for want of space (ENOSPC, a quota, or a writer that names no errno on an almost full
disk) raises `DiskFullError` naming the final path, the bytes needed and free, with its temporary removed
and any previous version of the file or folder untouched. `check_space` refuses a write known to be too
big before it starts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpvcli.errors import DiskFullError, GPVError

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
_TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.[a-z0-9_]{8}(\.tmp)?$")
_swept: set[Path] = set()


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_HOST}-{os.getpid()}."


def is_temporary(name: str) -> bool:
    """Whether a file or folder name is one of this module's temporaries."""
    return _TEMP.match(name) is not None


def pid_running(pid: int) -> bool:
    if os.name != "posix":
        return True                      # no cheap check: never remove
    try:
        os.kill(pid, 0)                  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:              # it exists, as another user's
        pass
    return True


def remove_stale_temporaries(folder: Path) -> None:
    """Remove the temporaries in `folder` left by killed processes of this host (once per folder and
    process: later writes there skip the scan)."""
    folder = folder.resolve()
    if folder in _swept:
        return
    _swept.add(folder)
    for entry in os.scandir(folder):
        m = _TEMP.match(entry.name)
        if m and m["host"] == _HOST and int(m["pid"]) != os.getpid() and not pid_running(int(m["pid"])):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def umask_mode(folder: bool = False) -> int:
    """The mode an ordinary new file (or folder) gets under the process's current umask."""
    mask = os.umask(0o022)               # reading the umask means setting it: put it straight back
    os.umask(mask)
    return (0o777 if folder else 0o666) & ~mask


def apply_umask(folder: Path) -> None:
    """Give `folder` and everything in it the modes of new files and folders under the umask."""
    file_mode, folder_mode = umask_mode(), umask_mode(folder=True)
    for root, folders, files in os.walk(folder):
        for name in folders:
            os.chmod(os.path.join(root, name), folder_mode)
        for name in files:
            os.chmod(os.path.join(root, name), file_mode)
    os.chmod(folder, folder_mode)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, needed: int = 0) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` on success. A write that fails on a full
    disk raises DiskFullError naming `path` (about `needed` bytes, or what the failed write and the previous
    version took), with the temporary removed."""
    path = Path(path)
    with disk_full_errors(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
        os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except Exception as e:
        _failed_write(e, path, tmp, needed)
        raise
    finally:
        _remove(tmp)


def restore_interrupted(path: str | os.PathLike) -> Path:
    """`path` as the last complete `atomic_dir` left it: a process killed between its two renames leaves
    no `path`, only `.NAME.old` (the previous complete version), which is put back. Call before reading a
    folder that `atomic_dir` replaces (checkpoints)."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists():
        os.replace(old, path)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, needed: int = 0) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` on success (the old version moves to
    `.NAME.old`, the new one in, then the old one is removed; see `restore_interrupted`). On a full disk,
    DiskFullError as for `atomic_path`, naming the file under `path` whose write failed."""
    path = restore_interrupted(path)
    with disk_full_errors(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    try:
        yield tmp
        apply_umask(tmp)
        old = path.with_name(f".{path.name}.old")
        if old.exists():                 # left by a process killed after its last complete replacement
            shutil.rmtree(old)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        if old.exists():
            shutil.rmtree(old)
    except Exception as e:
        _failed_write(e, path, tmp, needed)
        raise
    finally:
        _remove(tmp)


# ---- a full disk ----------------------------------------------------------------------------------

_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXTS = ("No space left on device", "errno = 28", "os error 28", "Disk quota exceeded")
LOW_SPACE = 1 << 20     # free bytes under which any failed write counts as a full disk (torch.save names no errno)


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes free to an ordinary writer on the filesystem of `path` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def size_of(path: str | os.PathLike) -> int:
    """Bytes of a file, or of all files under a folder; 0 when absent."""
    path = Path(path)
    with contextlib.suppress(OSError):
        if path.is_dir():
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        return path.stat().st_size
    return 0


def check_space(path: str | os.PathLike, needed: int) -> None:
    """Refuse (DiskFullError) to start writing about `needed` bytes under `path` when they are not free."""
    free = free_bytes(path)
    if needed > free:
        raise DiskFullError(Path(path), needed=needed, free=free)


def _is_disk_full(e: Exception, folder: Path) -> bool:
    if isinstance(e, DiskFullError) or isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS:
        return True
    if any(text in str(e) for text in _NO_SPACE_TEXTS):
        return True
    return isinstance(e, RuntimeError) and free_bytes(folder) < LOW_SPACE


@contextlib.contextmanager
def disk_full_errors(path: Path, needed: int = 0) -> Iterator[None]:
    """Turn a write of `path` failing on a full disk into DiskFullError."""
    try:
        yield
    except Exception as e:
        if isinstance(e, DiskFullError) or not _is_disk_full(e, path.parent):
            raise
        raise DiskFullError(path, needed=needed, free=free_bytes(path.parent)) from e


def _failed_write(e: Exception, path: Path, tmp: Path, needed: int) -> None:
    """After writing `path` through the temporary `tmp` failed with `e`: on a full disk, remove `tmp` and raise
    DiskFullError naming `path` (one raised inside the temporary folder `tmp` is renamed to its final place)."""
    if not _is_disk_full(e, path.parent):
        return
    written = size_of(tmp)                          # with a DiskFullError from inside: the files completed
    needed = max(needed, written + e.needed if isinstance(e, DiskFullError) else written, size_of(path))
    _remove(tmp)
    if isinstance(e, DiskFullError):
        with contextlib.suppress(ValueError):
            e.path = path / Path(e.path).relative_to(tmp)
        e.needed, e.free = needed, free_bytes(path.parent)
        raise e
    raise DiskFullError(path, needed=needed, free=free_bytes(path.parent)) from e


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# ---- writers ------------------------------------------------------------------------------------------

def write_text(path: str | os.PathLike, text: str) -> Path:
    data = text.encode("utf-8")
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append `line` and a newline to a log file; a write that fails (a full disk) leaves the file as it was."""
    path = Path(path)
    data = memoryview((line + "\n").encode("utf-8"))
    with disk_full_errors(path, len(data)):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                while data:
                    data = data[os.write(fd, data):]
            except OSError:
                os.ftruncate(fd, start)
                raise
        finally:
            os.close(fd)


def json_text(obj: Any, indent: int | None = 2) -> str:
    """The text `write_json` writes."""
    return json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return write_text(path, json_text(obj, indent))


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Load JSON or raise a GPVError naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise GPVError(f"{what} not found: {path}", hint="check the path")
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GPVError(f"{what} {path} is not valid JSON ({e})", hint="regenerate or replace the file")
