"""What bench.gpu runs on: the full-size FLUX.1-Fill architecture (preset flux-fill-dev, random init, built on
the GPU in bf16) or the tiny preset on the CPU, experiment configs for each row, forward FLOPs and the card's
peak, and the one adapter to the package's run/ layer (PicoModule, build_trainer)."""

from __future__ import annotations

import gc
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))  # dense, per s


@dataclass(frozen=True)
class BenchSetup:
    """Sizes, device and step counts of one bench run."""

    tiny: bool
    device: torch.device
    batches: tuple[int, ...] = (1, 4)
    compile_modes: tuple[bool, ...] = (False, True)
    variants: tuple[str, ...] = ()  # levers measured at batch 1 with checkpointing, compiled as shipped: VARIANTS' keys
    all_rows: bool = False  # the whole grid of batch x checkpointing x compile, not just the rows that matter
    only: tuple[str, ...] = ()  # if given: just these rows (row_name) and sections (SECTIONS), in the usual order
    warmup: int = 2
    timed: int = 3
    inference_steps: int = 28

    @property
    def experiment(self) -> Path:
        return EXPERIMENTS / ("demo.yaml" if self.tiny else "flux_fill.yaml")

    def sync(self) -> None:
        """Wait for the device, so wall-clock windows hold the work they launched."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


VARIANTS = {  # lever -> config overrides of its row (lora-no-cast is a module switch: see gpu_train.lora_no_cast)
    "float8": ["model.base_quantization=float8"],  # float8 weights and matmuls (GPUs of compute capability >= 8.9)
    "int8": ["model.base_quantization=int8"],
    "lora-no-cast": [],
    "no-autocast": ["train.precision=32-true"],  # the bf16 base runs as stored (as inference does); LoRA stays fp32
    "fa3": ["train.attention_backend=fa3"],  # SDPA's flash backend on FlashAttention-3 (its package, sm90)
    "fa4": ["train.attention_backend=fa4"],  # ... on FlashAttention-4 (flash-attn-4, sm90/sm100)
}


def default_setup(tiny: bool) -> BenchSetup:
    """Every row, and the 24 GB lever: the float8 base where the device multiplies float8 (the CPU, or compute
    capability 8.9+), else the int8 base where torchao is installed (the `[quant]` extra). The other levers measured
    no faster on an H200 (bench/RESULTS.md), or need a package of their own (fa3, fa4): they run only when named
    with ``--only``."""
    if not tiny and not torch.cuda.is_available():
        raise SystemExit("bench.gpu: no CUDA device; run `python -m bench.gpu --tiny` for the CPU version")
    if tiny or torch.cuda.get_device_capability() >= (8, 9):
        variants = ("float8",)
    else:
        variants = ("int8",) if importlib.util.find_spec("torchao") is not None else ()
    return BenchSetup(tiny=tiny, device=torch.device("cpu" if tiny else "cuda"), variants=variants)


SECTIONS = ("vae_encode", "inference", "text_cache", "loader", "profile", "cli", "quantized_loss")


def row_name(batch: int, checkpointing: bool | str, compile_: bool, variant: str = "") -> str:
    """A row's name, e.g. ``b1-ckpt1-compile0``, ``b1-ckptauto-compile1`` or ``b1-ckpt1-compile0-int8`` (``--only``
    takes these)."""
    ckpt = checkpointing if checkpointing == "auto" else int(checkpointing)
    return f"b{batch}-ckpt{ckpt}-compile{int(compile_)}{variant and '-' + variant}"


def bench_overrides(setup: BenchSetup, tmp: Path, data_root: Path, batch: int) -> list[str]:
    """The shipped experiment (demo.yaml or flux_fill.yaml) on one device, its base built in-process at the bench's
    sizes (random init) over the bench's VisRel-lite shards; W&B and evaluation off."""
    overrides = [
        "model.pretrained_dir=''",
        f"model.text_cache_dir={tmp / 'text'}",
        f"data.root={data_root}",
        "data.num_workers=2",
        f"train.batch_size={batch}",
        "train.devices=1",
        f"train.accelerator={'cpu' if setup.tiny else 'gpu'}",
        "eval.suites=[]",
        "logging.wandb_mode=disabled",
        f"run.dir={tmp / 'runs'}",
    ]
    # the CPU: the tiny DiT over a scale-8 KL autoencoder; the GPU: FLUX.1-Fill-dev's DiT and VAE, in bf16
    return overrides + (
        ["model.preset=tiny-kl"] if setup.tiny else ["model.preset=flux-fill-dev", "model.dtype=bfloat16"]
    )


