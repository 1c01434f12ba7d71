"""The experiment schema: one typed dataclass per concern, loaded and validated in one place.

``load_config(path, overrides)`` merges ``OmegaConf.structured(ExperimentConfig)`` with the YAML file and the
command line's ``key=value`` overrides, then ``to_object`` runs every ``__post_init__``. Unknown keys, wrong types
and invalid values raise :class:`ConfigError` with one line naming the key, the file and what was expected.
No torch import here: ``pico --help`` and config errors stay fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pico_lightning.errors import UserError
from pico_lightning.packing import check_grid_side

SUITES = ("segmentation", "user_tasks", "held_in", "held_out", "perseg")  # data/suites.py defines them


class ConfigError(UserError):
    """A user-facing configuration problem; its message is one line naming the key and the expectation."""


def _check(ok: bool, key: str, expected: str, value: object) -> None:
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


@dataclass
class ModelConfig:
    pretrained_dir: str = ""
    """Local diffusers-format FLUX.1-Fill directory; empty builds the tiny in-process model below."""
    autoencoder: Literal["pixel_shuffle", "kl"] = "pixel_shuffle"
    """Tiny model only: lossless PixelShuffle (no weights, CPU demo) or a random-init AutoencoderKL (scale 8)."""
    pixel_shuffle_scale: int = 2
    """Tiny model only: the PixelShuffle autoencoder's scale factor s (latent channels 3*s^2)."""
    num_layers: int = 1
    """Tiny model only: double-stream blocks."""
    num_single_layers: int = 1
    """Tiny model only: single-stream blocks."""
    attention_head_dim: int = 16
    """Tiny model only: per-head width; must equal sum(axes_dims_rope)."""
    num_attention_heads: int = 2
    """Tiny model only: attention heads."""
    joint_attention_dim: int = 32
    """Tiny model only: T5 width."""
    pooled_projection_dim: int = 32
    """Tiny model only: CLIP pooled width."""
    axes_dims_rope: list[int] = field(default_factory=lambda: [4, 4, 8])
    """Tiny model only: rotary axes (text, row, column)."""
    init_seed: int = 0
    """Tiny model only: seed of the random initialisation, so every process builds the same base."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Storage dtype of the frozen base; LoRA parameters always stay float32."""
    max_sequence_length: int = 32
    """T5 tokens per prompt (FLUX.1-Fill-dev uses up to 512)."""
    guidance: float = 30.0
    """Guidance-embedding value fed to the DiT (FLUX.1-Fill-dev's default), in training and at inference."""
    text_cache_dir: str = ""
    """Prompt-embedding cache directory; empty = <run dir>/text_cache or ~/.cache/pico_lightning/text."""

    def __post_init__(self) -> None:
        _check(
            self.pixel_shuffle_scale >= 1,
            "model.pixel_shuffle_scale",
            "an integer >= 1",
            self.pixel_shuffle_scale,
        )
        rope_sum = sum(self.axes_dims_rope)
        _check(
            len(self.axes_dims_rope) == 3 and rope_sum == self.attention_head_dim,
            "model.axes_dims_rope",
            f"3 integers summing to model.attention_head_dim={self.attention_head_dim}",
            self.axes_dims_rope,
        )
        _check(
            self.max_sequence_length >= 1,
            "model.max_sequence_length",
            "an integer >= 1",
            self.max_sequence_length,
        )
        if self.pretrained_dir:
            _check(
                os.path.isdir(self.pretrained_dir),
                "model.pretrained_dir",
                "an existing directory",
                self.pretrained_dir,
            )


@dataclass
class LoraConfig:
    rank: int = 16
    """LoRA rank r."""
    alpha: float = 16.0
    """LoRA alpha; the update is scaled by alpha / r."""
    dropout: float = 0.0
    """Dropout on the LoRA branch."""
    target_modules: list[str] = field(
        default_factory=lambda: [
            "attn.to_q",
            "attn.to_k",
            "attn.to_v",
            "attn.to_out.0",
            "attn.add_q_proj",
            "attn.add_k_proj",
            "attn.add_v_proj",
            "attn.to_add_out",
            "ff.net.0.proj",
            "ff.net.2",
            "ff_context.net.0.proj",
            "ff_context.net.2",
            "proj_mlp",
            "proj_out",
        ]
    )
    """Module-name suffixes inside the double and single blocks."""
    extra_modules: list[str] = field(default_factory=list)
    """Full names of Linear layers outside the blocks to adapt as well (e.g. x_embedder, proj_out; ICEdit adapts
    x_embedder). Empty for FLUX.1-Fill-dev; the demo's random-init tiny base needs them to learn in minutes."""

    def __post_init__(self) -> None:
        _check(self.rank >= 1, "lora.rank", "an integer >= 1", self.rank)
        _check(self.alpha > 0, "lora.alpha", "a number > 0", self.alpha)
        _check(0.0 <= self.dropout < 1.0, "lora.dropout", "a number in [0, 1)", self.dropout)
        _check(len(self.target_modules) > 0, "lora.target_modules", "a non-empty list", self.target_modules)


