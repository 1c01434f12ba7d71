"""Every rank must see the run directory rank 0 made: checked once when a fit of several ranks starts.

A run.dir on a node-local disk (``/tmp``, a scratch SSD) gives each node its own run directory: rank 0 saves
checkpoints the other nodes never see, and on a requeue each node resumes from a different step. So rank 0 writes a
marker holding a fresh token, every rank looks for it, and all stop with one line unless every rank found it.
"""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import lightning.pytorch as pl

from pico_lightning.errors import UserError

MARKER = ".rank0_marker"
# NFS may show another client's new file only once its cached view of the directory expires (acdirmax: 60 s by
# default); a rank that sees the marker sooner goes on at once, so only a run that will stop waits this long
WAIT_S = 90.0


class SharedRunDir(pl.Callback):
    """Stops a fit of several ranks at its start, on every rank, when one of them does not see the run directory."""

    def __init__(self, run_dir: Path, wait_s: float = WAIT_S):
        self.run_dir, self.wait_s = Path(run_dir), wait_s

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size == 1:
            return
        strategy, marker = trainer.strategy, self.run_dir / MARKER
        token = strategy.broadcast(uuid.uuid4().hex)  # rank 0's, so a marker left by an earlier run never counts
        if trainer.is_global_zero:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(token)
        strategy.barrier("shared_run_dir")
        seen = _wait_for(marker, token, self.wait_s)
        everyone = strategy.reduce_boolean_decision(seen, all=True)  # a collective: every rank has looked
        if trainer.is_global_zero:
            marker.unlink(missing_ok=True)
        if not seen:
            raise UserError(
                f"{self.run_dir}: rank {trainer.global_rank} on {socket.gethostname()} does not see the run directory "
                "rank 0 made; run.dir must be on a filesystem every node sees"
            )
        if not everyone:
            raise UserError(
                f"{self.run_dir}: another node does not see the run directory rank 0 made (its rank says which); "
                "run.dir must be on a filesystem every node sees"
            )


def _wait_for(marker: Path, token: str, wait_s: float) -> bool:
    """Whether ``marker`` holds ``token`` within ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if marker.read_text() == token:
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(1.0, wait_s))
