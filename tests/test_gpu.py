"""One full-size FLUX.1-Fill training step (random init) with experiments/flux_fill.yaml's defaults on a CUDA GPU:
bf16-mixed, gradient clipping at 1.0, gradient checkpointing, the default attention backend. The two step-1 crashes
once seen there (cuDNN attention backward, clipping a fused AdamW) fail here."""

import math

import lightning.pytorch as pl
import pytest
import torch

from bench.gpu_model import BenchSetup, build_lightning, row_config
from pico_lightning.testing import fixed_loader
from pico_lightning.training.attention_backend import AttentionBackend


class LossRecorder(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_one_full_size_step_with_shipped_defaults(tmp_path):
    setup = BenchSetup(tiny=False, device=torch.device("cuda"), warmup=1, timed=0)
    cfg = row_config(setup, tmp_path, 1, True, False, tmp_path)  # batch 1 per device, checkpointing as shipped
    assert (cfg.train.precision, cfg.train.gradient_clip_val, cfg.train.attention_backend) == (
        "bf16-mixed",
        1.0,
        "auto",
    )
    recorder = LossRecorder()
    callbacks = [recorder, AttentionBackend(cfg.train.attention_backend)]
    module, trainer = build_lightning(cfg, setup, ["", "Edit"], callbacks, tmp_path / "run")
    assert sum(p.numel() for p in module.parameters()) > 11.9e9  # the full-size architecture
    trainer.fit(module, fixed_loader(cfg.data.panel_size, 1))
    assert trainer.global_step == 1 and len(recorder.losses) == 1 and math.isfinite(recorder.losses[0])