@dataclass
class DataConfig:
    shards: str = ""
    """Training shards: a directory holding index.json, a brace pattern, a URL or a `pipe:` command."""
    root: str = ""
    """Data root written by `pico prep` (shards + index.json); used when `shards` is empty."""
    panel_size: int = 32
    """Side of each square panel in pixels; the grid is rows*panel_size x cols*panel_size."""
    rows: int = 2
    """Grid rows: rows-1 exemplar pairs plus the query row (2 = the classic A|A' over B|B')."""
    cols: int = 2
    """Grid columns: input | output (2), or more panels per row for k-shot layouts."""
    resize: Literal["resize", "letterbox"] = "resize"
    """How a picture is fitted to a square panel: stretch, or keep aspect and pad with black."""
    tasks: list[str] = field(default_factory=list)
    """Train only on these tasks (empty = all held-in tasks)."""
    exclude_tasks: list[str] = field(default_factory=list)
    """Never train on these tasks."""
    num_tasks: int = 0
    """Keep this many tasks, a seeded choice stratified over the four families (0 = all)."""
    shots_per_task: int = 0
    """Keep this many samples per task (0 = all)."""
    sampling: Literal["task_balanced", "uniform", "weighted"] = "task_balanced"
    """Episode sampling: each task equally likely, each sample equally likely, or data.task_weights."""
    task_weights: dict[str, float] = field(default_factory=dict)
    """Per-task weights for sampling=weighted (missing tasks weigh 1)."""
    prompt: Literal["none", "category", "task"] = "category"
    """Text per episode: empty, the family's label (e.g. 'Segment'), or the task's own prompt."""
    prompt_dropout: float = 0.1
    """Probability that an episode's prompt is replaced by the empty prompt in training."""
    augment: bool = True
    """Paired augmentation (the same flip for all panels of an episode)."""
    num_workers: int = 2
    """DataLoader workers per rank."""
    epoch_batches: int = 100
    """Batches per rank per epoch (WebDataset with_epoch; equal on every rank)."""
    seed: int = 0
    """Seed of task subsets, episode sampling and augmentation."""

    def __post_init__(self) -> None:
        _check(self.panel_size >= 1, "data.panel_size", "a positive integer", self.panel_size)
        _check(
            self.rows >= 2 and self.cols >= 2,
            "data.rows/data.cols",
            "at least 2 each",
            (self.rows, self.cols),
        )
        _check(
            0.0 <= self.prompt_dropout <= 1.0,
            "data.prompt_dropout",
            "a number in [0, 1]",
            self.prompt_dropout,
        )
        _check(self.num_tasks >= 0, "data.num_tasks", "an integer >= 0", self.num_tasks)
        _check(self.shots_per_task >= 0, "data.shots_per_task", "an integer >= 0", self.shots_per_task)
        _check(self.num_workers >= 0, "data.num_workers", "an integer >= 0", self.num_workers)
        _check(self.epoch_batches >= 1, "data.epoch_batches", "an integer >= 1", self.epoch_batches)


@dataclass
class TrainConfig:
    max_steps: int = 200
    """Optimizer steps."""
    batch_size: int = 4
    """Global batch (episodes per optimizer step, summed over devices, before accumulation)."""
    accumulate_grad_batches: int = 1
    """Gradient accumulation through the Trainer."""
    lr: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate schedule after warm-up."""
    gradient_clip_val: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    gradient_checkpointing: bool = False
    """Recompute the DiT's activations in the backward pass (saves memory at ~30% more compute)."""
    timestep_density: Literal["uniform", "logit_normal", "mode"] = "logit_normal"
    """Density of the flow time t in training."""
    logit_mean: float = 0.0
    """Logit-normal mean."""
    logit_std: float = 1.0
    """Logit-normal standard deviation."""
    mode_scale: float = 1.29
    """Scale of the 'mode' density."""
    resolution_shift: bool = True
    """Apply FLUX's resolution-dependent time shift to sampled t."""
    loss_region: Literal["target", "grid"] = "target"
    """Loss on the target panel's tokens only, or on the whole grid."""
    devices: int = 1
    """Devices per node."""
    num_nodes: int = 1
    """Nodes."""
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    """Lightning accelerator."""
    strategy: Literal["auto", "ddp", "ddp_spawn", "fsdp"] = "auto"
    """Lightning strategy."""
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true"] = "32-true"
    """Lightning precision."""
    checkpoint_every: int = 50
    """Save checkpoints/last.ckpt every this many steps."""
    seed: int = 0
    """Global seed (noise and timesteps are seeded per step from it, so resumes are exact)."""

    def __post_init__(self) -> None:
        for key in (
            "max_steps",
            "batch_size",
            "accumulate_grad_batches",
            "devices",
            "num_nodes",
            "checkpoint_every",
        ):
            value = getattr(self, key)
            _check(value >= 1, f"train.{key}", "an integer >= 1", value)
        _check(self.lr > 0, "train.lr", "a number > 0", self.lr)
        _check(self.warmup_steps >= 0, "train.warmup_steps", "an integer >= 0", self.warmup_steps)
        _check(self.gradient_clip_val >= 0, "train.gradient_clip_val", "a number >= 0", self.gradient_clip_val)
        self.per_device_batch()

    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def per_device_batch(self) -> int:
        """The batch each device sees; the global batch must divide by the world size."""
        world = self.world_size()
        _check(
            self.batch_size % world == 0,
            "train.batch_size",
            f"a multiple of devices*num_nodes={world}",
            self.batch_size,
        )
        return self.batch_size // world


