"""``train.attention_backend`` for a whole fit, as a callback (the kernels themselves: model/attention.py)."""

from __future__ import annotations

import lightning.pytorch as pl
from torch.nn.attention import SDPBackend

from pico_lightning.model.sdpa import sdpa_backends, set_backends


class AttentionBackend(pl.Callback):
    """Applies ``train.attention_backend`` for a whole fit: every step's forward, backward, checkpoint recompute and
    the in-loop evaluation; the flags are restored when the fit ends or fails."""

    def __init__(self, name: str):
        self.backends = sdpa_backends(name)
        self._previous: tuple[SDPBackend, ...] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._previous is None:
            self._previous = set_backends(self.backends)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()  # Lightning does not call Callback.teardown after an exception

    def _restore(self) -> None:
        if self._previous is not None:
            set_backends(self._previous)
            self._previous = None
