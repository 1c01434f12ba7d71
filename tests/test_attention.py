"""train.attention_backend: the backends each name allows, and a fit runs with them, checkpoint recompute included;
fa3/fa4 activate torch's FlashAttention implementation (faked here: neither package nor a GPU is needed)."""

import re
import sys
from typing import get_args, get_type_hints

import lightning.pytorch as pl
import pytest
import torch
from conftest import quiet_trainer
from torch.nn.attention import (
    SDPBackend,
    _registry,
    activate_flash_attention_impl,
    current_flash_attention_impl,
)
from torch.utils.checkpoint import checkpoint

from pico_lightning.config.train import TrainConfig
from pico_lightning.errors import UserError
from pico_lightning.model.sdpa import BACKENDS, attention_backend, check_device, enabled_backends, sdpa_backends
from pico_lightning.training import attention_backend as callback_module
from pico_lightning.training.attention_backend import AttentionBackend

ALL = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH)


def test_backends_per_name():
    assert sdpa_backends("auto") == (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)
    assert sdpa_backends("flash") == (SDPBackend.FLASH_ATTENTION,)
    assert sdpa_backends("efficient") == (SDPBackend.EFFICIENT_ATTENTION,)
    assert sdpa_backends("cudnn") == (SDPBackend.CUDNN_ATTENTION,)
    assert sdpa_backends("math") == (SDPBackend.MATH,)
    assert sdpa_backends("fa3") == sdpa_backends("fa4") == (SDPBackend.FLASH_ATTENTION,)
    with pytest.raises(ValueError, match="train.attention_backend"):
        sdpa_backends("fast")


def test_config_offers_every_backend():
    assert get_args(get_type_hints(TrainConfig)["attention_backend"]) == tuple(BACKENDS)


@pytest.mark.parametrize("name", ["auto", "cudnn", "math"])
def test_context_sets_and_restores_flags(name):
    before = enabled_backends()
    assert before == ALL  # torch's default: everything enabled
    with attention_backend(name):
        assert enabled_backends() == sdpa_backends(name)
    assert enabled_backends() == before


class Attend(torch.nn.Module):
    """One self-attention through SDPA; records cuDNN's and math's flags and torch's flash implementation at every
    forward (recompute included)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 24)
        self.seen: list[tuple[bool, bool, str | None]] = []

    def forward(self, x):
        cudnn, math = torch.backends.cuda.cudnn_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()
        self.seen.append((cudnn, math, current_flash_attention_impl()))
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
    assert all(seen == (False, True, None) for seen in module.attend.seen)  # cuDNN off, math allowed, throughout
    assert enabled_backends() == ALL  # restored at teardown


def test_flags_restored_when_fit_fails():
    class Failing(Checkpointed):
        def training_step(self, batch, batch_idx):
            raise RuntimeError("boom")

    trainer = quiet_trainer(max_steps=1, callbacks=[AttentionBackend("math")])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Failing(), torch.utils.data.DataLoader(torch.randn(1, 2, 5, 8), batch_size=None))
    assert enabled_backends() == ALL


@pytest.fixture
def fake_impls(monkeypatch):
    """torch's registry with FA3 and FA4 replaced by fakes that activate without their packages (restored after the
    test); returns the implementations removed, in order."""
    removed = []

    class Handle:
        def __init__(self, impl: str):
            self.impl = impl

        def remove(self) -> None:
            removed.append(self.impl)

    for impl in ("FA3", "FA4"):
        monkeypatch.setitem(_registry._FLASH_ATTENTION_IMPLS, impl, lambda impl=impl: Handle(impl))
    monkeypatch.setattr(_registry, "_FLASH_ATTENTION_ACTIVE", None)
    return removed


@pytest.mark.parametrize(("name", "impl"), [("fa3", "FA3"), ("fa4", "FA4")])
def test_fa_context_activates_and_restores(name, impl, fake_impls):
    with attention_backend(name):
        assert enabled_backends() == (SDPBackend.FLASH_ATTENTION,)
        assert current_flash_attention_impl() == impl
    assert current_flash_attention_impl() is None
    assert fake_impls == [impl]
    assert enabled_backends() == ALL


def test_fa_context_reinstates_the_previous_impl_after_an_error(fake_impls):
    activate_flash_attention_impl("FA4")
    with pytest.raises(RuntimeError, match="boom"), attention_backend("fa3"):
        assert current_flash_attention_impl() == "FA3"
        raise RuntimeError("boom")
    assert current_flash_attention_impl() == "FA4"  # torch alone would fall back to its own FA2
    assert fake_impls == ["FA4", "FA3"]
    assert enabled_backends() == ALL


@pytest.mark.parametrize(("name", "module"), [("fa3", "flash_attn_interface"), ("fa4", "flash_attn.cute.interface")])
def test_missing_package_is_one_user_error_line(name, module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # the import fails even where the package is installed
    with pytest.raises(UserError) as caught, attention_backend(name):
        pass
    message = str(caught.value)
    assert re.fullmatch(
        rf"train\.attention_backend={name} needs .*`{re.escape(module)}`.* not importable here: .+", message
    )
    assert "\n" not in message
    assert current_flash_attention_impl() is None
    assert enabled_backends() == ALL


@pytest.mark.parametrize(
    ("name", "major", "runs"),
    [("fa3", 9, True), ("fa3", 8, False), ("fa3", 10, False), ("fa4", 9, True), ("fa4", 10, True), ("fa4", 12, False)],
)
def test_compute_capability(name, major, runs, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, 0))
    gpu = torch.device("cuda", 0)
    if runs:
        check_device(name, gpu)
    else:
        with pytest.raises(UserError, match=rf"train.attention_backend={name}: .* compute capability .*; cuda:0 is"):
            check_device(name, gpu)


def test_only_the_fa_kernels_need_cuda():
    for name in ("auto", "flash", "efficient", "cudnn", "math"):
        check_device(name, torch.device("cpu"))
    with pytest.raises(UserError, match="train.attention_backend=fa3: FlashAttention-3 runs on CUDA GPUs only"):
        check_device("fa3", torch.device("cpu"))


def test_fa_on_the_cpu_stops_the_fit_at_setup(fake_impls):
    module = Checkpointed()
    trainer = quiet_trainer(max_steps=1, callbacks=[AttentionBackend("fa4")])
    with pytest.raises(UserError, match="train.attention_backend=fa4: FlashAttention-4 runs on CUDA GPUs only"):
        trainer.fit(module, torch.utils.data.DataLoader(torch.randn(1, 2, 5, 8), batch_size=None))
    assert module.attend.seen == []  # no step ran
    assert current_flash_attention_impl() is None
    assert enabled_backends() == ALL


def test_fit_runs_with_fa3_throughout_including_recompute(fake_impls, monkeypatch):
    monkeypatch.setattr(callback_module, "check_device", lambda name, device: None)  # the CPU stands in for a GPU
    module = Checkpointed()
    trainer = quiet_trainer(max_steps=2, callbacks=[AttentionBackend("fa3")])
    trainer.fit(module, torch.utils.data.DataLoader(torch.randn(2, 2, 5, 8), batch_size=None))
    assert len(module.attend.seen) == 2 * 2  # each step: the forward, then its recompute inside backward
    assert all(seen == (False, False, "FA3") for seen in module.attend.seen)  # flash only, FA3 active, throughout
    assert current_flash_attention_impl() is None
    assert fake_impls == ["FA3"]
    assert enabled_backends() == ALL
