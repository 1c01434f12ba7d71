"""``train.attention_backend`` for a whole fit, as a callback (the kernels themselves: model/sdpa.py)."""

from __future__ import annotations

from contextlib import ExitStack

import lightning.pytorch as pl

from pico_lightning.model.sdpa import attention_backend, check_device, sdpa_backends


class AttentionBackend(pl.Callback):
    """Applies ``train.attention_backend`` for a whole fit: every step's forward, backward, checkpoint recompute and
    the in-loop evaluation; the flags (and, for fa3/fa4, torch's flash implementation) are restored when the fit
    ends or fails."""

    def __init__(self, name: str):
        self.name, self.backends = name, sdpa_backends(name)
        self._held: ExitStack | None = None  # the open attention_backend context, from setup to teardown

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._held is None:
            check_device(self.name, trainer.strategy.root_device)  # before configure_model builds the base
            self._held = ExitStack()
            self._held.enter_context(attention_backend(self.name))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()  # Lightning does not call Callback.teardown after an exception

    def _restore(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None
