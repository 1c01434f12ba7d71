"""Flow matching, one convention for the whole package (minRF and diffusers' FLUX agree on it).

    x_t = (1 - t) * x0 + t * eps,   t in [0, 1]  (t = 0: data, t = 1: noise)
    v   = eps - x0                  (the velocity the DiT predicts)
    sampling integrates dx/dt = v from t = 1 down to t = 0.

The FLUX DiT takes t itself as its timestep (it multiplies by 1000 inside); diffusers' scheduler counts t in
1000ths, which the sampler converts in one place. Pure tensor functions with explicit generators: no nn, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from diffusers.training_utils import compute_density_for_timestep_sampling

DENSITIES = ("uniform", "logit_normal", "mode")


def sample_timesteps(
    batch: int,
    density: str,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    mode_scale: float = 1.29,
) -> torch.Tensor:
    """(batch,) flow times t in (0, 1) from ``density`` (diffusers' implementation of each, seeded)."""
    if density not in DENSITIES:
        raise ValueError(f"timestep density {density!r}: expected one of {DENSITIES}")
    scheme = "none" if density == "uniform" else density
    u = compute_density_for_timestep_sampling(
        scheme,
        batch,
        logit_mean=logit_mean,
        logit_std=logit_std,
        mode_scale=mode_scale,
        device=generator.device if generator else device,
        generator=generator,
    )
    return u.to(device)


def shift_mu(image_seq_len: int, scheduler_config: Mapping) -> float:
    """FLUX's resolution-dependent shift mu for ``image_seq_len`` packed tokens (256 -> 0.5, 4096 -> 1.15)."""
    return calculate_shift(
        image_seq_len,
        scheduler_config.get("base_image_seq_len", 256),
        scheduler_config.get("max_image_seq_len", 4096),
        scheduler_config.get("base_shift", 0.5),
        scheduler_config.get("max_shift", 1.15),
    )


def max_shift_tokens(scheduler_config: Mapping) -> int | None:
    """The most packed tokens whose shift stays finite, or None when mu does not grow with the token count.

    mu grows linearly with the token count and the shift takes ``exp(mu)`` against float32 sigmas (the scheduler's
    and ours): past log(float32 max) ~ 88.7 the sigmas are NaN, and past ~709.8 ``math.exp`` itself overflows."""
    slope = shift_mu(1, scheduler_config) - shift_mu(0, scheduler_config)
    if slope <= 0:
        return None
    tokens = int((math.log(torch.finfo(torch.float32).max) - shift_mu(0, scheduler_config)) / slope)
    while not torch.isfinite(torch.tensor(math.exp(shift_mu(tokens, scheduler_config)), dtype=torch.float32)):
        tokens -= 1  # float rounding at the edge
    return tokens


def resolution_shift(t: torch.Tensor, mu: float) -> torch.Tensor:
    """FLUX's time shift (exponential, sigma = 1): more steps at high noise for larger images."""
    return math.exp(mu) / (math.exp(mu) + (1.0 / t - 1.0))


def interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) * x0 + t * eps, with t (B,) broadcast over the remaining dimensions."""
    t = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1.0 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow's velocity dx_t/dt = eps - x0."""
    return noise - x0


def flow_matching_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample weighted MSE: pred, target (B, L, C); weight (B, L) per token (None = all 1) -> (B,).

    Each sample's loss is sum_l w_l * mean_c (pred - target)^2 / sum_l w_l, so samples weigh equally whatever
    their region size. Computed in float32.
    """
    per_token = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, L)
    if weight is None:
        return per_token.mean(dim=-1)
    weight = weight.float()
    return (per_token * weight).sum(dim=-1) / weight.sum(dim=-1).clamp_min(1e-8)
