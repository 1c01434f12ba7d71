"""The model card (README.md) written beside every exported LoRA: what the weights are and how to use them.

Its front matter names the base (``base_model``) and the licence the LoRA inherits from it. The card names the
base, PICO's protocol (grid, masked panel, prompts, sampling, seed scorer), the training recipe, the final evaluation
when the run has one, and a stock-diffusers snippet (FluxFillPipeline + load_lora_weights) that reproduces
`pico infer --seeds 1` on pictures already at the panel size. The snippet is produced by
:func:`diffusers_snippet` and tested by running it.
"""

from __future__ import annotations

import json
from pathlib import Path

from pico_lightning.config import ExperimentConfig
from pico_lightning.data.schema import CATEGORY_PROMPTS
from pico_lightning.files import write_text

CARD_NAME = "README.md"
TAGS = "[lora, flux, flux-fill, inpainting, visual-in-context-learning, pico]"
FLUX_FILL_DEV = "black-forest-labs/FLUX.1-Fill-dev"
# Black Forest Labs' weights come with their own terms, which a LoRA trained on them inherits
FLUX_DEV_LICENSE = (
    "license: other\nlicense_name: flux-1-dev-non-commercial-license\n"
    f"license_link: https://huggingface.co/{FLUX_FILL_DEV}/blob/main/LICENSE.md"
)
# FLUX.1-Fill-dev's transformer, as its transformer/config.json states it (no other released Fill DiT is this shape)
FLUX_FILL_DEV_SHAPE = {"num_layers": 19, "num_single_layers": 38, "in_channels": 384, "guidance_embeds": True}
DTYPE_NAMES = {"float32": "torch.float32", "bfloat16": "torch.bfloat16", "float16": "torch.float16"}


def write_lora_card(lora_dir: str | Path, cfg: ExperimentConfig, summary: dict | None = None) -> Path:
    """Write ``lora_dir/README.md`` for the LoRA trained by ``cfg``; ``summary`` is the run's summary.json (its
    final evaluation), if it has finished."""
    path = Path(lora_dir) / CARD_NAME
    write_text(path, lora_card(cfg, Path(lora_dir), summary))
    return path


