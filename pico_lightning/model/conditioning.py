"""FLUX Fill conditioning, generic in the autoencoder's scale factor s.

The DiT's input per image token is ``[packed noisy latents | packed masked-image latents | packed mask]``:
``4C + 4C + 4*s^2`` channels (C latent channels; FLUX.1-Fill-dev: 64 + 64 + 256 = 384). Latents are packed in
2x2 patches, so a token covers ``2s x 2s`` pixels. Matches FluxFillPipeline's ``_pack_latents``,
``prepare_mask_latents`` and ``_prepare_latent_image_ids`` (a test checks it at s = 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pico_lightning.model.autoencoder import Autoencoder


@dataclass
class TextInputs:
    """The text half of the conditioning, per grid: (B, Lt, D) prompt embeddings and (B, D) pooled ones."""

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor

    def expand(self, batch: int) -> TextInputs:
        return TextInputs(self.prompt_embeds.expand(batch, -1, -1), self.pooled_prompt_embeds.expand(batch, -1))


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """Group 2x2 latent patches into tokens: (B, C, h, w) -> (B, h/2 * w/2, 4C)."""
    batch, channels, height, width = latents.shape
    latents = latents.view(batch, channels, height // 2, 2, width // 2, 2)
    latents = latents.permute(0, 2, 4, 1, 3, 5)  # (B, h/2, w/2, C, 2, 2)
    return latents.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pack_latents`: (B, h/2 * w/2, 4C) -> (B, C, h, w), with h, w the latent size."""
    batch, _, channels = tokens.shape
    tokens = tokens.view(batch, height // 2, width // 2, channels // 4, 2, 2)
    tokens = tokens.permute(0, 3, 1, 4, 2, 5)  # (B, C, h/2, 2, w/2, 2)
    return tokens.reshape(batch, channels // 4, height, width)


def pack_mask(mask: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Pixel mask to mask tokens: (B, 1, H, W) -> (B, L, 4*s^2), each latent cell's s x s pixels as channels."""
    batch, _, height, width = mask.shape
    h, w = height // scale_factor, width // scale_factor
    cells = mask[:, 0].reshape(batch, h, scale_factor, w, scale_factor)  # (B, h, s, w, s)
    cells = cells.permute(0, 2, 4, 1, 3).reshape(batch, scale_factor * scale_factor, h, w)  # (B, s^2, h, w)
    return pack_latents(cells)


def token_region(mask: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """(B, 1, H, W) pixel mask -> (B, L) float: the fraction of each token's pixels that are masked."""
    return pack_mask(mask, scale_factor).mean(dim=-1)


def latent_image_ids(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Rotary ids of the packed image tokens, (h/2 * w/2, 3): (0, row, column) per token."""
    rows, cols = height // 2, width // 2
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] = torch.arange(rows)[:, None]
    ids[..., 2] = torch.arange(cols)[None, :]
    return ids.reshape(rows * cols, 3).to(device=device, dtype=dtype)


def fill_condition(
    autoencoder: Autoencoder, grid: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Masked-image latents and mask, packed and concatenated: (B, L, 4C + 4*s^2).

    ``grid`` (B, 3, H, W) in [-1, 1]; ``mask`` (B, 1, H, W) in {0, 1}, 1 = to generate. As in FluxFillPipeline,
    the masked image is ``grid * (1 - mask)`` and a stochastic autoencoder samples its latents with ``generator``.
    """
    masked_latents = autoencoder.encode(channels_last(grid * (1 - mask)), generator=generator)
    return condition_tokens(masked_latents, mask, autoencoder.scale_factor)


def condition_tokens(masked_latents: torch.Tensor, mask: torch.Tensor, scale_factor: int) -> torch.Tensor:
    """Masked-image latents (B, C, h, w) and pixel mask (B, 1, H, W) -> the condition tokens (B, L, 4C + 4*s^2).

    Apart from :func:`fill_condition` so that training, which encodes the masked grid in one batch with the grid
    (objective.py), builds the same tokens."""
    return torch.cat([pack_latents(masked_latents), pack_mask(mask, scale_factor).to(masked_latents)], -1)


def channels_last(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) values stored channels-last, strides (H*W*C, 1, W*C, C): the layout FluxFillPipeline's picture
    preprocessing (PIL -> numpy -> torch) hands its VAE. The conv kernels, and so their bf16 round-off, are chosen by
    layout, and ``contiguous(memory_format=channels_last)`` would keep a size-1 batch's stride, which they read."""
    return images.permute(0, 2, 3, 1).clone(memory_format=torch.contiguous_format).permute(0, 3, 1, 2)


def predict_velocity(
    transformer: torch.nn.Module,
    latents: torch.Tensor,
    condition: torch.Tensor,
    timestep: torch.Tensor,
    guidance: torch.Tensor | None,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    image_ids: torch.Tensor,
) -> torch.Tensor:
    """One Fill DiT evaluation: (B, L, 4C) noisy tokens + (B, L, 4C + 4s^2) condition -> (B, L, 4C) velocity.

    ``timestep`` is the flow time t in [0, 1] per sample (B,); ``guidance`` the guidance-embedding value per sample.
    Text ids are zeros, as FluxFillPipeline builds them.
    """
    text_ids = torch.zeros(prompt_embeds.shape[1], 3, device=latents.device, dtype=prompt_embeds.dtype)
    return transformer(
        hidden_states=torch.cat([latents, condition], dim=2),
        timestep=timestep,
        guidance=guidance,
        pooled_projections=pooled_prompt_embeds,
        encoder_hidden_states=prompt_embeds,
        txt_ids=text_ids,
        img_ids=image_ids,
        return_dict=False,
    )[0]
