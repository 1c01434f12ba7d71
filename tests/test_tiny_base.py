"""The demo's tiny pretrained base: a 2-step pretraining writes a directory the loader reads like FLUX.1-Fill-dev,
and the loader refuses it once a file changes or goes missing."""

import math

import numpy as np
import pytest
import torch

from pico_lightning import flow
from pico_lightning.config import ModelConfig
from pico_lightning.demo import tiny_base
from pico_lightning.demo.generic_grids import generic_batch
from pico_lightning.model.autoencoder import PixelShuffleAutoencoder
from pico_lightning.model.backbone import MANIFEST, ModelDirError, build_parts, build_text_encoders
from pico_lightning.model.conditioning import (
    fill_condition,
    latent_image_ids,
    pack_latents,
    predict_velocity,
    token_region,
)
from pico_lightning.model.text import encode_prompts


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_base")
    phases = [tiny_base.Phase(1, 1e-3, 1.0), tiny_base.Phase(1, 1e-3)]
    built, curve = tiny_base.pretrain(phases, batch=2, seed=0, log_every=1)
    assert [c["step"] for c in curve] == [1, 2]  # counted over both phases
    tiny_base.save_base(out, built)
    return out, built["parts"].transformer


def test_the_saved_base_loads_like_flux_fill(base_dir):
    out, trained = base_dir
    parts = build_parts(ModelConfig(pretrained_dir=str(out)))
    assert isinstance(parts.autoencoder, PixelShuffleAutoencoder) and parts.autoencoder.scale_factor == 2
    loaded = parts.transformer.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in trained.state_dict().items())
    assert not any(p.requires_grad for p in parts.transformer.parameters())


def test_pretraining_can_go_on_from_a_saved_base(base_dir):
    out, trained = base_dir
    start = {k: v.clone() for k, v in trained.state_dict().items()}
    built, curve = tiny_base.pretrain([tiny_base.Phase(1, 0.0)], batch=2, seed=1, log_every=1, init=str(out))
    goes_on = built["parts"].transformer.state_dict()  # lr 0: one step leaves the loaded weights as they were
    assert len(curve) == 1 and all(torch.equal(goes_on[k], v) for k, v in start.items())
    fresh, _ = tiny_base.pretrain([tiny_base.Phase(1, 0.0)], batch=2, seed=1, log_every=1)
    assert not torch.equal(fresh["parts"].transformer.proj_out.weight, goes_on["proj_out.weight"])


