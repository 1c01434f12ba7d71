"""Our sampler against stock diffusers FluxFillPipeline on a tiny FLUX.1-Fill directory."""

import numpy as np
import pytest
import torch
from diffusers import FluxFillPipeline
from PIL import Image
from support import sample

from pico_lightning import panels
from pico_lightning.config import ModelConfig
from pico_lightning.inference.loading import load_inference_model
from pico_lightning.model import conditioning
from pico_lightning.model.backbone import build_parts, kl_vae
from pico_lightning.model.conditioning import TextInputs

LAYOUT = panels.Layout(2, 2, 32)
STEPS, GUIDANCE, SEED, PROMPT = 4, 30.0, 3, "Segment"


@pytest.fixture(scope="module")
def grid_uint8():
    return np.random.default_rng(0).integers(0, 256, (LAYOUT.height, LAYOUT.width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def stock(tiny_flux_dir, grid_uint8):
    """The stock pipeline's latents and image, and how many times it called the transformer."""
    pipe = FluxFillPipeline.from_pretrained(tiny_flux_dir, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    calls = []
    pipe.transformer.register_forward_hook(lambda *args: calls.append(1))
    mask = Image.fromarray((panels.target_mask(LAYOUT)[0].numpy() * 255).astype(np.uint8))
    kwargs = dict(
        prompt=PROMPT,
        image=Image.fromarray(grid_uint8),
        mask_image=mask,
        height=LAYOUT.height,
        width=LAYOUT.width,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
    )  # the pipeline's default max_sequence_length (512), as ours for a pretrained directory
    latents = pipe(**kwargs, generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    image = pipe(**kwargs, generator=torch.Generator().manual_seed(SEED)).images[0]
    return latents, np.asarray(image), len(calls) // 2


@pytest.fixture(scope="module")
def ours(tiny_flux_dir, grid_uint8, tmp_path_factory):
    cfg = ModelConfig(pretrained_dir=str(tiny_flux_dir), text_cache_dir=str(tmp_path_factory.mktemp("text")))
    model = load_inference_model(cfg, device="cpu")
    grid = panels.to_tensor(grid_uint8)[None]
    image, state = sample(
        model.parts.transformer,
        model.parts.autoencoder,
        model.parts.scheduler,
        grid,
        panels.target_mask(LAYOUT)[None],
        model.text(PROMPT),
        STEPS,
        GUIDANCE,
        SEED,
    )
    return state, panels.to_uint8(image[0])


def test_latents_match_diffusers(stock, ours):
    latents, _, _ = stock
    state, _ = ours
    assert state.latents.shape == latents.shape
    assert (state.latents - latents).abs().max() <= 1e-5


def test_png_matches_diffusers(stock, ours):
    _, image, _ = stock
    _, png = ours
    assert np.abs(png.astype(int) - image.astype(int)).max() <= 1


def test_same_number_of_transformer_calls(stock, ours):
    _, _, calls = stock
    state, _ = ours
    assert calls == STEPS and state.model_evaluations == STEPS


def test_bf16_matches_diffusers(tiny_flux_dir, grid_uint8):
    """In bf16 our latents equal the stock pipeline's bit for bit, and the PNG is within 1/255.

    The one difference there was: the VAE's conv kernels, and so their bf16 round-off, depend on the picture's memory
    layout, and the pipeline's PIL preprocessing hands its VAE a channels-last picture (model/conditioning.py). The
    remaining PNG difference is the pipeline's postprocessing, which maps to [0, 1] in bf16 before rounding.
    """
    pipe = FluxFillPipeline.from_pretrained(tiny_flux_dir, local_files_only=True, torch_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(1)
    text = TextInputs(torch.randn(1, 8, 32, generator=generator), torch.randn(1, 32, generator=generator))
    text = TextInputs(text.prompt_embeds.bfloat16(), text.pooled_prompt_embeds.bfloat16())
    kwargs = dict(
        image=Image.fromarray(grid_uint8),
        mask_image=Image.fromarray((panels.target_mask(LAYOUT)[0].numpy() * 255).astype(np.uint8)),
        prompt_embeds=text.prompt_embeds,
        pooled_prompt_embeds=text.pooled_prompt_embeds,
        height=LAYOUT.height,
        width=LAYOUT.width,
        num_inference_steps=8,
        guidance_scale=GUIDANCE,
    )
    latents = pipe(**kwargs, generator=torch.Generator().manual_seed(SEED), output_type="latent").images
    image = np.asarray(pipe(**kwargs, generator=torch.Generator().manual_seed(SEED)).images[0])
    parts = build_parts(ModelConfig(pretrained_dir=str(tiny_flux_dir), dtype="bfloat16"))
    grid, mask = panels.to_tensor(grid_uint8)[None], panels.target_mask(LAYOUT)[None]
    ours, state = sample(parts.transformer, parts.autoencoder, parts.scheduler, grid, mask, text, 8, GUIDANCE, SEED)
    assert state.latents.dtype == latents.dtype == torch.bfloat16
    assert torch.equal(state.latents, latents)
    assert np.abs(panels.to_uint8(ours[0]).astype(int) - image.astype(int)).max() <= 1


def test_conditioning_matches_pipeline_helpers():
    """Our scale-generic packing equals the pipeline's at s = 8."""
    latents = torch.randn(2, 16, 8, 12)
    assert torch.equal(conditioning.pack_latents(latents), FluxFillPipeline._pack_latents(latents, 2, 16, 8, 12))
    tokens = conditioning.pack_latents(latents)
    assert torch.equal(conditioning.unpack_latents(tokens, 8, 12), latents)
    ids = FluxFillPipeline._prepare_latent_image_ids(1, 4, 6, "cpu", torch.float32)
    assert torch.equal(conditioning.latent_image_ids(8, 12, "cpu", torch.float32), ids)


def test_mask_packing_matches_pipeline_at_scale_8():
    mask = (torch.rand(1, 1, 64, 96) > 0.5).float()
    pipe = FluxFillPipeline(
        scheduler=None,
        vae=kl_vae((32, 32, 32, 32), 1),
        transformer=None,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
    )
    theirs, _ = pipe.prepare_mask_latents(mask, torch.zeros(1, 16, 8, 12), 1, 16, 1, 64, 96, torch.float32, "cpu", None)
    assert torch.equal(conditioning.pack_mask(mask, 8), theirs)
    assert conditioning.pack_mask(mask, 2).shape == (1, 32 * 48 // 4, 16)
