"""`pico infer`: one episode (A -> A', B) -> B', with the attention-guided seed scorer when --seeds > 1.

Writes OUT.png (B', at the query picture's own size), OUT.grid.png (A | A' over B | B', at the panel size) and
OUT.json (seeds tried, their scores, the chosen seed, steps, model_evaluations = transformer evaluations spent,
panel_size, output_size, seconds). Every argument is checked before the model loads; no output may overwrite
an input.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pico_lightning.commands.model_args import add_model_arguments, resolve_model


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

    from pico_lightning.pipeline import PicoPipeline, check_panel_fits

    cfg, lora = resolve_model(args)
    sampling = check_sampling(args, cfg)
    out = check_out(args)
    pictures = read_inputs(args)
    start = time.perf_counter()  # OUT.json's seconds include loading the model
    pipe = PicoPipeline(cfg, lora)
    check_panel_fits(sampling.layout, pipe.model.parts, "--panel-size")
    result = pipe(
        exemplar=pictures[:2],
        query=pictures[2],
        seeds=args.seeds,
        steps=args.steps,
        seed=args.seed,
        guidance=args.guidance,
        prompt=args.prompt,
        panel_size=args.panel_size,
    )
    result.image.save(out)
    result.grid.save(out.with_suffix(".grid.png"))
    report = {**result.report, "seconds": round(time.perf_counter() - start, 3)}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    grid_file, json_file = out.with_suffix(".grid.png"), out.with_suffix(".json")
    (width, height), size = result.image.size, report["panel_size"]
    print(f"wrote {out} ({width}x{height}: the query's size; panels {size} px), {grid_file}, {json_file}")
    return 0


def read_inputs(args: argparse.Namespace) -> list:
    """The --exemplar pair and the --query as (H, W, 3) uint8 pictures (``pictures.read_picture``)."""
    from pico_lightning.pictures import read_picture

    return [read_picture(path) for path in (*args.exemplar, args.query)]


def check_sampling(args: argparse.Namespace, cfg):
    """The flags' sampling settings (PicoPipeline's checks, naming the flags), before any model loads."""
    from pico_lightning.pipeline import check_sampling as check

    flags = {"seeds": "--seeds", "steps": "--steps", "guidance": "--guidance", "panel_size": "--panel-size"}
    return check(cfg, args.seeds, args.seed, args.steps, args.guidance, args.panel_size, flags)


def check_out(args: argparse.Namespace) -> Path:
    """--out as a writable picture path whose three files overwrite no input; UserError naming the problem."""
    from pico_lightning.commands.outputs import writable_dir
    from pico_lightning.errors import UserError
    from pico_lightning.pictures import PICTURE_SUFFIXES

    out = Path(args.out)
    if out.suffix.lower() not in PICTURE_SUFFIXES:
        raise UserError(f"--out {out}: expected a picture file name ending in one of {', '.join(PICTURE_SUFFIXES)}")
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
