"""train.compile: the repeated blocks are compiled in place and compute what they did (Dynamo's eager backend,
so the test stays fast; the bench's compile rows run inductor)."""

import pytest
import torch

from pico_lightning.config import LoraConfig, ModelConfig
from pico_lightning.model.backbone import build_parts
from pico_lightning.model.compilation import compile_blocks
from pico_lightning.model.conditioning import latent_image_ids, predict_velocity
from pico_lightning.model.lora import add_lora


def forward_backward(transformer: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    inputs = (
        torch.randn(1, 16, 48, generator=generator),  # (B, L, 4C) noisy tokens of an 8x8 latent
        torch.randn(1, 16, 64, generator=generator),  # (B, L, 4C + 4s^2) condition
        torch.full((1,), 0.5),
        torch.full((1,), 30.0),
        torch.randn(1, 4, 32, generator=generator),
        torch.randn(1, 32, generator=generator),
        latent_image_ids(8, 8, "cpu", torch.float32),
    )
    transformer.zero_grad()
    pred = predict_velocity(transformer, *inputs)
    pred.square().mean().backward()
    lora = [p.grad for n, p in transformer.named_parameters() if "lora_B" in n]
    return pred.detach(), torch.stack([g.norm() for g in lora])


@pytest.mark.slow  # ~35 s on 2 cores: Dynamo traces the checkpointed blocks
def test_compiled_blocks_match_eager():
    transformer = build_parts(ModelConfig(preset="small")).transformer
    add_lora(transformer, LoraConfig())
    transformer.enable_gradient_checkpointing()
    expected = forward_backward(transformer)
    assert compile_blocks(transformer, backend="eager") == 4  # 2 double + 2 single blocks
    got = forward_backward(transformer)
    assert torch.allclose(got[0], expected[0], atol=1e-6)
    assert torch.allclose(got[1], expected[1], rtol=1e-5)
