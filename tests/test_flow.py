import math

import pytest
import torch

from pico_lightning import flow


def test_interpolate_endpoints():
    x0, noise = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    assert torch.equal(flow.interpolate(x0, noise, torch.zeros(3)), x0)
    assert torch.equal(flow.interpolate(x0, noise, torch.ones(3)), noise)
    half = flow.interpolate(x0, noise, torch.full((3,), 0.5))
    assert torch.allclose(half, (x0 + noise) / 2)


def _euler(velocity_fn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Integrate dx/dt = velocity_fn(x, t) from t = 1 (``noise``) to t = 0 in uniform Euler steps (the convention)."""
    times = torch.linspace(1.0, 0.0, num_steps + 1)
    x = noise
    for t, t_next in zip(times[:-1], times[1:]):
        x = x + (t_next - t) * velocity_fn(x, t.expand(x.shape[0]))
    return x


@pytest.mark.parametrize("steps", [1, 3, 25])
def test_euler_with_exact_velocity_recovers_x0(steps):
    x0, noise = torch.randn(2, 7, 3), torch.randn(2, 7, 3)

    def velocity(x, t):  # the exact conditional velocity field through x0: (x_t - x0) / t = eps - x0
        return (x - x0) / t.view(-1, 1, 1)

    assert torch.allclose(_euler(velocity, noise, steps), x0, atol=1e-5)


def test_velocity_target_is_derivative_of_interpolation():
    x0, noise, t = torch.randn(4, 6), torch.randn(4, 6), torch.rand(4)
    eps = 1e-3
    numeric = (flow.interpolate(x0, noise, t + eps) - flow.interpolate(x0, noise, t - eps)) / (2 * eps)
    assert torch.allclose(numeric, flow.velocity_target(x0, noise), atol=1e-3)


def _draw(density, **kwargs):
    return flow.sample_timesteps(200_000, density, torch.Generator().manual_seed(0), **kwargs).double()


def test_uniform_moments():
    t = _draw("uniform")
    assert abs(t.mean() - 0.5) < 0.005 and abs(t.var() - 1 / 12) < 0.002


def test_logit_normal_moments():
    t = _draw("logit_normal", logit_mean=0.5, logit_std=0.8)
    logits = torch.log(t / (1 - t))
    assert abs(logits.mean() - 0.5) < 0.01 and abs(logits.std() - 0.8) < 0.01


def test_mode_density_mean_matches_its_transform():
    scale = 1.29
    u = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    expected = (1 - u - scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)).mean()
    t = _draw("mode", mode_scale=scale)
    assert abs(t.mean() - expected) < 0.005 and t.min() >= 0 and t.max() <= 1


def test_unknown_density():
    with pytest.raises(ValueError, match="density"):
        flow.sample_timesteps(2, "cosine")


def test_resolution_shift():
    t = torch.linspace(0.01, 0.99, 50)
    assert torch.allclose(flow.resolution_shift(t, 0.0), t)
    shifted = flow.resolution_shift(t, 1.15)
    assert (shifted > t).all() and (shifted.diff() > 0).all()
    assert flow.shift_mu(256, {}) == pytest.approx(0.5) and flow.shift_mu(4096, {}) == pytest.approx(1.15)


def test_weighted_loss_ignores_zero_weight_tokens():
    pred, target = torch.zeros(2, 4, 3), torch.zeros(2, 4, 3)
    target[:, :2] = 1.0  # errors only on tokens 0-1
    weight = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    assert torch.allclose(flow.flow_matching_loss(pred, target, weight), torch.tensor([0.0, 1.0]))
    assert torch.allclose(flow.flow_matching_loss(pred, target), torch.tensor([0.5, 0.5]))
