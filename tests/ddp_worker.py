"""A `pico train` for the simulated multi-node test: fits, and every rank dumps its LoRA and step count at the end of
training (before `pico train`'s module drops its model parts)."""

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from peft.utils import get_peft_model_state_dict

from pico_lightning.config import load_config
from pico_lightning.training.train import fit_settings, prepare


class DumpLora(pl.Callback):
    def __init__(self, dump: Path):
        self.dump = dump

    def on_train_end(self, trainer, pl_module) -> None:
        self.dump.mkdir(parents=True, exist_ok=True)
        state = {
            "step": trainer.global_step,
            "lora": {k: v.detach().cpu() for k, v in get_peft_model_state_dict(pl_module.transformer).items()},
        }
        torch.save(state, self.dump / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    dump, overrides = Path(sys.argv[1]), sys.argv[2:]
    cfg = load_config(Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml", overrides)
    with fit_settings():  # as `pico train`'s fit
        module, trainer, datamodule, ckpt = prepare(cfg)
        trainer.callbacks.append(DumpLora(dump))
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
