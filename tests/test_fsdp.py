"""train.strategy=fsdp: FSDP2 (``fully_shard``) through Lightning's ModelParallelStrategy, run for real on two CPU
ranks (gloo): it trains as DDP does, checkpoints and resumes to the same losses, and exports the LoRA; plus the
pieces: the strategy, the export from gathered parameters, every rank entering the gather, the stop vote."""

import json
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_train_overrides
from safetensors.torch import load_file
from test_distributed import losses_by_step, pico_train

from pico_lightning.config import LoraConfig, ModelConfig, TrainConfig
from pico_lightning.model.backbone import build_parts
from pico_lightning.model.lora import WEIGHTS_NAME, add_lora, export_lora
from pico_lightning.run_dir import RunDir
from pico_lightning.training.divergence import TrainingDivergedError
from pico_lightning.training.lifecycle import export_run_lora
from pico_lightning.training.module import PicoModule
from pico_lightning.training.strategy import LoraFSDP, build_strategy


def _lora_transformer():
    parts = build_parts(ModelConfig())
    add_lora(parts.transformer, LoraConfig(rank=4, alpha=8), seed=0)
    for name, param in parts.transformer.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, generator=torch.Generator().manual_seed(len(name)))
    return parts.transformer


def test_fsdp_is_fsdp2_over_every_rank():
    strategy = build_strategy(TrainConfig(strategy="fsdp", devices=2, num_nodes=3, batch_size=6))
    assert isinstance(strategy, LoraFSDP)
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (6, 1)
    assert not strategy._save_distributed_checkpoint  # one checkpoint file, as under DDP
    assert build_strategy(TrainConfig(strategy="ddp")) == "ddp"


@pytest.mark.slow  # four `pico train` runs of two processes each
def test_fsdp_on_two_cpu_ranks_trains_like_ddp_resumes_and_exports(visrel_tiny, tmp_path):
    """Two ranks, 4 steps: FSDP's losses equal DDP's (same data and noise per rank, gradients averaged either way);
    a run stopped at its step-2 checkpoint and resumed logs the same losses; the LoRA export matches DDP's. The 3
    evaluation episodes split 2 + 1 over the ranks: under FSDP the ranks must still run as many forwards each. The
    base is built on each rank's device and sharded there; the checkpoint holds the LoRA only."""
    base = [
        *tiny_train_overrides(visrel_tiny, tmp_path, "x"),
        "train.devices=2",
        "eval.suites=[held_in]",
        "eval.episodes_per_suite=3",
        "train.gradient_clip_val=0.01",  # clips every step: FSDP must clip by the norm over all ranks' shards
    ]
    for name, extra in [("ddp", ["train.strategy=ddp"]), ("fsdp", ["train.strategy=fsdp"])]:
        result = pico_train([*base, *extra, f"run.name={name}"])
        assert result.returncode == 0, result.stderr[-3000:]
    stopped = pico_train([*base, "train.strategy=fsdp", "run.name=resumed", "train.max_steps=2"])
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    resumed = pico_train([*base, "train.strategy=fsdp", "run.name=resumed", "run.resume=auto"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = tmp_path / "runs"
    ddp, fsdp, again = (losses_by_step(runs / name) for name in ("ddp", "fsdp", "resumed"))
    assert sorted(ddp) == sorted(fsdp) == sorted(again) == [0, 1, 2, 3]
    assert all(fsdp[s] == pytest.approx(ddp[s], rel=1e-4) for s in ddp)
    assert all(again[s] == pytest.approx(fsdp[s], abs=1e-6) for s in fsdp)
    summaries = {name: json.loads((runs / name / "summary.json").read_text()) for name in ("ddp", "fsdp")}
    assert summaries["fsdp"]["step"] == 4 and summaries["fsdp"]["eval"]["eval/seen/episodes"] == 3
    assert summaries["fsdp"]["eval"]["eval/seen/psnr"] == pytest.approx(summaries["ddp"]["eval"]["eval/seen/psnr"])
    ddp_lora, fsdp_lora = (load_file(runs / name / "lora" / WEIGHTS_NAME) for name in ("ddp", "fsdp"))
    assert ddp_lora.keys() == fsdp_lora.keys()
    assert all(torch.allclose(ddp_lora[k], fsdp_lora[k], atol=1e-5) for k in ddp_lora)
    checkpoint = torch.load(runs / "fsdp" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["state_dict"] and all("lora_" in k for k in checkpoint["state_dict"])  # no base gathered


def test_export_from_a_gathered_state_dict_equals_the_module_export(tmp_path):
    transformer = _lora_transformer()
    export_lora(transformer, tmp_path / "own")
    gathered = {k: v.clone() for k, v in transformer.state_dict().items()}  # what FSDP's full state dict holds
    with torch.no_grad():
        for param in transformer.parameters():
            param.zero_()  # rank zero's local shards would be partial: the export must not read them
    export_lora(transformer, tmp_path / "gathered", gathered)
    own, got = (load_file(tmp_path / d / WEIGHTS_NAME) for d in ("own", "gathered"))
    assert own.keys() == got.keys() and all(torch.equal(own[k], got[k]) for k in own)


def test_every_rank_enters_the_gather_and_only_rank_zero_writes(tmp_path):
    calls = []
    module = SimpleNamespace(transformer=_lora_transformer())
    strategy = SimpleNamespace(lightning_module_state_dict=lambda: calls.append("gather") or {})
    export_run_lora(SimpleNamespace(strategy=strategy, is_global_zero=False), module, RunDir(tmp_path))
    assert calls == ["gather"] and not (tmp_path / "lora").exists()


def test_a_non_finite_gradient_on_another_rank_stops_this_one(tiny_cfg):
    """Under FSDP gradients are local shards: the stop is a vote over ranks, so no rank waits on one that raised."""
    module = PicoModule(tiny_cfg.model, tiny_cfg.train, {"": (torch.zeros(4, 32), torch.zeros(32))})
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.ones(3)  # finite here
    votes = []
    strategy = SimpleNamespace(reduce_boolean_decision=lambda bad, all: votes.append((bad, all)) or True)
    module.trainer = SimpleNamespace(strategy=strategy, global_step=7, precision_plugin=SimpleNamespace())
    with pytest.raises(TrainingDivergedError, match="step 7"):
        module.configure_gradient_clipping(torch.optim.SGD([param], lr=1.0), gradient_clip_val=1.0)
    assert votes == [(False, False)]  # this rank voted "fine", another rank's "bad" won
