"""model.base_quantization: an 8-bit frozen base under float32 LoRA keeps the loss of the bf16 base (needs torchao)."""

import pytest
import torch

from pico_lightning.config import LoraConfig, ModelConfig
from pico_lightning.errors import UserError
from pico_lightning.model.backbone import build_parts
from pico_lightning.model.conditioning import latent_image_ids, predict_velocity
from pico_lightning.model.lora import add_lora
from pico_lightning.model.quantize import quantize_base

LOSS_RTOL = 0.02  # int8 moves this loss by ~1e-4, float8 by ~1e-3 (relative); a broken base moves it by O(1)


def loss_and_grads(kind: str) -> tuple[float, float, torch.nn.Module]:
    """A squared-error loss of the tiny bf16 DiT (2 + 2 blocks) with LoRA on a fixed batch, and the LoRA grad norm."""
    transformer = build_parts(ModelConfig(dtype="bfloat16", preset="demo-base")).transformer
    quantized = quantize_base(transformer, kind)
    assert quantized == (0 if kind == "none" else 2 * 14 + 2 * 6)  # Linears per double / single block, adaLN included
    add_lora(transformer, LoraConfig())
    generator = torch.Generator().manual_seed(0)
    tokens = 64  # a 16x16 latent grid, packed 2x2
    latents = torch.randn(2, tokens, 48, generator=generator).bfloat16()
    condition = torch.randn(2, tokens, 64, generator=generator).bfloat16()
    text = torch.randn(2, 8, 32, generator=generator).bfloat16()
    pooled = torch.randn(2, 32, generator=generator).bfloat16()
    timestep, guidance = torch.full((2,), 0.5, dtype=torch.bfloat16), torch.full((2,), 30.0)
    ids = latent_image_ids(16, 16, "cpu", torch.bfloat16)
    pred = predict_velocity(transformer, latents, condition, timestep, guidance, text, pooled, ids)
    loss = (pred.float() - 1.0).square().mean()
    loss.backward()
    lora_grads = [p.grad for n, p in transformer.named_parameters() if "lora_" in n]
    assert all(g is not None and g.dtype == torch.float32 for g in lora_grads)
    assert not any(p.requires_grad for n, p in transformer.named_parameters() if "lora_" not in n)
    return float(loss), float(torch.stack([g.norm() for g in lora_grads]).norm()), transformer


@pytest.mark.parametrize("kind", ["int8", "float8"])
def test_quantized_base_keeps_the_loss(kind):
    torchao_utils = pytest.importorskip("torchao.utils")
    reference_loss, reference_grad, _ = loss_and_grads("none")
    loss, grad, transformer = loss_and_grads(kind)
    weight = transformer.transformer_blocks[0].attn.to_q.base_layer.weight
    assert isinstance(weight, torchao_utils.TorchAOBaseTensor)  # stored quantized, under peft's LoRA wrapper
    assert transformer.x_embedder.weight.dtype == torch.bfloat16  # outside the blocks: untouched
    assert loss == pytest.approx(reference_loss, rel=LOSS_RTOL)
    assert grad == pytest.approx(reference_grad, rel=5 * LOSS_RTOL)


def test_unknown_kind_names_the_key():
    pytest.importorskip("torchao.quantization")
    with pytest.raises(UserError, match="model.base_quantization"):
        quantize_base(torch.nn.Linear(2, 2), "int4")
