"""The end-to-end CPU demo behind `make demo`: data, evaluation before, training, evaluation after.

    python -m pico_lightning.run.demo --out outputs/demo [key=value ...]

1. `pico prep visrel-lite` into OUT/data (skipped when it is already there),
2. seed-scored evaluation of the untrained model (the tiny base, no LoRA) into OUT/eval_before,
3. `pico train experiments/demo.yaml` into OUT/runs/demo (resumable: a second demo continues or reuses it),
   which evaluates the LoRA at the end of fit,
4. a table of metrics before vs after, beside the trivial baseline B' = B, and where every file is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "demo.yaml"
SHOWN = ("psnr", "ssim", "miou")


def prepare_data(root: Path, seed: int) -> None:
    if (root / "index.json").is_file() and (root / "suites").is_dir():
        print(f"[demo] data already at {root}")
        return
    from pico_lightning.cli import main as pico

    pico(["prep", "visrel-lite", "--out", str(root), "--seed", str(seed)])


def draw_episodes(cfg, path: Path, count: int = 4) -> None:
    """What PICO does, drawn from the data: ground-truth 2x2 episodes (A | A' over B | B') side by side."""
    import numpy as np

    from pico_lightning.data.suites import load_suite
    from pico_lightning.evaluation.evaluator import data_root
    from pico_lightning.evaluation.gallery import save_png
    from pico_lightning.panels import Layout, compose_grid, to_uint8

    layout = Layout(2, 2, 96)
    root = data_root(cfg.data.shards, cfg.data.root)
    episodes = load_suite(root, "segmentation")[:2] + load_suite(root, "user_tasks")[: count - 2]
    gap = np.full((layout.height, 6, 3), 255, dtype=np.uint8)
    grids = [to_uint8(compose_grid(e.panels, layout)) for e in episodes]
    save_png(np.concatenate([part for grid in grids for part in (grid, gap)][:-1], axis=1), path)


def comparison_table(before: dict, after: dict) -> str:
    """Markdown rows: suite metric | before training | after training | baseline B' = B."""
    lines = ["| suite / metric | before | after | baseline B'=B |", "|---|---|---|---|"]
    for key in sorted(after):
        parts = key.split("/")
        if len(parts) != 3 or parts[2] not in SHOWN:
            continue
        baseline = after.get(f"eval/{parts[1]}/baseline_{parts[2]}", float("nan"))
        lines.append(
            f"| {parts[1]} {parts[2]} | {before.get(key, float('nan')):.3f} | {after[key]:.3f} | {baseline:.3f} |"
        )
    return "\n".join(lines)


def run_demo(out: Path, overrides: list[str]) -> dict:
    from pico_lightning.config import load_config
    from pico_lightning.run.evaluation import run_evaluation
    from pico_lightning.run.train import fit

    cfg = load_config(
        EXPERIMENT,
        [
            f"data.root={out / 'data'}",
            f"run.dir={out / 'runs'}",
            "run.resume=auto",
            f"model.text_cache_dir={out / 'text_cache'}",
            *overrides,
        ],
    )
    prepare_data(out / "data", cfg.data.seed)
    draw_episodes(cfg, out / "episodes.png")
    print("[demo] evaluating the untrained model (seed scorer on)")
    before = run_evaluation(cfg, None, out / "eval_before")
    print(f"[demo] training {cfg.train.max_steps} steps on CPU")
    run_dir = fit(cfg)
    summary = json.loads((run_dir / "summary.json").read_text())
    after = summary["eval"]
    table = comparison_table(before, after)
    (out / "results.md").write_text(table + "\n")
    print("\n" + table + "\n")
    step = summary["step"]
    wandb_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    print("[demo] files:")
    for name, path in (
        ("run directory", run_dir),
        ("checkpoint", run_dir / "checkpoints" / "last.ckpt"),
        ("LoRA (diffusers format)", run_dir / "lora" / "pytorch_lora_weights.safetensors"),
        ("training metrics", run_dir / "metrics.jsonl"),
        ("eval metrics", run_dir / "eval" / f"step_{step}" / "metrics.json"),
        ("gallery", run_dir / "eval" / f"step_{step}" / "gallery.png"),
        ("gallery before training", out / "eval_before" / "gallery.png"),
        ("W&B offline run", wandb_runs[-1] if wandb_runs else "(W&B disabled)"),
        ("before/after table", out / "results.md"),
    ):
        print(f"  {name:26s} {path}")
    return {"before": before, "after": after}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="demo output directory")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of experiments/demo.yaml")
    args = parser.parse_args(argv)
    from pico_lightning.cli import configure_environment
    from pico_lightning.errors import UserError

    configure_environment()
    try:
        run_demo(Path(args.out), args.overrides)
    except UserError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
