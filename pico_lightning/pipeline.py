"""`PicoPipeline`: the one inference surface that `pico infer`, `pico eval` and notebooks share.

Load once, call many times; the model stays loaded between calls::

    from pico_lightning import PicoPipeline
    pipe = PicoPipeline.from_run("outputs/demo/runs/demo")
    out = pipe(exemplar=("a.png", "a_out.png"), query="b.png", seeds=4)

``out.image`` is B' as a PIL image at the query's own size, ``out.grid`` the four panels (A | A' over B | B') and
``out.report`` what `pico infer` writes to OUT.json (seeds tried, their scores, the chosen seed, steps,
``model_evaluations``, seconds). Pictures may be PIL images, file paths or uint8 arrays (H, W[, C]). A list of
queries shares the exemplar and one model pass: with one seed their noisy latents run as one batch; with several
seeds the seed scorer fills them one after another (it picks a seed per episode).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pico_lightning.config import ConfigError, ExperimentConfig, load_config
from pico_lightning.errors import UserError
from pico_lightning.run_dir import RunDir

if TYPE_CHECKING:  # torch-free at import: `pico --help` and `import pico_lightning` stay fast
    from PIL.Image import Image

    from pico_lightning.panels import Layout

# How the sampling checks name the arguments: the Python keywords here, the CLI passes its flags
KEYWORDS = {"seeds": "seeds", "steps": "steps", "guidance": "guidance", "panel_size": "panel_size"}


@dataclass
class PicoResult:
    """One filled episode."""

    image: Image  # B' at the query's own size
    grid: Image  # A | A' over B | B' at the panel size, B' generated
    report: dict  # seeds, scores, chosen_seed, steps, model_evaluations, prompt, panel_size, output_size, seconds


@dataclass(frozen=True)
class Sampling:
    """Checked sampling settings of one call."""

    seeds: list[int]
    steps: int
    guidance: float
    layout: Layout  # 2 x 2


def check_sampling(cfg: ExperimentConfig, seeds, seed, steps, guidance, panel_size, names=KEYWORDS) -> Sampling:
    """The call's settings, defaults from ``cfg``; UserError naming the argument (``names``) that cannot work.

    Cheap and model-free: `pico infer` runs it before any model loads."""
    from pico_lightning import panels

    if seeds < 1:
        raise UserError(f"{names['seeds']}: {seeds}; expected an integer >= 1")
    steps = cfg.eval.num_steps if steps is None else steps
    if steps < 1:
        raise UserError(f"{names['steps']}: {steps}; expected an integer >= 1")
    if seeds > 1 and steps <= cfg.eval.scorer_steps:
        raise UserError(
            f"{names['steps']}: {steps} must exceed eval.scorer_steps={cfg.eval.scorer_steps} "
            f"when {names['seeds']} > 1 "
            f"(the scorer runs that many steps of every seed first); raise {names['steps']} or use {names['seeds']} 1"
        )
    guidance = cfg.model.guidance if guidance is None else guidance
    if not math.isfinite(guidance):
        raise UserError(f"{names['guidance']}: {guidance}; expected a finite number (FLUX.1-Fill's default is 30)")
    size = cfg.data.panel_size if panel_size is None else panel_size
    if size < 1:
        raise UserError(
            f"{names['panel_size']}: {size}; expected a positive side in pixels, e.g. {cfg.data.panel_size}"
        )
    try:
        layout = panels.Layout(2, 2, size)
    except UserError as err:
        raise UserError(f"{names['panel_size']}: {err}") from None
    return Sampling(list(range(seed, seed + seeds)), steps, guidance, layout)


def resolve_source(run_dir=None, model_dir=None, config=None, lora=None, overrides=()) -> tuple[ExperimentConfig, str]:
    """-> (ExperimentConfig, LoRA path or None) for one model source; a run directory brings its own LoRA.

    UserError when no source is given (no silent random model), a LoRA path is missing, or a run has no LoRA."""
    overrides = list(overrides)
    if lora and not Path(lora).exists():  # before any model loads (a real base takes minutes)
        raise ConfigError(f"--lora {lora}: not found; expected a LoRA directory or its .safetensors file")
    if not (run_dir or model_dir or config):
        raise ConfigError(
            "no model: pass a run (RUN_DIR, or --run RUN_DIR for infer), --model-dir FLUX_FILL_DIR [--lora PATH], "
            "or --config EXPERIMENT.yaml for its base model alone (e.g. experiments/demo.yaml)"
        )
    if run_dir:
        run = RunDir.existing(run_dir)
        cfg = load_config(run.config, overrides)
        if not lora and not run.lora.is_dir():
            raise ConfigError(
                f"{run.path}: no lora/ (the run has not finished); write it with `pico export {run.path} "
                f"--out {run.lora}` (from its last checkpoint), or pass --lora PATH"
            )
        return cfg, str(lora or run.lora)
    if model_dir:
        return load_config(config, [f"model.pretrained_dir={model_dir}", *overrides]), lora
    return load_config(config, overrides), lora


def check_panel_fits(layout, parts, name: str = "panel_size") -> None:
    """UserError naming ``name`` and the limit when the grid is past what the model's sampler can run: FLUX's
    resolution shift exp(mu) grows with the token count until the scheduler's float32 sigmas turn NaN."""
    from pico_lightning.inference.sampler import largest_panel_size

    largest = largest_panel_size(layout.rows, layout.cols, parts.autoencoder.scale_factor, parts.scheduler.config)
    if largest is not None and layout.panel_size > largest:
        raise UserError(
            f"{name}: {layout.panel_size} is too large for this model; at most {largest} px "
            "(past it, the scheduler's resolution shift exp(mu) overflows float32)"
        )


