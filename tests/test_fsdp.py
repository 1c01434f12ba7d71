"""FSDP readiness, tested where it can be on a CPU.

Neither Lightning's FSDPStrategy (`accelerator='cpu'` is refused) nor torch's FSDP1 ("FSDP needs a non-CPU
accelerator device") runs without a GPU, so `train.strategy=fsdp` itself is a GPU check. These tests cover our side:
the strategy we configure, the LoRA export from a gathered full state dict, and that a collective (the gather, the
non-finite vote) is entered by every rank, not hidden in rank-zero code.
"""

from types import SimpleNamespace

import pytest
import torch
from diffusers.models.transformers.transformer_flux import FluxSingleTransformerBlock, FluxTransformerBlock
from lightning.pytorch.strategies import FSDPStrategy
from safetensors.torch import load_file

from pico_lightning.config import LoraConfig, ModelConfig, TrainConfig
from pico_lightning.model.backbone import build_parts
from pico_lightning.model.lora import WEIGHTS_NAME, add_lora, export_lora
from pico_lightning.training.fit_end import export_run_lora
from pico_lightning.training.module import PicoModule, TrainingDivergedError
from pico_lightning.training.strategy import build_strategy


def _lora_transformer():
    parts = build_parts(ModelConfig())
    add_lora(parts.transformer, LoraConfig(rank=4, alpha=8), seed=0)
    for name, param in parts.transformer.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, generator=torch.Generator().manual_seed(len(name)))
    return parts.transformer


def test_fsdp_strategy_wraps_each_block_and_keeps_original_parameters():
    strategy = build_strategy(TrainConfig(strategy="fsdp"))
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["use_orig_params"] is True  # frozen base and LoRA weights share FSDP units
    policy = strategy.kwargs["auto_wrap_policy"]
    block = FluxTransformerBlock(dim=32, num_attention_heads=2, attention_head_dim=16)
    single = FluxSingleTransformerBlock(dim=32, num_attention_heads=2, attention_head_dim=16)
    assert all(policy._module_classes.__contains__(type(m)) for m in (block, single))
    assert build_strategy(TrainConfig(strategy="ddp")) == "ddp"


def test_export_from_a_gathered_state_dict_equals_the_module_export(tmp_path):
    transformer = _lora_transformer()
    export_lora(transformer, tmp_path / "own")
    gathered = {k: v.clone() for k, v in transformer.state_dict().items()}  # what FSDP's full state dict holds
    with torch.no_grad():
        for param in transformer.parameters():
            param.zero_()  # rank zero's local shards would be partial: the export must not read them
    export_lora(transformer, tmp_path / "gathered", gathered)
    own, got = (load_file(tmp_path / d / WEIGHTS_NAME) for d in ("own", "gathered"))
    assert own.keys() == got.keys() and all(torch.equal(own[k], got[k]) for k in own)


def test_every_rank_enters_the_gather_and_only_rank_zero_writes(tmp_path):
    calls = []
    module = SimpleNamespace(transformer=_lora_transformer())
    strategy = SimpleNamespace(lightning_module_state_dict=lambda: calls.append("gather") or {})
    export_run_lora(SimpleNamespace(strategy=strategy, is_global_zero=False), module, tmp_path)
    assert calls == ["gather"] and not (tmp_path / "lora").exists()


def test_a_non_finite_gradient_on_another_rank_stops_this_one(tiny_cfg):
    """Under FSDP gradients are local shards: the stop is a vote over ranks, so no rank waits on one that raised."""
    module = PicoModule(tiny_cfg.model, tiny_cfg.train, {"": (torch.zeros(4, 32), torch.zeros(32))})
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.ones(3)  # finite here
    votes = []
    strategy = SimpleNamespace(reduce_boolean_decision=lambda bad, all: votes.append((bad, all)) or True)
    module.trainer = SimpleNamespace(strategy=strategy, global_step=7, precision_plugin=SimpleNamespace())
    with pytest.raises(TrainingDivergedError, match="step 7"):
        module.configure_gradient_clipping(torch.optim.SGD([param], lr=1.0), gradient_clip_val=1.0)
    assert votes == [(False, False)]  # this rank voted "fine", another rank's "bad" won