@dataclass
class EvalConfig:
    suites: list[str] = field(default_factory=lambda: ["segmentation", "user_tasks", "held_in"])
    """Evaluation suites to run."""
    every_n_steps: int = 0
    """Evaluate during training every N steps (0 = only at the end of fit)."""
    episodes_per_suite: int = 8
    """Episodes per suite (from the suites written by `pico prep`)."""
    num_steps: int = 8
    """Denoising steps T at evaluation."""
    num_seeds: int = 4
    """Candidate seeds |S| for the seed scorer (1 = plain sampling)."""
    scorer_steps: int = 2
    """Early steps k run for every seed before scoring."""
    score: Literal["query_mass", "exemplar_mass", "agreement", "concentration"] = "agreement"
    """Attention routing score used to pick the seed (see inference/seed_scorer.py)."""
    score_blocks: list[int] = field(default_factory=list)
    """Blocks (index over double then single blocks) whose attention is scored; empty = all double blocks."""
    seed: int = 0
    """First candidate seed; candidates are seed, seed+1, ..."""
    gallery_episodes: int = 4
    """Episodes per suite drawn in the gallery and the W&B table (fixed across steps)."""
    perseg_dir: str = ""
    """A PerSeg-style folder (Images/<object>/*.jpg, Annotations/<object>/*.png) for the 'perseg' suite."""

    def __post_init__(self) -> None:
        _check(self.num_steps >= 1, "eval.num_steps", "an integer >= 1", self.num_steps)
        _check(self.num_seeds >= 1, "eval.num_seeds", "an integer >= 1", self.num_seeds)
        _check(
            0 <= self.scorer_steps < self.num_steps,
            "eval.scorer_steps",
            f"an integer in [0, eval.num_steps={self.num_steps})",
            self.scorer_steps,
        )
        _check(self.every_n_steps >= 0, "eval.every_n_steps", "an integer >= 0", self.every_n_steps)
        unknown = [s for s in self.suites if s not in SUITES]
        _check(not unknown, "eval.suites", f"names from {list(SUITES)}", self.suites)
        _check(
            "perseg" not in self.suites or bool(self.perseg_dir),
            "eval.perseg_dir",
            "a PerSeg folder when eval.suites has 'perseg'",
            self.perseg_dir,
        )


@dataclass
class LoggingConfig:
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    """W&B mode; the WANDB_MODE environment variable wins when set."""
    project: str = "pico"
    """W&B project."""
    group: str = ""
    """W&B group (sweeps set one per sweep)."""
    tags: list[str] = field(default_factory=list)
    """W&B tags."""
    log_every_n_steps: int = 10
    """Scalar logging interval."""


@dataclass
class RunConfig:
    name: str = "pico"
    """Run name (the run directory's name and the W&B run name)."""
    dir: str = "runs"
    """Parent directory of run directories."""
    resume: Literal["never", "auto"] = "never"
    """auto: continue from <run dir>/checkpoints/last.ckpt when it exists."""

    def path(self) -> Path:
        return Path(self.dir) / self.name


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        for side in ("rows", "cols"):
            try:
                check_grid_side(self.data.panel_size, getattr(self.data, side), side)
            except UserError as err:
                raise ConfigError(f"data.panel_size: {err}") from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Defaults <- YAML file <- ``key=value`` overrides, validated; errors name the key and the file."""
    source = str(path) if path else "<defaults>"
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"{source}: experiment file not found")
    try:
        layers = [OmegaConf.structured(ExperimentConfig)]
        if path is not None:
            layers.append(OmegaConf.load(path))
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(OmegaConf.merge(*layers))
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        message = str(getattr(err, "msg", err)).splitlines()[0]
        raise ConfigError(f"{source}: {key}: {message}") from None
    except Exception as err:  # YAML syntax and dotlist parse errors
        raise ConfigError(f"{source}: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def to_yaml(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (what every run directory and checkpoint keeps)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_container(cfg: ExperimentConfig) -> dict:
    """The resolved config as plain dicts and lists (safe for ``torch.load(weights_only=True)``)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def save_config(cfg: ExperimentConfig, path: str | os.PathLike) -> None:
    """Write the resolved config atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(to_yaml(cfg))
    os.replace(tmp, path)
