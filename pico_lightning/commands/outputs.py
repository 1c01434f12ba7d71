"""Output locations of the commands, checked before any work starts: a directory that exists or can be made,
and can be written to (a read-only filesystem fails here, not after an hour of sampling)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pico_lightning.errors import UserError


def not_a_file(path: Path, flag: str) -> Path:
    """UserError naming ``flag`` when ``path``, meant as a directory, is an existing file."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: is a file; expected a directory")
    return path


def writable_dir(path: Path, flag: str) -> Path:
    """Create ``path`` (a directory) if needed and probe it with a temporary file; UserError naming ``flag``."""
    not_a_file(path, flag)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot write there ({err.strerror or err})") from None
    return path
