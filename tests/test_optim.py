"""Fused AdamW with gradient clipping under bf16-mixed: Lightning's refusal reproduced, and our clipping path."""

import math

import lightning.pytorch as pl
import pytest
import torch
from conftest import quiet_trainer

from pico_lightning.training.optim import build_optimizer, build_schedule, clip_gradients


class Tiny(pl.LightningModule):
    """A linear model whose loss gradient is far above the clipping norm; records the norm each step applied."""

    def __init__(self, clip_in_module: bool):
        super().__init__()
        self.layer = torch.nn.Linear(4, 4)
        self.clip_in_module = clip_in_module
        self.applied_norms: list[float] = []
        self.norms_before: list[float] = []

    def training_step(self, batch, batch_idx):
        return 100.0 * self.layer(batch).square().mean()

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=1e-3, fused=True)  # what PicoModule picks on CUDA
        optimizer.register_step_post_hook(self._record)
        return optimizer

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if not self.clip_in_module:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        norm = clip_gradients(optimizer, gradient_clip_val, self.trainer.precision_plugin.scaler)
        self.norms_before.append(float(norm))

    def _record(self, optimizer, args, kwargs):
        grads = [p.grad for p in self.parameters()]
        self.applied_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


def fit(module: Tiny) -> None:
    trainer = quiet_trainer(max_steps=3, precision="bf16-mixed", gradient_clip_val=1.0)
    trainer.fit(module, torch.utils.data.DataLoader(torch.randn(3, 8, 4) + 3, batch_size=None))


def test_lightning_refuses_to_clip_a_fused_optimizer():
    """The crash at step 1 of flux_fill.yaml on a GPU, on the CPU (torch >= 2.4 has a fused CPU AdamW)."""
    with pytest.raises(RuntimeError, match="does not allow for gradient clipping"):
        fit(Tiny(clip_in_module=False))


def test_clipping_in_the_module_trains_a_fused_optimizer():
    module = Tiny(clip_in_module=True)
    fit(module)
    assert len(module.applied_norms) == 3
    assert all(norm > 10.0 for norm in module.norms_before)  # clipping had work to do
    assert all(norm <= 1.0 + 1e-4 for norm in module.applied_norms)


def test_clip_gradients_returns_the_norm_before_clipping():
    layer = torch.nn.Linear(3, 1)
    layer.weight.grad, layer.bias.grad = torch.full((1, 3), 4.0), torch.full((1,), 4.0)  # norm 8
    optimizer = build_optimizer(layer.parameters(), 1e-3, 0.0, "32-true", device_is_cuda=False)
    assert float(clip_gradients(optimizer, 2.0)) == pytest.approx(8.0)
    assert float(torch.cat([layer.weight.grad.flatten(), layer.bias.grad]).norm()) == pytest.approx(2.0, rel=1e-5)


def test_clip_refuses_scaled_gradients_of_a_fused_optimizer():
    optimizer = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), fused=True)
    with pytest.raises(ValueError, match="scaled"):
        clip_gradients(optimizer, 1.0, torch.amp.GradScaler("cpu"))


@pytest.mark.parametrize(
    ("precision", "cuda", "fused"),
    [("bf16-mixed", True, True), ("32-true", True, True), ("16-mixed", True, False), ("bf16-mixed", False, False)],
)
def test_optimizer_choice(precision, cuda, fused):
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(2))], 1e-3, 1e-2, precision, device_is_cuda=cuda)
    assert bool(optimizer.defaults["fused"]) == fused and bool(optimizer.defaults["foreach"]) != fused
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["weight_decay"] == 1e-2


def lrs(schedule: str, warmup: int, max_steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_schedule(optimizer, schedule, warmup, max_steps)
    values = []
    for _ in range(max_steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_schedules():
    assert lrs("constant", 4, 8) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]
    assert lrs("constant", 0, 3) == [1.0, 1.0, 1.0]
    cosine = lrs("cosine", 2, 10)
    assert cosine[:3] == [0.0, 0.5, 1.0]
    assert cosine[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert all(a > b for a, b in zip(cosine[2:], cosine[3:]))