def lora_card(cfg: ExperimentConfig, lora_dir: Path, summary: dict | None = None) -> str:
    """The card's Markdown: metadata header, base, protocol, training, evaluation, usage."""
    sections = [
        metadata(cfg.model.pretrained_dir, cfg.model.preset),
        f"# PICO LoRA: {cfg.run.name}\n\nA LoRA for FLUX.1-Fill trained by pico_lightning for visual in-context "
        "learning: given an exemplar pair A -> A' and a query B, the model fills B' in a four-panel grid.",
        _base_section(cfg),
        _protocol_section(cfg),
        _training_section(cfg),
        _evaluation_section(summary),
        _usage_section(cfg, lora_dir),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def metadata(pretrained_dir: str, preset: str) -> str:
    """The card's front matter: diffusers LoRA tags, ``base_model`` and the base's licence, which the LoRA inherits.

    A directory holding FLUX.1-Fill-dev's transformer is that model (a copy or a fine-tune of it, under its
    non-commercial licence); an in-process preset is random init by pico_lightning (Apache-2.0, as this code); any
    other directory is named by its path, its licence unknown here."""
    if is_flux_fill_dev(pretrained_dir):
        base = f"base_model: {FLUX_FILL_DEV}\nbase_model_relation: adapter\n{FLUX_DEV_LICENSE}"
    elif pretrained_dir:
        base = (
            f"base_model: {json.dumps(f'local directory {pretrained_dir}')}\nlicense: other\n"
            "license_name: unknown (the base directory's own licence applies)"
        )
    else:
        base = f'base_model: "pico_lightning in-process preset {preset} (random init)"\nlicense: apache-2.0'
    return f"---\nlibrary_name: diffusers\n{base}\ntags: {TAGS}\n---"


def is_flux_fill_dev(model_dir: str) -> bool:
    """Whether ``model_dir`` holds FLUX.1-Fill-dev's transformer (by its config's shape)."""
    path = Path(model_dir) / "transformer" / "config.json" if model_dir else None
    if path is None or not path.is_file():
        return False
    config = json.loads(path.read_text())
    return all(config.get(key) == value for key, value in FLUX_FILL_DEV_SHAPE.items())


def _base_section(cfg: ExperimentConfig) -> str:
    model = cfg.model
    if model.pretrained_dir:
        base = f"`{model.pretrained_dir}` (a diffusers-format FLUX.1-Fill directory), stored in {model.dtype}"
        if is_flux_fill_dev(model.pretrained_dir):
            base += f", with FLUX.1-Fill-dev's transformer ({FLUX_FILL_DEV}): this LoRA falls under its licence"
        autoencoder = _autoencoder_class(model.pretrained_dir)
        if autoencoder not in (None, "AutoencoderKL"):
            base += (
                f". Its autoencoder is pico_lightning's `{autoencoder}`, which stock diffusers cannot load: use "
                "`PicoPipeline.from_pretrained` for this base"
            )
    else:
        base = (
            f"pico_lightning's in-process preset `{model.preset}` (random init, seed {model.init_seed}), not a "
            "pretrained directory: rebuild it with the same config, or save it with "
            "`pico_lightning.model.backbone.save_pipeline` to use the snippet below"
        )
    return f"## Base model\n\n{base}."


def _autoencoder_class(model_dir: str) -> str | None:
    path = Path(model_dir) / "vae" / "config.json"
    return json.loads(path.read_text()).get("_class_name") if path.is_file() else None


def _prompts(cfg: ExperimentConfig) -> str:
    if cfg.data.prompt == "none":
        return 'none: every episode was trained with the empty prompt `""`'
    if cfg.data.prompt == "category":
        labels = ", ".join(f"`{p}`" for p in CATEGORY_PROMPTS.values())
        return f"the task family's label ({labels}), the empty prompt with probability {cfg.data.prompt_dropout}"
    return f"each task's own prompt, the empty prompt with probability {cfg.data.prompt_dropout}"


def _protocol_section(cfg: ExperimentConfig) -> str:
    data, ev, size = cfg.data, cfg.eval, cfg.data.panel_size
    blocks = ev.score_blocks or "the last 4 double blocks"
    return "\n".join(
        [
            "## PICO's protocol",
            "",
            f"- Grid: {data.rows} x {data.cols} panels of {size} x {size} px ({data.cols * size} x {data.rows * size} "
            f"px in all): exemplar rows A | A' above the query row B | B'; pictures are fitted by `{data.resize}`. "
            f"`pico infer` uses the 2 x 2 grid ({2 * size} x {2 * size} px).",
            "- Masked panel: the last one (bottom right, B'); it is black in the input image and white in the mask.",
            f"- Prompts: {_prompts(cfg)}. `pico infer` uses `--prompt`, empty by default.",
            f"- Sampling: {ev.num_steps} steps (FLUX's Euler flow sampler, as FluxFillPipeline), guidance "
            f"{cfg.model.guidance}, T5 length {cfg.model.sequence_length()}.",
            f"- Seed scorer (evaluation and `pico infer --seeds N`): {ev.num_seeds} candidate seeds from "
            f"{ev.seed}, {ev.scorer_steps} early steps each, scored by `{ev.routing_score}` attention routing on "
            f"{blocks}; only the best seed is finished. Stock diffusers has no seed scorer: the snippet below is "
            "one seed (`pico infer --seeds 1`).",
        ]
    )


def _training_section(cfg: ExperimentConfig) -> str:
    train, lora, data = cfg.train, cfg.lora, cfg.data
    tasks = ", ".join(data.tasks) if data.tasks else "all held-in tasks"
    if data.num_tasks:
        tasks += f" (a seeded choice of {data.num_tasks})"
    if data.exclude_tasks:
        tasks += f", except {', '.join(data.exclude_tasks)}"
    modules = f"the blocks' {', '.join(lora.target_modules)}"
    if lora.extra_modules:
        modules += f", and the DiT's own {', '.join(lora.extra_modules)}"
    return "\n".join(
        [
            "## Training",
            "",
            f"- Steps: {train.max_steps}, batch {train.global_batch()} x {train.accumulate_grad_batches} accumulation, "
            f"lr {train.scaled_lr():.3g} ({train.schedule}, {train.warmup_steps} warm-up steps), "
            f"precision {train.precision}.",
            f"- Flow matching: t ~ {train.timestep_density}, loss on the {train.loss_region}.",
            f"- LoRA: rank {lora.rank}, alpha {lora.alpha}, dropout {lora.dropout}, on {modules}.",
            f"- Data: {tasks}; {data.shots_per_task or 'all'} samples per task, {data.sampling} sampling.",
        ]
    )


def _evaluation_section(summary: dict | None) -> str:
    if not summary or not summary.get("eval"):
        return ""
    rows = [f"| `{k}` | {v:.4f} |" for k, v in summary["eval"].items() if k.count("/") <= 2]
    header = f"## Final evaluation (step {summary.get('step')})\n\n| metric | value |\n|---|---|"
    return "\n".join([header, *rows])


def _usage_section(cfg: ExperimentConfig, lora_dir: Path) -> str:
    return (
        "## Use with stock diffusers\n\n"
        "With pictures already at the panel size, this is exactly `pico infer --seeds 1 --seed 0` (same pixels); "
        "other sizes are resized here by PIL in 8 bits, where pico_lightning resizes in float, so results can "
        "differ slightly.\n\n"
        f"```python\n{diffusers_snippet(cfg, lora_dir)}```"
    )


def diffusers_snippet(cfg: ExperimentConfig, lora_dir: str | Path, seed: int = 0) -> str:
    """Stock-diffusers code that fills B' as `pico infer --seeds 1 --seed ``seed``` does."""
    model_dir = cfg.model.pretrained_dir or "PATH/TO/FLUX.1-Fill-dev"
    return f'''import torch
from diffusers import FluxFillPipeline
from PIL import Image

MODEL_DIR = "{model_dir}"  # the base model (diffusers format)
LORA_DIR = "{lora_dir}"  # this folder
A, A_OUT, B = "a.png", "a_out.png", "b.png"  # the exemplar pair and the query
SIZE = {cfg.data.panel_size}  # panel side in pixels

pipe = FluxFillPipeline.from_pretrained(MODEL_DIR, dtype={DTYPE_NAMES[cfg.model.dtype]})
pipe.load_lora_weights(LORA_DIR)

# A | A' over B | B', B' black; the mask is white on B', the panel to generate
grid = Image.new("RGB", (2 * SIZE, 2 * SIZE))
for index, path in enumerate((A, A_OUT, B)):
    panel = Image.open(path).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    grid.paste(panel, ((index % 2) * SIZE, (index // 2) * SIZE))
mask = Image.new("L", grid.size, 0)
mask.paste(255, (SIZE, SIZE, 2 * SIZE, 2 * SIZE))

result = pipe(
    prompt="",
    image=grid,
    mask_image=mask,
    height=2 * SIZE,
    width=2 * SIZE,
    num_inference_steps={cfg.eval.num_steps},
    guidance_scale={cfg.model.guidance},
    max_sequence_length={cfg.model.sequence_length()},
    generator=torch.Generator().manual_seed({seed}),
).images[0]
query = Image.open(B)
b_out = result.crop((SIZE, SIZE, 2 * SIZE, 2 * SIZE)).resize(query.size, Image.Resampling.BICUBIC)
b_out.save("b_out.png")
'''
