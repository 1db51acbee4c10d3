"""Atomic file writing and guarded reading.

Every file the toolkit writes goes to a temporary name in the same folder and is
renamed into place when complete, so an interrupted command never leaves a
half-written file behind. A temporary is named `.NAME.HOST-PID.XXXXXXXX[.tmp]`; the
first write of a process into a folder removes the temporaries there of processes
of this host that no longer run (killed before they could clean up). Before the rename, a
file, or a folder and all it holds, gets the modes of ordinary new files and folders under
the user's umask (`tempfile`, and some writers such as safetensors, make them private), so
teammates can read a run where the umask lets them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpvcli.errors import GPVError

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
_TEMP = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9-]*)-(?P<pid>\d+)\.[a-z0-9_]{8}(\.tmp)?$")
_swept: set[Path] = set()


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_HOST}-{os.getpid()}."


def _running(pid: int) -> bool:
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
        if m and m["host"] == _HOST and int(m["pid"]) != os.getpid() and not _running(int(m["pid"])):
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
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; it replaces `path` on success (the old version moves to
    `.NAME.old`, the new one in, then the old one is removed; see `restore_interrupted`)."""
    path = restore_interrupted(path)
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
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


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
