"""The end-to-end CPU demo behind `make demo`: data, evaluation before, training, evaluation after.

    python -m pico_lightning.demo --out outputs/demo [key=value ...]

1. VisRel-lite into OUT/data, as `pico prep visrel-lite` writes it (skipped when it is already there), then the
   prompts' embeddings, as `pico embed` makes them,
2. seed-scored evaluation of the tiny pretrained base alone (no LoRA) into OUT/eval_before,
3. `pico train experiments/demo.yaml` into OUT/runs/demo (resumable: a second demo continues or reuses it),
   which evaluates the LoRA at the end of fit; both evaluations include the exemplar-swap control
   (eval.exemplar_swap: the held-in episodes again, each with the exemplar pair of another task),
4. a table of metrics before vs after, beside the trivial baseline B' = B, the in-context evidence against its
   targets, and where every file is (OUT/results.json holds every number).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pico_lightning.run_dir import RunDir

SHOWN = ("psnr", "ssim", "miou")
SWAPPED_PSNR = "eval/seen/swapped_psnr"  # the demo trains on every held-in task: held_in is all seen


def prepare_data(root: Path, seed: int) -> None:
    if (root / "index.json").is_file() and (root / "suites").is_dir():
        print(f"[demo] data already at {root}")
        return
    from pico_lightning.prep.outdir import check_out_dir
    from pico_lightning.prep.visrel_lite import write_visrel_lite

    check_out_dir(root, overwrite=False)
    index = write_visrel_lite(root, seed, progress=sys.stderr.isatty())
    print(f"[demo] wrote {index['num_samples']} samples of {len(index['tasks'])} tasks to {root} (+ suites/)")


def draw_episodes(cfg, path: Path, count: int = 4) -> None:
    """What PICO does, drawn from the data: ground-truth 2x2 episodes (A | A' over B | B') side by side."""
    import numpy as np

    from pico_lightning.data.eval_items import data_root
    from pico_lightning.data.suites import load_suite
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
        if len(parts) != 3 or parts[2] not in SHOWN + ("swapped_psnr",):
            continue
        baseline = after.get(f"eval/{parts[1]}/baseline_{parts[2].removeprefix('swapped_')}", float("nan"))
        name = f"{parts[1]} {parts[2]}".replace("swapped_psnr", "psnr, exemplar of another task")
        lines.append(f"| {name} | {before.get(key, float('nan')):.3f} | {after[key]:.3f} | {baseline:.3f} |")
    return "\n".join(lines)


def evidence(after: dict) -> str:
    """The in-context-learning checks, each with its target, measured on the trained model."""
    held_in_gain = after["eval/seen/psnr"] - after["eval/seen/baseline_psnr"]
    held_out_gain = after["eval/held_out/psnr"] - after["eval/held_out/baseline_psnr"]
    swap_gap = after["eval/seen/psnr"] - after[SWAPPED_PSNR]
    checks = (
        ("held-in PSNR over the copy baseline", held_in_gain, "dB", 2.0),
        ("exemplar-swap gap on held-in (true - swapped)", swap_gap, "dB", 3.0),
        ("segmentation mIoU", after["eval/segmentation/miou"], "", 0.5),
        ("held-out PSNR over the copy baseline (stretch)", held_out_gain, "dB", 0.0),
    )
    return "\n".join(
        f"  {name:48s} {value:+7.2f} {unit:2s} target >= {target:g}: {'met' if value >= target else 'NOT met'}"
        for name, value, unit, target in checks
    )


def run_demo(experiment: Path, out: Path, overrides: list[str]) -> dict:
    from pico_lightning.config import load_config
    from pico_lightning.data.catalogue import DatasetCatalogue, run_prompts
    from pico_lightning.files import write_json
    from pico_lightning.model.text import embed_prompts
    from pico_lightning.pipeline import run_evaluation
    from pico_lightning.training.train import fit

    overrides = [
        f"data.root={out / 'data'}",
        f"run.dir={out / 'runs'}",
        "run.resume=auto",
        f"model.text_cache_dir={out / 'text_cache'}",
        *overrides,
    ]
    cfg = load_config(experiment, overrides)
    prepare_data(out / "data", cfg.data.seed)
    prompts = run_prompts(DatasetCatalogue(cfg.data).prompts())
    encoded = embed_prompts(cfg.model, prompts)
    print(f"[demo] {len(prompts)} prompts embedded ({encoded} new, {len(prompts) - encoded} already cached)")
    draw_episodes(cfg, out / "episodes.png")
    print("[demo] evaluating the pretrained base without LoRA (seed scorer on)")
    before = run_evaluation(cfg, None, out / "eval_before")
    print(f"[demo] LoRA-tuning the base for {cfg.train.max_steps} steps on CPU")
    run = RunDir(fit(cfg))
    summary = run.read_summary()
    after = summary["eval"]
    table = comparison_table(before, after)
    (out / "results.md").write_text(table + "\n")
    write_json(out / "results.json", {"before": before, "after": after})
    print("\n" + table + "\n\n[demo] in-context evidence:\n" + evidence(after) + "\n")
    _print_files(out, run, summary["step"])
    return {"before": before, "after": after}


def _print_files(out: Path, run: RunDir, step: int) -> None:
    from pico_lightning.model.lora import WEIGHTS_NAME

    wandb_runs = sorted(run.path.glob("wandb/offline-run-*"))
    print("[demo] files:")
    for name, path in (
        ("run directory", run.path),
        ("checkpoint", run.last_checkpoint),
        ("LoRA (diffusers format)", run.lora / WEIGHTS_NAME),
        ("training metrics", run.metrics),
        ("eval metrics", run.eval_metrics(step)),
        ("gallery", run.eval_gallery(step)),
        ("gallery before training", out / "eval_before" / "gallery.png"),
        ("W&B offline run", wandb_runs[-1] if wandb_runs else "(W&B disabled)"),
        ("before/after table", out / "results.md"),
        ("every number", out / "results.json"),
    ):
        print(f"  {name:26s} {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/demo", help="demo output directory")
    parser.add_argument("--experiment", default="experiments/demo.yaml", help="the demo's experiment file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="overrides of the experiment file")
    args = parser.parse_args(argv)
    from pico_lightning.cli import configure_environment
    from pico_lightning.errors import UserError

    configure_environment()
    import torch

    # One thread: on an idle 2-core machine two threads are only ~25% faster, but on a busy or shared one their
    # OpenMP barriers stall each other (measured: a training step 10x slower).
    torch.set_num_threads(1)
    try:
        run_demo(Path(args.experiment), Path(args.out), args.overrides)
    except UserError as err:
        missing_base = "pretrained_dir" in str(err) or "SHA256SUMS" in str(err)
        hint = "; rebuild the base with: python -m pico_lightning.demo.tiny_base --out DIR" if missing_base else ""
        print(f"demo: error: {err}{hint}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