def evaluation_items(cfg: ExperimentConfig) -> dict:
    """The evaluation episodes of ``cfg.eval.suites``, ``{suite: [EvalItem]}`` (read without any model)."""
    from pico_lightning.data.catalogue import DatasetCatalogue

    return DatasetCatalogue(cfg.data, cfg.eval).eval_items()


def run_evaluation(cfg: ExperimentConfig, lora: str | None, out_dir: Path) -> dict[str, float]:
    """`pico eval`: seed-scored metrics of the base (+ LoRA) on ``cfg.eval.suites``; writes metrics.json and
    gallery.png. The suites are read before the model loads, so a missing one fails fast."""
    items = evaluation_items(cfg)
    return PicoPipeline(cfg, lora).evaluate(out_dir, items=items)


class PicoPipeline:
    """A base FLUX.1-Fill model (+ PICO LoRA), loaded once, that fills episodes (A -> A', B) -> B'."""

    def __init__(self, cfg: ExperimentConfig, lora: str | Path | None = None, device=None):
        from pico_lightning.inference import loading

        self.cfg = cfg
        self.lora = str(lora) if lora else None
        self.model = loading.load_inference_model(cfg.model, self.lora, device, compile=cfg.eval.compile)

    @classmethod
    def from_run(cls, run_dir: str | Path, overrides: Sequence[str] = (), device=None) -> PicoPipeline:
        """A finished run's base and LoRA (RUN_DIR/config.yaml, RUN_DIR/lora), ``overrides`` as key=value."""
        return cls(*resolve_source(run_dir=run_dir, overrides=overrides), device=device)

    @classmethod
    def from_pretrained(
        cls, model_dir: str | Path, lora: str | Path | None = None, overrides: Sequence[str] = (), device=None
    ) -> PicoPipeline:
        """A diffusers-format FLUX.1-Fill directory, with a diffusers-format LoRA (directory or file) if given."""
        return cls(*resolve_source(model_dir=str(model_dir), lora=lora, overrides=overrides), device=device)

    @classmethod
    def from_config(
        cls, experiment: str | Path | ExperimentConfig, overrides: Sequence[str] = (), device=None
    ) -> PicoPipeline:
        """An experiment's base model alone (no LoRA): a YAML path or a loaded config; an empty
        model.pretrained_dir builds the tiny in-process model."""
        if isinstance(experiment, ExperimentConfig):
            if overrides:
                raise ValueError("overrides apply to an experiment file; pass a YAML path, or change the config")
            return cls(experiment, device=device)
        return cls(*resolve_source(config=str(experiment), overrides=overrides), device=device)

    def __call__(
        self,
        exemplar,
        query,
        seeds: int = 1,
        steps: int | None = None,
        seed: int = 0,
        guidance: float | None = None,
        prompt: str | None = None,
        panel_size: int | None = None,
    ) -> PicoResult | list[PicoResult]:
        """Fill B' for ``query`` (or each of a list of queries) given the ``exemplar`` pair (A, A').

        ``seeds`` candidates (``seed``, ``seed`` + 1, ...) go through the seed scorer when > 1; ``steps``,
        ``guidance`` and ``panel_size`` default to eval.num_steps, model.guidance and data.panel_size; ``prompt``
        None is the empty prompt. One query -> one :class:`PicoResult`, a list -> a list."""
        from pico_lightning import panels

        sampling = check_sampling(self.cfg, seeds, seed, steps, guidance, panel_size)
        check_panel_fits(sampling.layout, self.model.parts)
        single = not isinstance(query, (list, tuple))
        queries = [_picture(q) for q in ([query] if single else query)]
        if len(exemplar) != 2:
            raise UserError(f"exemplar: {len(exemplar)} pictures; expected the pair (A, A')")
        pair = [_picture(p) for p in exemplar]
        start = time.perf_counter()
        grids = [panels.compose_grid([*pair, q, None], sampling.layout, self.cfg.data.resize) for q in queries]
        filled = self._fill(grids, sampling, prompt or "")
        seconds = round(time.perf_counter() - start, 3)
        results = [
            self._result(g, q, f, r, sampling, prompt or "", seconds) for g, q, (f, r) in zip(grids, queries, filled)
        ]
        return results[0] if single else results

    def evaluate(self, out_dir: str | Path, suites: Sequence[str] | None = None, items: dict | None = None) -> dict:
        """`pico eval` on this loaded model: seed-scored metrics on ``suites`` (default eval.suites) or on the
        given ``items`` (:func:`evaluation_items`); writes metrics.json and gallery.png to ``out_dir``."""
        from pico_lightning.evaluation.evaluator import evaluate
        from pico_lightning.evaluation.gallery import gallery_image, gallery_rows, save_png
        from pico_lightning.files import write_json

        cfg = self.cfg if suites is None else replace(self.cfg, eval=replace(self.cfg.eval, suites=list(suites)))
        items = items if items is not None else evaluation_items(cfg)
        layout = cfg.data.layout()
        metrics, outputs = evaluate(self.model, items, cfg.eval, layout, cfg.model.guidance)
        _, rows = gallery_rows(outputs, layout, cfg.eval.gallery_episodes)
        save_png(gallery_image(rows), Path(out_dir) / "gallery.png")
        write_json(Path(out_dir) / "metrics.json", metrics)
        return metrics

    def _fill(self, grids: list, sampling: Sampling, prompt: str) -> list[tuple]:
        """-> [(target panel (3, S, S) on the CPU, report)] per grid."""
        import torch

        from pico_lightning import panels
        from pico_lightning.inference.seed_scorer import fill_episode

        device, layout = self.model.device, sampling.layout
        mask = panels.target_mask(layout)[None].to(device)
        text = self.model.text(prompt)
        args = (mask, text, sampling.steps, sampling.guidance, sampling.seeds, layout)
        if len(sampling.seeds) == 1:  # one seed: the episodes denoise as one batch
            images, report = fill_episode(self.model, torch.stack(grids).to(device), *args)
            return [(panels.split_grid(image.cpu(), layout)[-1], dict(report)) for image in images]
        filled = []
        for grid in grids:
            image, report = fill_episode(self.model, grid[None].to(device), *args, self.cfg.eval)
            filled.append((panels.split_grid(image[0].cpu(), layout)[-1], report))
        return filled

    def _result(self, grid, query, target, report: dict, sampling: Sampling, prompt: str, seconds: float):
        """Paste B' into the grid, resize it to the query's size, and complete the report as OUT.json has it."""
        from pico_lightning import panels

        composed = grid.clone()
        rows, cols = sampling.layout.cell(sampling.layout.num_panels - 1)
        composed[:, rows, cols] = target
        width, height = _size(query)
        image = panels.to_pil(panels.unfit_panel(target, height, width, self.cfg.data.resize))
        size = sampling.layout.panel_size
        report.update(steps=sampling.steps, prompt=prompt, panel_size=size, output_size=[width, height])
        return PicoResult(image, panels.to_pil(composed), {**report, "seconds": seconds})


def _picture(picture):
    """A path is read by the one picture reader (UserError naming an unreadable file); PIL images and arrays pass
    through."""
    from pico_lightning.pictures import read_picture

    if isinstance(picture, (str, Path)):
        return read_picture(picture)
    return picture


def _size(picture) -> tuple[int, int]:
    """(width, height) of a PIL image, an (H, W[, C]) array or a (C, H, W) / (H, W) tensor."""
    import torch
    from PIL import Image

    if isinstance(picture, Image.Image):
        return picture.size
    shape = tuple(picture.shape)
    if isinstance(picture, torch.Tensor):
        return shape[-1], shape[-2]
    return shape[1], shape[0]
