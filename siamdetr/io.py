"""Atomic file output: a kill never leaves a half-written file that looks whole."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from siamdetr.errors import DiskFull, RunLocked

log = logging.getLogger(__name__)
LOCK = ".lock"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file beside `path`, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(f"{path}: {e.strerror} while writing it; the previous version, if any, is intact") from e
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, marker: str | None = None) -> Iterator[Path]:
    """Build a directory under a temporary name and move it into place only when the block succeeds.

    An existing `path` is replaced only if it holds `marker` (a file this tool wrote), so a user's own
    directory is never deleted by mistake.
    """
    path = Path(path)
    if path.exists() and (marker is None or not (path / marker).exists()):
        raise FileExistsError(f"{path}: exists and was not written by siamdetr; remove it or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial"))
    try:
        yield tmp
        if marker is not None:
            (tmp / marker).touch()
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def locked(out: Path, enabled: bool = True) -> Iterator[None]:
    """An exclusive lock on an output directory (a run, a proposals store) while one process writes it; the OS
    drops it when the process dies, so only a live second writer is refused."""
    if not enabled:
        yield
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise RunLocked(f"{out}: another process is writing here (it holds {out / LOCK})") from e
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_temp_files(out: Path) -> None:
    """Temp files of atomic writes (`.NAME.*.tmp`) that a killed writer never renamed; safe under the lock."""
    for tmp in out.glob(".*.tmp"):
        log.info("removing %s, left by an interrupted write", tmp)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
