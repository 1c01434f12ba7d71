"""Autoencoders behind one small interface: images in [-1, 1] <-> normalised latents.

``encode`` returns the latents the DiT sees (FLUX's ``(z - shift) * scale``), ``decode`` inverts it. Two kinds:
the real ``AutoencoderKL`` (scale factor 8, 16 channels, sampled with a generator exactly as FluxFillPipeline
does) and a lossless ``PixelShuffleAutoencoder`` (scale factor s, 3*s^2 channels, no weights) that lets a tiny
CPU run learn pictures instead of noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
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


class PixelShuffleAutoencoder(ModelMixin, ConfigMixin):
    """A lossless, deterministic, weight-free autoencoder: ``pixel_unshuffle`` by ``scale_factor``.

    A diffusers model, so ``save_pretrained`` writes its ``vae/config.json`` and ``from_pretrained`` reads it back.
    Its config also carries the fields FluxFillPipeline reads from a VAE (``block_out_channels``, whose length
    gives the scale, ``latent_channels``, ``scaling_factor``, ``shift_factor``), so the stock pipeline sizes its
    latents right when it holds one (exact for power-of-two scales).
    """

    stochastic = False

    @register_to_config
    def __init__(self, scale_factor: int = 2):
        super().__init__()
        self.scale_factor = scale_factor
        self.latent_channels = 3 * scale_factor**2
        self.register_to_config(
            block_out_channels=[3] * (scale_factor.bit_length()),
            latent_channels=self.latent_channels,
            scaling_factor=1.0,
            shift_factor=0.0,
        )

    @classmethod
    def from_pretrained(cls, path: str, subfolder: str | None = None, **kwargs) -> PixelShuffleAutoencoder:
        """Read ``config.json`` only: there are no weights (ModelMixin's loader would insist on a weights file)."""
        return cls(scale_factor=cls.load_config(path, subfolder=subfolder, local_files_only=True)["scale_factor"])

    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 3*s^2, H/s, W/s); the generator is unused (nothing is sampled)."""
        return F.pixel_unshuffle(images, self.scale_factor)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 3*s^2, H/s, W/s) -> (B, 3, H, W)."""
        return F.pixel_shuffle(latents, self.scale_factor)


Autoencoder = KLAutoencoder | PixelShuffleAutoencoder
