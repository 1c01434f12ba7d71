"""The end of a fit: the last step is evaluated inside it, and no model is left for Lightning's teardown to copy."""

import json

import torch
from conftest import tiny_train_overrides

from pico_lightning.config import load_config
from pico_lightning.training.train import _fit, fit, prepare


def test_the_last_step_is_evaluated_inside_the_fit_and_the_base_is_dropped(visrel_tiny, tmp_path, monkeypatch):
    overrides = tiny_train_overrides(visrel_tiny, tmp_path, "end")
    cfg = load_config("experiments/demo.yaml", [*overrides, "train.max_steps=3"])  # every 2 steps: 2, then 3
    module, trainer, datamodule, ckpt = prepare(cfg)
    copied = []
    monkeypatch.setattr(module, "cpu", lambda: copied.append(sum(p.numel() for p in module.parameters())) or module)
    _fit(trainer, module, datamodule, ckpt)
    run_dir = cfg.run.path()
    assert sorted(p.name for p in (run_dir / "eval").iterdir()) == ["step_2", "step_3"]
    assert module.transformer is None and module.autoencoder is None
    summary = json.loads((run_dir / "summary.json").read_text())  # written by FitEnd, inside the fit
    assert summary["step"] == 3 and summary["eval"] == {
        k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("eval/")
    }
    assert copied == [0]  # Strategy.teardown's move to the CPU found no parameters
    assert (run_dir / "lora" / "pytorch_lora_weights.safetensors").is_file()  # exported before the release
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)  # saved in on_train_end: step 3
    assert last["global_step"] == 3 and last["state_dict"] and all("lora_" in k for k in last["state_dict"])


def test_a_finished_run_resumed_is_evaluated_again_and_summarised(visrel_tiny, tmp_path):
    overrides = [*tiny_train_overrides(visrel_tiny, tmp_path, "again"), "eval.every_n_steps=0", "run.resume=auto"]
    first = json.loads((fit(load_config("experiments/demo.yaml", overrides)) / "summary.json").read_text())
    again = json.loads((fit(load_config("experiments/demo.yaml", overrides)) / "summary.json").read_text())
    assert first["step"] == again["step"] == 4
    assert again["eval"]["eval/seen/psnr"] == first["eval"]["eval/seen/psnr"]
