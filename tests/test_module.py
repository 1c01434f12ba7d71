"""PicoModule: LoRA-only training, a falling loss, LoRA-sized checkpoints, exact resume, divergence stop."""

import pytest
import torch
from conftest import FixedDataModule, quiet_trainer
from support import fixed_loader, metrics_rows

from pico_lightning.model.build import build_trainable
from pico_lightning.model.conditioning import TextInputs
from pico_lightning.objective import fill_prediction
from pico_lightning.training.checkpoints import read_checkpoint
from pico_lightning.training.divergence import TrainingDivergedError
from pico_lightning.training.train import build_module, fit

# rank 16 on the default tiny DiT (width 32, 1 double + 1 single block), r * (in + out) per Linear:
# double: q,k,v,out + add_q,add_k,add_v,add_out 8 * 16 * 64 = 8192; ff and ff_context 2 * 2 * 16 * 160 = 10240
# single: q,k,v 3 * 1024 = 3072; proj_mlp 16 * 160 = 2560; proj_out 16 * (160 + 32) = 3072
TINY_LORA_PARAMS = 8192 + 10240 + 3072 + 2560 + 3072


def _fixed_loss(module, batch, seed=123):
    """The loss at fixed noise and timesteps: comparable before and after training."""
    batch = module.on_before_batch_transfer(dict(batch), 0)
    text, generator = TextInputs(*module.prompts.rows(batch["prompt_id"])), torch.Generator().manual_seed(seed)
    with torch.no_grad():
        pred, target = fill_prediction(
            module.parts, batch["grid"], batch["mask"], text, generator, module.cfg, module.model_cfg.guidance
        )
    return float((pred - target).pow(2).mean())


@pytest.mark.parametrize("with_lora", [True, False])
def test_the_built_model_trains_exactly_its_lora(tiny_cfg, with_lora):
    parts, plan = build_trainable(tiny_cfg.model, tiny_cfg.train, tiny_cfg.lora if with_lora else None)
    trainable = {n: p.numel() for n, p in parts.transformer.named_parameters() if p.requires_grad}
    assert sum(trainable.values()) == (TINY_LORA_PARAMS if with_lora else 0) and plan is None
    assert all("lora_" in name for name in trainable)
    assert not any(p.requires_grad for p in parts.autoencoder.parameters())


def test_only_lora_parameters_change(tiny_cfg):
    module = build_module(tiny_cfg, ["", "Edit"])
    module.configure_model()
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert sum(p.numel() for n, p in module.named_parameters() if n in trainable) == TINY_LORA_PARAMS
    assert all("lora_" in name for name in trainable)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    quiet_trainer(max_steps=1).fit(module, fixed_loader(panel_size=16))
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable


def test_loss_falls_on_a_fixed_batch(tiny_cfg):
    module = build_module(tiny_cfg, ["", "Edit"])
    module.configure_model()
    batch = next(iter(fixed_loader(panel_size=16)))
    start = _fixed_loss(module, batch)
    quiet_trainer(max_steps=60).fit(module, fixed_loader(panel_size=16))
    assert _fixed_loss(module, batch) < 0.9 * start


def _losses(run_dir):
    rows = metrics_rows(run_dir)
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_run_dir_checkpoint_size_and_exact_resume(tiny_cfg, tmp_path):
    run_dir = fit(tiny_cfg, FixedDataModule(panel_size=16))
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "checkpoints/last.ckpt",
        "lora/pytorch_lora_weights.safetensors",
        "summary.json",
    ):
        assert (run_dir / name).is_file(), name
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert all("lora_" in k for k in checkpoint["state_dict"])
    assert sum(v.numel() for v in checkpoint["state_dict"].values()) == TINY_LORA_PARAMS
    assert checkpoint["pico_config"]["train"]["max_steps"] == 6
    full = _losses(run_dir)

    # a second run stops at step 3, then resumes to 6: the losses of steps 3..5 must match the first run
    from dataclasses import replace

    cfg = replace(tiny_cfg, run=replace(tiny_cfg.run, name="r"), train=replace(tiny_cfg.train, max_steps=3))
    fit(cfg, FixedDataModule(panel_size=16))
    resumed = replace(cfg, run=replace(cfg.run, resume="auto"), train=replace(cfg.train, max_steps=6))
    fit(resumed, FixedDataModule(panel_size=16))
    again = _losses(resumed.run.path())
    assert sorted(again) == sorted(full)
    assert all(again[s] == pytest.approx(full[s], abs=1e-6) for s in full)


def test_existing_run_is_not_overwritten(tiny_cfg):
    from pico_lightning.errors import UserError

    fit(tiny_cfg, FixedDataModule(panel_size=16))
    with pytest.raises(UserError, match="run.resume=auto"):
        fit(tiny_cfg, FixedDataModule(panel_size=16))


def test_non_finite_loss_stops_before_saving(tiny_cfg):
    with pytest.raises(TrainingDivergedError, match=r"step 0; batch tasks: negate"):
        fit(tiny_cfg, FixedDataModule(panel_size=16, non_finite=True))
    assert not (tiny_cfg.run.path() / "checkpoints" / "last.ckpt").exists()


def test_wandb_offline_run_with_no_network(tiny_cfg):
    """W&B through Lightning's WandbLogger, offline: the run, its config and metrics land in <run dir>/wandb."""
    from dataclasses import replace

    from wandb_reader import read_run_dir

    cfg = replace(tiny_cfg, logging=replace(tiny_cfg.logging, wandb_mode="offline", group="g", tags=["t"]))
    run_dir = fit(cfg, FixedDataModule(panel_size=16))
    assert len(list((run_dir / "wandb").glob("offline-run-*/*.wandb"))) == 1  # synced later with `wandb sync`
    logged = read_run_dir(run_dir)
    (run,) = logged.runs
    assert (run.run_group, list(run.tags), run.project) == ("g", ["t"], "pico")
    assert b"max_steps" in run.config.SerializeToString()  # the resolved config
    assert [row["trainer/global_step"] for row in logged.rows if "train/loss" in row] == list(range(6))
