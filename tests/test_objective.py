"""The training objective's VAE encodes: the grid and the masked grid go through the autoencoder as one batch, and
its split gives what the two separate encodes (the grid, then inference's fill_condition) give."""

from functools import partial

import pytest
import torch
from diffusers.pipelines.flux.pipeline_flux_fill import retrieve_latents

from pico_lightning import objective
from pico_lightning.config import ModelConfig, TrainConfig
from pico_lightning.model import autoencoder as autoencoder_module
from pico_lightning.model.backbone import build_parts
from pico_lightning.model.conditioning import TextInputs, fill_condition, pack_latents


def grids_and_masks(batch: int = 2, height: int = 32, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Random grids in [-1, 1] and a mask over each grid's right half, 1 = generate."""
    grid = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(batch, 1, height, width)
    mask[..., width // 2 :] = 1
    return grid, mask


def separate_encodes(autoencoder, grid, mask, generator):
    """The step's encodes as two calls, as before the batched one: the grid, then the masked grid as inference
    conditions on it."""
    return pack_latents(autoencoder.encode(grid, generator=generator)), fill_condition(
        autoencoder, grid, mask, generator
    )


def text_inputs(batch: int) -> TextInputs:
    """Random embeddings at the tiny DiT's widths (joint and pooled 32): the objective does not care what they say."""
    generator = torch.Generator().manual_seed(1)
    return TextInputs(torch.randn(batch, 8, 32, generator=generator), torch.randn(batch, 32, generator=generator))


def test_the_batched_kl_encode_splits_into_the_grid_and_the_masked_grid(monkeypatch):
    """At the posterior's mode (no sampling) a real AutoencoderKL's batched encode gives the separate encodes'
    tokens: grids first, masked grids second (the halves swapped differ on the masked tokens)."""
    monkeypatch.setattr(autoencoder_module, "retrieve_latents", partial(retrieve_latents, sample_mode="argmax"))
    autoencoder = build_parts(ModelConfig(preset="tiny-kl")).autoencoder
    grid, mask = grids_and_masks()
    with torch.no_grad():
        batched = objective.encode_fill_inputs(autoencoder, grid, mask, None)
        separate = separate_encodes(autoencoder, grid, mask, None)
    assert batched[0].shape == (2, 2 * 4, 4 * 16) and batched[1].shape == (2, 2 * 4, 4 * 16 + 4 * 64)
    torch.testing.assert_close(batched[0], separate[0])  # float32; the grid's layout differs (channels-last now)
    torch.testing.assert_close(batched[1], separate[1])
    assert (batched[0] - batched[1][..., :64]).abs().min() > 0  # the halves differ in every value: a swap would show


def test_a_training_step_encodes_once_with_both_halves(monkeypatch):
    parts = build_parts(ModelConfig(preset="tiny"))
    calls, encode = [], parts.autoencoder.encode

    def counted(images, **kwargs):
        calls.append(images.shape)
        return encode(images, **kwargs)

    monkeypatch.setattr(parts.autoencoder, "encode", counted)
    grid, mask = grids_and_masks(batch=3)
    objective.fill_loss(parts, grid, mask, text_inputs(3), torch.Generator().manual_seed(0), TrainConfig(), 30.0)
    assert calls == [(6, 3, 32, 64)]


@pytest.mark.parametrize("loss_region", ["target", "grid"])
def test_the_pixel_shuffle_loss_is_bit_identical_to_the_separate_encodes(monkeypatch, loss_region):
    """PixelShuffle draws nothing and is exact in any layout, so batching changes no bit of the loss."""
    parts, cfg = build_parts(ModelConfig(preset="tiny")), TrainConfig(loss_region=loss_region)
    grid, mask = grids_and_masks()

    def loss() -> torch.Tensor:
        with torch.no_grad():
            return objective.fill_loss(parts, grid, mask, text_inputs(2), torch.Generator().manual_seed(0), cfg, 30.0)

    batched = loss()
    monkeypatch.setattr(objective, "encode_fill_inputs", separate_encodes)
    assert torch.equal(batched, loss())
