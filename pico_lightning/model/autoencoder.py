"""Autoencoders behind one small interface: images in [-1, 1] <-> normalised latents.

``encode`` returns the latents the DiT sees (FLUX's ``(z - shift) * scale``), ``decode`` inverts it. Two kinds:
the real ``AutoencoderKL`` (scale factor 8, 16 channels, sampled with a generator exactly as FluxFillPipeline
does) and a lossless ``PixelShuffleAutoencoder`` (scale factor s, 3*s^2 channels, no weights) that lets a tiny
CPU run learn pictures instead of noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.pipelines.flux.pipeline_flux_fill import retrieve_latents
from torch import nn


class KLAutoencoder(nn.Module):
    """FLUX's AutoencoderKL: stochastic encode (one draw from the generator), scaled and shifted latents."""

    stochastic = True

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae
        self.scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = vae.config.latent_channels

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, C, H/s, W/s), a sample of the posterior, normalised."""
        latents = retrieve_latents(self.vae.encode(images.to(self.vae.dtype)), generator=generator)
        return (latents - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, H/s, W/s) normalised latents -> (B, 3, H, W) images, unclamped."""
        latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
        return self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]


class PixelShuffleAutoencoder(nn.Module):
    """A lossless, deterministic, weight-free autoencoder: ``pixel_unshuffle`` by ``scale_factor``."""

    stochastic = False

    def __init__(self, scale_factor: int = 2):
        super().__init__()
        self.scale_factor = scale_factor
        self.latent_channels = 3 * scale_factor**2

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3*s^2, H/s, W/s); the generator is unused (nothing is sampled)."""
        return F.pixel_unshuffle(images, self.scale_factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 3*s^2, H/s, W/s) -> (B, 3, H, W)."""
        return F.pixel_shuffle(latents, self.scale_factor)


Autoencoder = KLAutoencoder | PixelShuffleAutoencoder
