"""`pico infer`: one episode (A -> A', B) -> B', with the attention-guided seed scorer when --seeds > 1.

Writes OUT.png (the B' panel), OUT.grid.png (A | A' over B | B') and OUT.json (seeds tried, their scores, the
chosen seed, steps, model_evaluations = transformer evaluations spent, seconds).
"""

from __future__ import annotations

import argparse

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
    parser.add_argument("--out", required=True, help="output PNG path (B' panel)")
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
    from pathlib import Path

    from pico_lightning import panels
    from pico_lightning.errors import UserError
    from pico_lightning.inference.loading import load_inference_model
    from pico_lightning.inference.seed_scorer import fill_episode

    cfg, lora = resolve_model(args)
    if args.seeds < 1 or (args.steps is not None and args.steps < 1):
        raise UserError("--seeds and --steps: expected integers >= 1")
    layout = panels.Layout(2, 2, args.panel_size or cfg.data.panel_size)
    pictures = [panels.load_image(p) for p in (*args.exemplar, args.query)]
    start = time.perf_counter()
    model = load_inference_model(cfg.model, lora)
    grid = panels.compose_grid([*pictures, None], layout, cfg.data.resize)[None].to(model.device)
    mask = panels.target_mask(layout)[None].to(model.device)
    steps = args.steps or cfg.eval.num_steps
    scorer = cfg.eval if args.seeds > 1 else None
    image, report = fill_episode(
        model,
        grid,
        mask,
        model.text(args.prompt),
        steps,
        cfg.model.guidance if args.guidance is None else args.guidance,
        list(range(args.seed, args.seed + args.seeds)),
        layout,
        scorer,
    )
    result = grid[0].cpu().clone()
    target = panels.split_grid(image[0].cpu(), layout)[-1]
    rows, cols = layout.cell(layout.num_panels - 1)
    result[:, rows, cols] = target
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    panels.to_pil(target).save(out)
    panels.to_pil(result).save(out.with_suffix(".grid.png"))
    report.update(steps=steps, prompt=args.prompt, seconds=round(time.perf_counter() - start, 3))
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    print(f"wrote {out}, {out.with_suffix('.grid.png')}, {out.with_suffix('.json')}")
    return 0
