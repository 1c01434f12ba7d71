"""One process at a time per run directory: an advisory lock held for the whole fit.

Two ``pico train`` on the same ``run.name`` would interleave ``metrics.jsonl``, write ``last-v1.ckpt`` and open two
W&B runs with one id. The launching process (global rank zero) takes ``<run dir>/.lock`` with ``flock``; the
kernel drops it when the process exits, even on SIGKILL, so a killed run can be resumed at once.

A refused run leaves nothing behind: when the fit fails before it started (no config.yaml written yet, e.g. a
``data.root`` that is a file), the lock removes the run directory again if it created it, and the parents it
created with it, while still holding the lock.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from pico_lightning.errors import UserError

STARTED = "config.yaml"  # written at fit start (RunArtifacts): from then on the run directory is kept


class RunLock:
    """``with RunLock(run_dir):`` holds the run directory's lock, or raises one UserError line naming its owner."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.handle = None
        self.created: list[Path] = []  # the run directory and its parents that this lock made, deepest first

    def __enter__(self) -> RunLock:
        missing = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held open for the whole run)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise UserError(
                f"{self.path.parent}: run in use by pid {owner}; wait for it to finish or choose another run.name"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle, self.created = handle, missing
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self.created and not (self.path.parent / STARTED).exists():
            self._remove_created()
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None

    def _remove_created(self) -> None:
        """Remove the run directory this lock made (the fit never started) and the empty parents made with it."""
        shutil.rmtree(self.created[0], ignore_errors=True)
        for parent in self.created[1:]:
            try:
                parent.rmdir()
            except OSError:  # something else was put there meanwhile: keep it
                break