def row_config(
    setup: BenchSetup,
    tmp: Path,
    batch: int,
    checkpointing: bool | str,
    compile_: bool,
    data_root: Path,
    variant: str = "",
):
    """The bench's experiment (:func:`bench_overrides`) for one row (``variant``: a VARIANTS lever)."""
    from pico_lightning.config import load_config

    overrides = [
        *bench_overrides(setup, tmp, data_root, batch),
        "train.strategy=auto",
        f"train.gradient_checkpointing={checkpointing}",
        f"train.compile={compile_}",
        f"train.max_steps={setup.warmup + setup.timed}",
        f"run.name={row_name(batch, checkpointing, compile_, variant)}",
        *VARIANTS.get(variant, []),
    ]
    return load_config(setup.experiment, overrides)


def prompt_embeddings(cfg, prompts: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Random (Lt, D) and (D,) embeddings per prompt: speed does not depend on what the text encoders say."""
    from pico_lightning.config.presets import PRESETS

    generator = torch.Generator().manual_seed(0)
    arch = PRESETS[cfg.model.preset].transformer
    length, width, pooled = cfg.model.sequence_length(), arch["joint_attention_dim"], arch["pooled_projection_dim"]
    return {
        p: (torch.randn(length, width, generator=generator), torch.randn(pooled, generator=generator)) for p in prompts
    }


def build_lightning(cfg, setup: BenchSetup, prompts: list[str], callbacks: list[pl.Callback], run_dir: Path):
    """THE ADAPTER, the bench's only contact with run/: the LightningModule with its parts built on the device, and
    the Trainer, as `pico train` builds them. Update it when PicoModule or build_trainer change."""
    from pico_lightning.run_dir import RunDir
    from pico_lightning.training.module import PicoModule
    from pico_lightning.training.train import build_trainer

    torch.set_float32_matmul_precision("high")  # as `pico train` does (training/train.fit_settings)
    module = PicoModule(
        cfg.model,
        cfg.train,
        prompt_embeddings(cfg, prompts),
        lora=cfg.lora,
        layout=cfg.data.layout(),  # train.gradient_checkpointing=auto probes a step at the layout's size
        release_after_training=True,
    )
    with torch.device(setup.device):
        module.configure_model()  # Lightning's own call inside fit is then a no-op
    module.to(setup.device)
    return module, build_trainer(cfg, RunDir(run_dir), callbacks, validate=False)


def optimizer_and_schedule(module: pl.LightningModule):
    """(optimizer, LR scheduler) from the module's own configure_optimizers (its dict form)."""
    optimization = module.configure_optimizers()
    return optimization["optimizer"], optimization["lr_scheduler"]["scheduler"]


def forward_flops(module, setup: BenchSetup, panel_size: int, text_len: int) -> float:
    """FLOPs of one transformer forward on one 2x2 grid, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from pico_lightning.model.conditioning import latent_image_ids, predict_velocity

    parts = module.parts
    transformer, scale = parts.transformer, parts.autoencoder.scale_factor
    side = 2 * panel_size // scale  # latent side of the 2x2 grid
    tokens, dtype, device = (side // 2) ** 2, transformer.dtype, setup.device
    config = transformer.config
    noisy = torch.randn(1, tokens, config.out_channels, device=device, dtype=dtype)
    condition = torch.randn(1, tokens, config.in_channels - config.out_channels, device=device, dtype=dtype)
    text = torch.randn(1, text_len, config.joint_attention_dim, device=device, dtype=dtype)
    pooled = torch.randn(1, config.pooled_projection_dim, device=device, dtype=dtype)
    t, guidance = torch.full((1,), 0.5, device=device, dtype=dtype), torch.full((1,), 30.0, device=device)
    ids = latent_image_ids(side, side, device, dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        predict_velocity(transformer, noisy, condition, t, guidance, text, pooled, ids)
    return float(counter.get_total_flops())


def peak_flops(device: torch.device) -> float | None:
    """The card's dense bf16 peak (FLOP/s) from PEAK_BF16_FLOPS by device name; None on the CPU or an unknown card."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def release_memory() -> None:
    """Collect what is unreachable (modules hold cycles) and hand the cached device memory back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU {platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads".strip()
