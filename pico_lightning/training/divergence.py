"""The non-finite-gradient stop, without a host sync in every step when the optimizer is fused.

Reading a CUDA flag on the host (``bool(norm.isfinite())``) waits for the whole backward pass, and the device then
idles while the host launches the optimizer and the next step. With a fused AdamW the stop needs no such wait:

1. :meth:`DivergenceGuard.record` hands the flag to the optimizer as ``found_inf``, which fused AdamW reads exactly
   as under a GradScaler: on the device, a step with a non-finite gradient norm changes no weight and no moment,
   and its step count is rolled back. The flag is also copied to pinned host memory, asynchronously.
2. :meth:`DivergenceGuard.diverged` reads the copies one optimizer step later (at the end of the next batch), by
   then long finished, and the module raises. Every rank records the same flag (the norm is taken over the whole
   model, across ranks under FSDP) and reads it at the same point, so all ranks stop together, with no collective.

A non-fused optimizer (the CPU, or 16-mixed) has no ``found_inf``: :meth:`DivergenceGuard.check` stops at once
there, as a vote over ranks (FSDP holds gradient shards, so one rank alone raising would leave the others waiting
in a collective). Either way the stop is a :class:`TrainingDivergedError` naming the step and its batch's tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pico_lightning.errors import UserError


class TrainingDivergedError(UserError):
    """A non-finite loss or gradient: training stops before the bad update is applied or saved."""


@dataclass(frozen=True)
class StepFlag:
    """One optimizer step's "norm was not finite" flag, on the host (or about to be: ``copied`` is its event)."""

    host: torch.Tensor
    copied: torch.cuda.Event | None
    step: int
    tasks: tuple[str, ...]

    def is_set(self) -> bool:
        if self.copied is not None:
            self.copied.synchronize()  # waits for this copy only, not for the work queued after it
        return bool(self.host)


class DivergenceGuard:
    """The stop on a non-finite gradient norm: at once, or for a fused optimizer from flags read one step late."""

    def __init__(self) -> None:
        self._pending: list[StepFlag] = []
        self.tasks: list[str] = []  # the current batch's tasks, for the message

    def check(
        self, norm: torch.Tensor, optimizer: torch.optim.Optimizer, step: int, any_rank: Callable[[bool], bool]
    ) -> None:
        """After clipping, before ``optimizer.step()``: record the flag of a fused optimizer, else stop now if
        ``norm`` is not finite on any rank (``any_rank``: the strategy's vote, a collective every rank enters)."""
        if self.applies_to(optimizer):
            self.record(norm, optimizer, step, self.tasks)
        elif any_rank(not bool(norm.isfinite())):
            raise TrainingDivergedError(_message(step, self.tasks))

    def raise_if_diverged(self, include_latest: bool = False) -> None:
        """Stop on the first flagged step that :meth:`diverged` finds."""
        flagged = self.diverged(include_latest)
        if flagged is not None:
            raise TrainingDivergedError(_message(flagged.step, flagged.tasks))

    @staticmethod
    def applies_to(optimizer: torch.optim.Optimizer) -> bool:
        """Whether ``optimizer`` skips a flagged step on the device (a fused Adam/AdamW reads ``found_inf``)."""
        return bool(optimizer.defaults.get("fused"))

    def record(self, norm: torch.Tensor, optimizer: torch.optim.Optimizer, step: int, tasks: list[str]) -> None:
        """Make the coming ``optimizer.step()`` a no-op on the device if ``norm`` is not finite; remember the flag."""
        flag = (~norm.isfinite()).float()
        optimizer.found_inf = flag
        copied = None
        if flag.is_cuda:
            host = torch.empty((), dtype=flag.dtype, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record()
        else:
            host = flag
        self._pending.append(StepFlag(host, copied, step, tuple(tasks)))

    def diverged(self, include_latest: bool = False) -> StepFlag | None:
        """The first flagged step among the records older than the latest (all of them with ``include_latest``,
        e.g. when training ends); those records are consumed."""
        ready = self._pending if include_latest else self._pending[:-1]
        self._pending = self._pending[len(ready) :]
        return next((flag for flag in ready if flag.is_set()), None)


def _message(step: int, tasks) -> str:
    return f"non-finite loss/gradient at step {step}; batch tasks: {', '.join(tasks)}"
