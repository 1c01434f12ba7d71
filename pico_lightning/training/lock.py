"""One process at a time per run directory: an advisory lock held for the whole fit.

Two ``pico train`` on the same ``run.name`` would interleave ``metrics.jsonl``, write ``last-v1.ckpt`` and open two
W&B runs with one id. The launching process (global rank zero) takes ``<run dir>/.lock`` with ``flock``; the
kernel drops it when the process exits, even on SIGKILL, so a killed run can be resumed at once.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pico_lightning.errors import UserError


class RunLock:
    """``with RunLock(run_dir):`` holds the run directory's lock, or raises one UserError line naming its owner."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / ".lock"
        self.handle = None

    def __enter__(self) -> RunLock:
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
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