def test_a_missing_init_base_is_one_line_naming_the_flag(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        tiny_base.main(["--out", str(tmp_path / "out"), "--init", str(tmp_path / "nowhere"), "--record", ""])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "--init: " in err and "nowhere: model directory not found" in err
    assert not (tmp_path / "out").exists()


def test_a_changed_or_missing_file_is_one_error_naming_the_manifest(base_dir, tmp_path):
    out, _ = base_dir
    listed = (out / MANIFEST).read_text().splitlines()
    assert "transformer/diffusion_pytorch_model.safetensors" in {line.split("  ")[1] for line in listed}
    (out / MANIFEST).write_text("0" * 64 + "  transformer/config.json\n" + "\n".join(listed) + "\n")
    with pytest.raises(ModelDirError, match=r"config.json: changed .*SHA256SUMS"):
        build_parts(ModelConfig(pretrained_dir=str(out)))
    (out / MANIFEST).write_text(listed[0] + "\n" + "0" * 64 + "  transformer/gone.bin\n")
    with pytest.raises(ModelDirError, match=r"gone.bin: missing"):
        build_parts(ModelConfig(pretrained_dir=str(out)))
    (out / MANIFEST).write_text("\n".join(listed) + "\n")


def test_pretraining_grids_are_seeded_and_masked():
    first, masks = generic_batch(np.random.default_rng(3), 4, 16)
    again, _ = generic_batch(np.random.default_rng(3), 4, 16)
    assert first.shape == (4, 3, 32, 32) and masks.shape == (4, 1, 32, 32)
    assert (first == again).all() and first.min() >= -1 and first.max() <= 1
    assert all(0 < m.sum() < m.size for m in masks)


def test_exemplar_grids_are_copy_or_negative_told_apart_only_by_the_exemplar():
    grids, masks = generic_batch(np.random.default_rng(0), 16, 16, 1.0)
    target = np.zeros((32, 32), np.float32)
    target[16:, 16:] = 1
    assert all((m[0] == target).all() for m in masks)  # only B' is masked
    kinds = []
    for grid in grids:
        (a, a_out), (b, b_out) = [(grid[:, r : r + 16, :16], grid[:, r : r + 16, 16:]) for r in (0, 16)]
        copy, negative = (
            np.allclose(a_out, a, atol=1e-6) and np.allclose(b_out, b, atol=1e-6),
            np.allclose(a_out, -a, atol=1e-6) and np.allclose(b_out, -b, atol=1e-6),
        )
        assert copy != negative  # one relation, the same for the exemplar and the query
        kinds.append(copy)
    assert 0 < sum(kinds) < len(kinds)  # both relations occur


def test_an_exemplar_share_mixes_exemplar_grids_into_the_batch():
    def b_prime_only(share: float) -> int:  # grids whose mask is exactly B' (exemplar grids always are)
        _, masks = generic_batch(np.random.default_rng(0), 64, 16, share)
        return sum(bool(m[0, 16:, 16:].all() and not m[0, :16].any() and not m[0, :, :16].any()) for m in masks)

    assert b_prime_only(1.0) == 64
    assert b_prime_only(0.0) < b_prime_only(0.5) < 64


def _hand_loop(phases, batch: int, seed: int) -> dict[str, torch.Tensor]:
    """The loop the shipped base was pretrained with (its own AdamW, schedule, clipping and loss), kept as the
    reference the Trainer path is checked against."""
    parts, text = build_parts(tiny_base.BASE), build_text_encoders(tiny_base.BASE)
    transformer = parts.transformer.train().requires_grad_(True)
    embeds, pooled = encode_prompts(text, [""], tiny_base.BASE.sequence_length())[0]
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    side = 2 * tiny_base.PANEL // parts.autoencoder.scale_factor
    ids = latent_image_ids(side, side, torch.device("cpu"), torch.float32)
    for phase in phases:
        optimizer = torch.optim.AdamW(transformer.parameters(), lr=phase.lr, weight_decay=0.01)
        warmup = max(1, phase.steps // 20)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s, w=warmup, n=phase.steps: (
                min(1.0, (s + 1) / w) * (0.55 + 0.45 * math.cos(math.pi * min(1.0, s / n)))
            ),
        )
        for _ in range(phase.steps):
            grid, mask = (torch.from_numpy(a) for a in generic_batch(rng, batch, tiny_base.PANEL, phase.exemplar))
            x0 = pack_latents(parts.autoencoder.encode(grid))
            condition = fill_condition(parts.autoencoder, grid, mask)
            noise = torch.randn(x0.shape, generator=generator)
            t = flow.sample_timesteps(batch, "logit_normal", generator)
            t = flow.resolution_shift(t, flow.shift_mu(x0.shape[1], parts.scheduler.config))
            guidance = torch.full((batch,), tiny_base.BASE.guidance)
            shared = (embeds.expand(batch, -1, -1), pooled.expand(batch, -1), ids)
            pred = predict_velocity(transformer, flow.interpolate(x0, noise, t), condition, t, guidance, *shared)
            region = token_region(mask, parts.autoencoder.scale_factor)
            loss = flow.flow_matching_loss(pred, flow.velocity_target(x0, noise), region).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
            optimizer.step()
            schedule.step()
    return transformer.state_dict()


def test_the_trainer_recipe_reproduces_the_hand_loop_the_shipped_base_was_built_with():
    phases = [tiny_base.Phase(3, 3e-3, 1.0), tiny_base.Phase(2, 1e-3, 0.5)]
    reference = _hand_loop(phases, batch=2, seed=1)
    built, curve = tiny_base.pretrain(phases, batch=2, seed=1, log_every=1)
    trained = built["parts"].transformer.state_dict()
    differences = {k: (trained[k] - v).abs().max().item() for k, v in reference.items()}
    assert [c["step"] for c in curve] == [1, 2, 3, 4, 5]
    assert all(d == 0 for d in differences.values()), max(differences.values())
