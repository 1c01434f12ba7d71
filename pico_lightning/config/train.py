"""The training section of the experiment schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pico_lightning.config.checks import check


@dataclass
class TrainConfig:
    max_steps: int = 200
    """Optimizer steps."""
    batch_size: int | None = 4
    """Global batch (episodes per optimizer step, summed over devices, before accumulation); it must divide by
    devices*num_nodes. null: device_batch_size episodes on every device, so the global batch follows the world."""
    device_batch_size: int | None = None
    """Episodes per device per step, used when batch_size is null: the global batch is this x devices x num_nodes
    (a batch_size set on the command line takes over from it)."""
    accumulate_grad_batches: int = 1
    """Gradient accumulation through the Trainer."""
    lr: float = 1e-4
    """AdamW (peak) learning rate at a global batch of lr_reference_batch (see lr_scaling)."""
    lr_scaling: Literal["none", "sqrt", "linear"] = "none"
    """How the learning rate follows the global batch B: none (lr as written), sqrt (lr x sqrt(B / reference),
    the square-root rule for Adam) or linear (lr x B / reference)."""
    lr_reference_batch: int = 4
    """The global batch at which lr is the learning rate, for lr_scaling."""
    weight_decay: float = 1e-2
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear warm-up steps."""
    schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate schedule after warm-up: constant, or cosine down to 0."""
    gradient_clip_val: float = 1.0
    """Gradient-norm clipping (0 disables)."""
    gradient_checkpointing: bool | Literal["auto"] = False
    """Recompute the DiT's activations in the backward pass (saves memory at ~30% more compute): every block (true),
    none (false), or auto: the fewest blocks that make the fit's activations fit ``memory_budget_gb``, measured
    at the training shape before the fit (model/checkpointing.py; none on a CPU without a budget)."""
    memory_budget_gb: float | None = None
    """What gradient_checkpointing=auto may fill, GiB per device; null: the device's free memory with the base
    loaded."""
    attention_backend: Literal["auto", "flash", "efficient", "cudnn", "math", "fa3", "fa4"] = "auto"
    """torch SDPA kernels the whole fit may use (model/sdpa.py); auto = flash, memory-efficient or math, never
    cuDNN's fused attention, whose backward fails on Hopper with torch 2.11. fa3 / fa4: the flash backend running
    FlashAttention-3 (Hopper) / FlashAttention-4 (Hopper, datacenter Blackwell), each from its own package."""
    compile: bool = False
    """Regional torch.compile of the DiT's repeated blocks (diffusers' compile_repeated_blocks); the first steps
    pay the compilation."""
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
            "accumulate_grad_batches",
            "devices",
            "num_nodes",
            "checkpoint_every",
            "lr_reference_batch",
        ):
            value = getattr(self, key)
            check(value >= 1, f"train.{key}", "an integer >= 1", value)
        for key in ("batch_size", "device_batch_size"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"train.{key}", "an integer >= 1 or null", value)
        check(
            self.batch_size is not None or self.device_batch_size is not None,
            "train.batch_size",
            "a global batch, or null with train.device_batch_size set",
            self.batch_size,
        )
        check(self.lr >= 0, "train.lr", "a number >= 0", self.lr)  # 0: the weights stay as loaded
        check(self.warmup_steps >= 0, "train.warmup_steps", "an integer >= 0", self.warmup_steps)
        budget = self.memory_budget_gb
        check(budget is None or budget > 0, "train.memory_budget_gb", "a number > 0 or null", budget)
        check(self.gradient_clip_val >= 0, "train.gradient_clip_val", "a number >= 0", self.gradient_clip_val)
        # the batch against the world (per_device_batch) is checked where a world trains: `pico train` and its
        # --dry-run, not at load, so `pico embed` and --print-config work for any world

    def world_size(self) -> int:
        return self.devices * self.num_nodes

    def global_batch(self) -> int:
        """Episodes per optimizer step over all devices (before accumulation)."""
        return self.batch_size if self.batch_size is not None else self.device_batch_size * self.world_size()

    def per_device_batch(self) -> int:
        """The batch each device sees; a global batch must divide by the world size."""
        return split_batch(self.global_batch(), self.world_size())

    def scaled_lr(self) -> float:
        """The learning rate the optimizer uses: lr scaled by lr_scaling from lr_reference_batch to the global batch."""
        ratio = self.global_batch() / self.lr_reference_batch
        return self.lr * {"none": 1.0, "sqrt": ratio**0.5, "linear": ratio}[self.lr_scaling]

    def describe_batch(self) -> str:
        """One line: world size, global and per-device batch, and the learning rate with how it was scaled."""
        world, batch = self.world_size(), self.global_batch()
        lr = f"lr {self.scaled_lr():.3g}"
        if self.lr_scaling != "none":
            lr += f" (= {self.lr:.3g} x {self.lr_scaling} scaling from batch {self.lr_reference_batch})"
        return (
            f"world {world} ({self.num_nodes} node(s) x {self.devices} device(s)): global batch {batch} = "
            f"{self.per_device_batch()} per device x {world}, accumulated {self.accumulate_grad_batches}x; {lr}"
        )


def split_batch(batch_size: int, world: int) -> int:
    """The share of a global batch on each of ``world`` devices; ConfigError when it does not divide (the config's
    world in `pico train` and its --dry-run, the one a Trainer really has at setup)."""
    check(
        batch_size % world == 0,
        "train.batch_size",
        f"a multiple of devices*num_nodes={world} (or null, with train.device_batch_size)",
        batch_size,
    )
    return batch_size // world
