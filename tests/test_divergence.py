"""The non-finite stop for a fused AdamW: the flagged update is skipped on the device, the stop follows a step
later, and nothing in a step waits on the device to decide it."""

import pytest
import torch
from conftest import FixedDataModule

from pico_lightning.training import module as module_mod
from pico_lightning.training.divergence import DivergenceGuard, TrainingDivergedError
from pico_lightning.training.train import fit


def test_a_flagged_step_changes_nothing_and_is_read_one_step_late():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=0.1, fused=True)
    guard = DivergenceGuard()
    assert guard.applies_to(optimizer) and not guard.applies_to(torch.optim.AdamW([param], foreach=True))
    param.grad = torch.tensor([1.0, float("nan"), 1.0])
    guard.record(torch.linalg.vector_norm(param.grad), optimizer, step=4, tasks=["negate"])
    optimizer.step()
    assert torch.equal(param.detach(), torch.ones(3)) and int(optimizer.state[param]["step"]) == 0
    assert guard.diverged() is None  # the latest record waits for the next step
    param.grad = torch.ones(3)
    guard.record(torch.linalg.vector_norm(param.grad), optimizer, step=5, tasks=["copy"])
    optimizer.step()
    assert torch.isfinite(param).all() and not torch.equal(param.detach(), torch.ones(3))
    flagged = guard.diverged()
    assert (flagged.step, flagged.tasks) == (4, ("negate",))
    assert guard.diverged(include_latest=True) is None  # step 5 was fine


def test_training_with_a_fused_optimizer_stops_on_a_non_finite_gradient(tiny_cfg, monkeypatch):
    """The CPU builds a foreach AdamW; force the fused one the GPU path uses."""
    build = module_mod.build_optimizer
    monkeypatch.setattr(
        module_mod, "build_optimizer", lambda params, lr, wd, precision, cuda: build(params, lr, wd, precision, True)
    )
    with pytest.raises(TrainingDivergedError, match=r"step 0; batch tasks: negate"):
        fit(tiny_cfg, FixedDataModule(panel_size=16, non_finite=True))
