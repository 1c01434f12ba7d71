"""`pico infer`: one episode (A -> A', B) -> B', with the attention-guided seed scorer when --seeds > 1.

Writes OUT.png (B', at the query picture's own size), OUT.grid.png (A | A' over B | B', at the panel size) and
OUT.json (seeds tried, their scores, the chosen seed, steps, model_evaluations = transformer evaluations spent,
panel_size, output_size, seconds). Every argument is checked before the model loads; no output may overwrite
an input.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from pico_lightning.commands.model_args import add_model_arguments, resolve_model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "infer",
        help="one episode -> B'",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--exemplar", nargs=2, required=True, metavar=("A", "A_OUT"), help="the exemplar pair")
    parser.add_argument("--query", required=True, metavar="B", help="the query picture")
    parser.add_argument("--out", required=True, help="output picture path, e.g. out/b_edit.png (B')")
    parser.add_argument("--seeds", type=int, default=1, help="candidate seeds |S| for the seed scorer")
    parser.add_argument("--seed", type=int, default=0, help="first seed (candidates: seed, seed+1, ...)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps T (default eval.num_steps)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance embedding (default model.guidance)")
    parser.add_argument("--prompt", default="", help="text label, e.g. 'Segment' (default: none)")
    parser.add_argument("--panel-size", type=int, default=None, help="panel side in px (default data.panel_size)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    import time

    from pico_lightning import panels
    from pico_lightning.inference.loading import load_inference_model
    from pico_lightning.inference.seed_scorer import fill_episode

    cfg, lora = resolve_model(args)
    layout, steps, guidance = check_sampling(args, cfg)
    out = check_out(args)
    pictures = [panels.load_image(p) for p in (*args.exemplar, args.query)]
    start = time.perf_counter()
    model = load_inference_model(cfg.model, lora)
    check_panel_fits(layout, model.parts)
    grid = panels.compose_grid([*pictures, None], layout, cfg.data.resize)[None].to(model.device)
    mask = panels.target_mask(layout)[None].to(model.device)
    seeds = list(range(args.seed, args.seed + args.seeds))
    scorer = cfg.eval if args.seeds > 1 else None
    image, report = fill_episode(model, grid, mask, model.text(args.prompt), steps, guidance, seeds, layout, scorer)
    result = grid[0].cpu().clone()
    target = panels.split_grid(image[0].cpu(), layout)[-1]
    rows, cols = layout.cell(layout.num_panels - 1)
    result[:, rows, cols] = target
    width, height = pictures[2].size  # B' at the query's own size, as the user gave it
    panels.to_pil(panels.unfit_panel(target, height, width, cfg.data.resize)).save(out)
    panels.to_pil(result).save(out.with_suffix(".grid.png"))
    seconds = round(time.perf_counter() - start, 3)
    report.update(steps=steps, prompt=args.prompt, panel_size=layout.panel_size, output_size=[width, height])
    out.with_suffix(".json").write_text(json.dumps({**report, "seconds": seconds}, indent=2))
    grid_file, json_file = out.with_suffix(".grid.png"), out.with_suffix(".json")
    print(f"wrote {out} ({width}x{height}: the query's size; panels {layout.panel_size} px), {grid_file}, {json_file}")
    return 0


def check_sampling(args: argparse.Namespace, cfg):
    """(layout, steps, guidance) from the flags and the config; UserError naming the flag that cannot work."""
    from pico_lightning import panels
    from pico_lightning.errors import UserError

    if args.seeds < 1:
        raise UserError(f"--seeds: {args.seeds}; expected an integer >= 1")
    steps = cfg.eval.num_steps if args.steps is None else args.steps
    if steps < 1:
        raise UserError(f"--steps: {steps}; expected an integer >= 1")
    if args.seeds > 1 and steps <= cfg.eval.scorer_steps:
        raise UserError(
            f"--steps: {steps} must exceed eval.scorer_steps={cfg.eval.scorer_steps} when --seeds > 1 "
            "(the scorer runs that many steps of every seed first); raise --steps or use --seeds 1"
        )
    guidance = cfg.model.guidance if args.guidance is None else args.guidance
    if not math.isfinite(guidance):
        raise UserError(f"--guidance: {guidance}; expected a finite number (FLUX.1-Fill's default is 30)")
    size = cfg.data.panel_size if args.panel_size is None else args.panel_size
    if size < 1:
        raise UserError(f"--panel-size: {size}; expected a positive side in pixels, e.g. {cfg.data.panel_size}")
    try:
        return panels.Layout(2, 2, size), steps, guidance
    except UserError as err:
        raise UserError(f"--panel-size: {err}") from None


def check_panel_fits(layout, parts) -> None:
    """UserError naming --panel-size and the limit when the grid is past what the model's sampler can run: FLUX's
    resolution shift exp(mu) overflows past a token count set by the scheduler (NaN sigmas, then OverflowError)."""
    from pico_lightning.errors import UserError
    from pico_lightning.inference.sampler import largest_panel_size

    largest = largest_panel_size(layout.rows, layout.cols, parts.autoencoder.scale_factor, parts.scheduler.config)
    if largest is not None and layout.panel_size > largest:
        raise UserError(
            f"--panel-size: {layout.panel_size} is too large for this model; at most {largest} px "
            "(past it, the scheduler's resolution shift exp(mu) overflows float32)"
        )


def check_out(args: argparse.Namespace) -> Path:
    """--out as a writable picture path whose three files overwrite no input; UserError naming the problem."""
    from pico_lightning.commands.outputs import writable_dir
    from pico_lightning.errors import UserError

    out = Path(args.out)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"--out {out}: expected a picture file name ending in one of {', '.join(IMAGE_SUFFIXES)}")
    if out.is_dir():
        raise UserError(f"--out {out}: is a directory; give a file name such as {out / 'b_out.png'}")
    inputs = [
        ("--exemplar", Path(args.exemplar[0])),
        ("--exemplar", Path(args.exemplar[1])),
        ("--query", Path(args.query)),
    ]
    for written in (out, out.with_suffix(".grid.png"), out.with_suffix(".json")):
        for flag, given in inputs:
            if _same_file(written, given):
                raise UserError(f"--out {out}: would overwrite {flag} {given}; choose another output name")
    writable_dir(out.parent, "--out")
    return out


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False
