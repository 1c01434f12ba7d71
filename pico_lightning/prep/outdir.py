"""The output directory of `pico prep`: an existing dataset is replaced only when asked, and then wholly; a
directory that is not a dataset (no index.json) is never replaced.

The new dataset is built in a hidden temporary directory beside ``--out`` and swapped in by two renames once
complete, so a failed or interrupted build leaves the old dataset as it was, and no file of the old one
(stale shards, ``suites/``) survives next to the new one.
"""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pico_lightning.data.schema import INDEX_NAME
from pico_lightning.errors import UserError
from pico_lightning.files import umask

T = TypeVar("T")


def check_out_dir(out: Path, overwrite: bool, src: Path | None = None) -> None:
    """UserError when ``out`` is a file, overlaps ``src``, or holds something and ``overwrite`` is off."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file, not a directory")
    if src is not None:
        out_abs, src_abs = out.resolve(), src.resolve()
        if out_abs == src_abs or out_abs in src_abs.parents or src_abs in out_abs.parents:
            raise UserError(f"--out {out}: overlaps SRC {src}; write the shards to a directory outside it")
    if not (out.is_dir() and any(out.iterdir())):
        return
    if not overwrite:
        raise UserError(
            f"--out {out}: already exists and is not empty; pass --overwrite to replace it (wholly), "
            "or choose another directory"
        )
    if not (out / INDEX_NAME).is_file():  # --overwrite replaces datasets, never a directory of other things
        raise UserError(
            f"--out {out}: is not a dataset (no {INDEX_NAME}), so even --overwrite will not replace it; "
            "choose a new or empty directory"
        )


def build_replacing(out: Path, build: Callable[[Path], T]) -> T:
    """Run ``build(tmp)`` in a temporary directory beside ``out``, then put it in ``out``'s place."""
    out = out.resolve()  # "." and "x/.." have no name to build beside
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        result = build(tmp)
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it 0700; a dataset directory is shared like any other
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            try:
                os.replace(tmp, out)
            except OSError:
                os.replace(old / out.name, out)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already unless the build failed
    return result
