"""One full-size FLUX.1-Fill training step (random init) with experiments/flux_fill.yaml's defaults on a CUDA GPU:
bf16-mixed, gradient clipping at 1.0, gradient checkpointing auto, the default attention backend. The two step-1 crashes
once seen there (cuDNN attention backward, clipping a fused AdamW) fail here."""

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from support import fixed_loader

from pico_lightning.config import load_config
from pico_lightning.config.presets import PRESETS
from pico_lightning.run_dir import RunDir
from pico_lightning.training.attention_backend import AttentionBackend
from pico_lightning.training.module import PicoModule
from pico_lightning.training.train import build_trainer

FLUX_FILL = Path(__file__).resolve().parents[1] / "experiments" / "flux_fill.yaml"


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def random_prompts(cfg, prompts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random (Lt, D) and (D,) embeddings per prompt: the step does not depend on what the text encoders say."""
    arch, generator = PRESETS[cfg.model.preset].transformer, torch.Generator().manual_seed(0)
    length = cfg.model.sequence_length()
    return {
        p: (
            torch.randn(length, arch["joint_attention_dim"], generator=generator),
            torch.randn(arch["pooled_projection_dim"], generator=generator),
        )
        for p in prompts
    }


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_full_size_step_with_shipped_defaults(tmp_path):
    cfg = load_config(
        FLUX_FILL,
        [
            "model.pretrained_dir=''",
            "model.preset=flux-fill-dev",
            "model.dtype=bfloat16",
            f"model.text_cache_dir={tmp_path / 'text'}",
            f"data.root={tmp_path}",
            "train.batch_size=1",
            "train.devices=1",
            "train.strategy=auto",
            "train.accelerator=gpu",
            "train.max_steps=1",
            "eval.suites=[]",
            "logging.wandb_mode=disabled",
            f"run.dir={tmp_path / 'runs'}",
        ],
    )
    assert (cfg.train.precision, cfg.train.gradient_clip_val, cfg.train.attention_backend) == (
        "bf16-mixed",
        1.0,
        "auto",
    )
    assert cfg.train.gradient_checkpointing == "auto"  # as shipped
    torch.set_float32_matmul_precision("high")  # as `pico train` does
    prompts = random_prompts(cfg, ["", "Edit"])
    module = PicoModule(cfg.model, cfg.train, prompts, lora=cfg.lora, layout=cfg.data.layout())
    with torch.device("cuda"):
        module.configure_model()  # built on the device; the Trainer's own call is then a no-op
    assert sum(p.numel() for p in module.parameters()) > 11.9e9  # the full-size architecture
    recorder = LossRecorder()
    trainer = build_trainer(
        cfg, RunDir(tmp_path / "run"), [recorder, AttentionBackend(cfg.train.attention_backend)], False
    )
    trainer.fit(module, fixed_loader(batch_size=1, panel_size=cfg.data.panel_size))
    assert trainer.global_step == 1 and len(recorder.losses) == 1 and math.isfinite(recorder.losses[0])
