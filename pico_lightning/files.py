"""Atomic writes: a file is either its old self or its complete new self, never a truncated mix.

Everything is written to a temporary file in the destination's own directory (so the final ``os.replace`` is a
rename on one filesystem, atomic on POSIX), flushed to disk, then renamed over the destination. A failure (a full
disk, a kill) leaves the previous file untouched and removes the temporary one; a full disk is an
``OSError(ENOSPC)`` naming the destination's directory, whatever the writer raised.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is synced and renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise disk_full(path.parent) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def disk_full(directory: Path) -> OSError:
    """The error of a write that found no space left in ``directory`` (one line at the command line)."""
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))


def failed_write(err: Exception, directory: Path) -> Exception:
    """``err`` as :func:`disk_full` when ``directory``'s filesystem is full, else ``err`` itself: for writers that
    do not raise OSError, such as torch.save, whose zip writer reports a full disk as a RuntimeError
    ("unexpected pos ..."). Call it while the partial file still holds the space."""
    return disk_full(directory) if shutil.disk_usage(directory).free < 1 << 20 else err


def write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> None:
    """Write ``text`` to ``path`` atomically; ``mode``: its permission bits (default: those of any new file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
        if mode is not None:
            os.chmod(tmp, mode)


def write_json(path: str | os.PathLike, payload: object) -> None:
    """Write ``payload`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(payload, indent=2) + "\n")


def umask() -> int:
    """The process's file-creation mask: what a temporary directory's private files are opened up to when they
    are put in place (reading the mask means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
