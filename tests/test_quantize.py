"""model.base_quantization: an 8-bit frozen base under float32 LoRA keeps the loss of the bf16 base (int8 needs
torchao; float8 is plain torch), and the float8 Linear's forward and backward."""

import pytest
import torch

from pico_lightning.config import LoraConfig, ModelConfig
from pico_lightning.errors import UserError
from pico_lightning.model.backbone import build_parts
from pico_lightning.model.conditioning import latent_image_ids, predict_velocity
from pico_lightning.model.float8 import FLOAT8, Float8FrozenLinear
from pico_lightning.model.lora import add_lora
from pico_lightning.model.quantize import quantize_base

LOSS_RTOL = 0.02  # int8 moves this loss by ~1e-4, float8 by ~2e-4 (relative); a broken base moves it by O(1)


def loss_and_grads(kind: str) -> tuple[float, float, torch.nn.Module]:
    """A squared-error loss of the tiny bf16 DiT (2 + 2 blocks) with LoRA on a fixed batch, and the LoRA grad norm."""
    transformer = build_parts(ModelConfig(dtype="bfloat16", preset="small")).transformer
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


def test_int8_base_keeps_the_loss():
    torchao_utils = pytest.importorskip("torchao.utils")
    transformer = assert_keeps_the_loss("int8")
    weight = transformer.transformer_blocks[0].attn.to_q.base_layer.weight
    assert isinstance(weight, torchao_utils.TorchAOBaseTensor)  # stored quantized, under peft's LoRA wrapper


def test_float8_base_keeps_the_loss():
    transformer = assert_keeps_the_loss("float8")
    layer = transformer.single_transformer_blocks[1].proj_out.base_layer
    assert isinstance(layer, Float8FrozenLinear) and layer.weight.dtype == FLOAT8  # under peft's LoRA wrapper
    assert transformer.dtype == torch.bfloat16  # what the objective casts its inputs to: not float8


def assert_keeps_the_loss(kind: str) -> torch.nn.Module:
    reference_loss, reference_grad, _ = loss_and_grads("none")
    loss, grad, transformer = loss_and_grads(kind)
    assert transformer.x_embedder.weight.dtype == torch.bfloat16  # outside the blocks: untouched
    assert loss == pytest.approx(reference_loss, rel=LOSS_RTOL)
    assert grad == pytest.approx(reference_grad, rel=5 * LOSS_RTOL)
    return transformer


def test_float8_linear_multiplies_in_float8_and_passes_the_input_gradient():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96).bfloat16()
    layer = Float8FrozenLinear(linear)
    assert layer.weight.dtype == FLOAT8 and layer.weight_scale.shape == (1, 96)
    dequantized = layer.weight.to(torch.float32) * layer.weight_scale.t()
    assert torch.allclose(dequantized, linear.weight.float(), rtol=0.07, atol=1e-6)  # e4m3: 3 mantissa bits
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16, requires_grad=True)
    out = layer(x)
    reference = linear(x.detach())
    assert out.dtype == torch.bfloat16 and out.shape == (2, 5, 96)
    assert (out - reference).float().norm() / reference.float().norm() < 0.06  # weights and activations in float8
    grad = torch.randn_like(out)
    out.backward(grad)
    assert torch.allclose(x.grad.float(), (grad @ dequantized.bfloat16()).float(), rtol=0.02, atol=0.02)
    assert not layer.weight.requires_grad and layer.weight.grad is None


def test_float8_linear_follows_autocast():
    layer = Float8FrozenLinear(torch.nn.Linear(32, 16))  # a float32 layer: outputs float32 outside autocast
    x = torch.randn(3, 32)
    assert layer(x).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16


def test_float8_leaves_sizes_it_cannot_multiply():
    transformer = torch.nn.Module()
    block = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.Linear(16, 10))
    transformer.transformer_blocks = torch.nn.ModuleList([block])
    assert quantize_base(transformer, "float8") == 1
    assert isinstance(block[0], Float8FrozenLinear) and type(block[1]) is torch.nn.Linear


def test_unknown_kind_names_the_key():
    with pytest.raises(UserError, match="model.base_quantization"):
        quantize_base(torch.nn.Linear(2, 2), "int4")
