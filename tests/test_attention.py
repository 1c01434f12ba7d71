"""train.attention_backend: the backends each name allows, and a fit runs with them, checkpoint recompute included."""

import lightning.pytorch as pl
import pytest
import torch
from conftest import quiet_trainer
from torch.nn.attention import SDPBackend
from torch.utils.checkpoint import checkpoint

from pico_lightning.model.sdpa import attention_backend, enabled_backends, sdpa_backends
from pico_lightning.training.attention_backend import AttentionBackend

ALL = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH)


def test_backends_per_name():
    assert sdpa_backends("auto") == (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)
    assert sdpa_backends("flash") == (SDPBackend.FLASH_ATTENTION,)
    assert sdpa_backends("efficient") == (SDPBackend.EFFICIENT_ATTENTION,)
    assert sdpa_backends("cudnn") == (SDPBackend.CUDNN_ATTENTION,)
    assert sdpa_backends("math") == (SDPBackend.MATH,)
    with pytest.raises(ValueError, match="train.attention_backend"):
        sdpa_backends("fast")


@pytest.mark.parametrize("name", ["auto", "cudnn", "math"])
def test_context_sets_and_restores_flags(name):
    before = enabled_backends()
    assert before == ALL  # torch's default: everything enabled
    with attention_backend(name):
        assert enabled_backends() == sdpa_backends(name)
    assert enabled_backends() == before


class Attend(torch.nn.Module):
    """One self-attention through SDPA; records cuDNN's flag and grad mode at every forward (recompute included)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 24)
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x):
        self.seen.append((torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()))
        q, k, v = self.proj(x).unflatten(-1, (3, 2, 4)).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, T, D)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)


class Checkpointed(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.attend = Attend()

    def training_step(self, batch, batch_idx):
        return checkpoint(self.attend, batch, use_reentrant=False).square().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_fit_runs_without_cudnn_attention_including_recompute():
    module = Checkpointed()
    loader = torch.utils.data.DataLoader(torch.randn(3, 2, 5, 8), batch_size=None)
    trainer = quiet_trainer(max_steps=3, callbacks=[AttentionBackend("auto")])
    trainer.fit(module, loader)
    assert len(module.attend.seen) == 2 * 3  # each step: the forward, then its recompute inside backward
    assert all(seen == (False, True) for seen in module.attend.seen)  # cuDNN off, math allowed, throughout
    assert enabled_backends() == ALL  # restored at teardown


def test_flags_restored_when_fit_fails():
    class Failing(Checkpointed):
        def training_step(self, batch, batch_idx):
            raise RuntimeError("boom")

    trainer = quiet_trainer(max_steps=1, callbacks=[AttentionBackend("math")])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Failing(), torch.utils.data.DataLoader(torch.randn(1, 2, 5, 8), batch_size=None))
    assert enabled_backends() == ALL
