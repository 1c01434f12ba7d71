"""How a fit ends: its last step is evaluated inside the fit, so the base can be dropped before Lightning's teardown.

Lightning's ``Strategy.teardown`` moves the whole LightningModule to the CPU after ``fit`` (single device and DDP):
for FLUX.1-Fill that is a ~24 GB device-to-host copy on every rank of a node at once, after the last checkpoint
(8 ranks: ~190 GB of host memory). Nothing needs the base by then when the last step has been evaluated, so:

- :class:`FinalEvaluation` makes the last step's evaluation happen inside the fit (so no ``trainer.validate``
  has to follow it, and the final evaluation also competes for the best checkpoint);
- ``PicoModule.on_train_end`` (``release_after_training``, set by `pico train`) then drops the model parts: module
  hooks run after every callback's, so the last checkpoint and the LoRA export come first.
"""

from __future__ import annotations

import lightning.pytorch as pl


class FinalEvaluation(pl.Callback):
    """Validate at ``max_steps`` whatever ``eval.every_n_steps`` is: asking the loop to stop there makes Lightning
    validate at that batch, as it does for an early stop."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True
