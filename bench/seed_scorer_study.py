"""How well does the attention-guided seed scorer choose? A study on a trained run's evaluation suites.

    python -m bench.seed_scorer_study --run outputs/demo/runs/demo [--seeds 8] [--steps 8] [--scorer-steps 2]

Every episode is filled with all |S| seeds finished, so each seed's final quality is known: the study runs the
seed scorer's public pieces itself (``capture_routing`` over the first k resumable sampler steps, every score of
``inference.routing``, then the remaining steps for every seed), where ``fill_episode`` would finish only the best. For
|S| in {1, 4, 8} (the first |S| seeds) it reports the mean metric of: the scorer's choice for each of the four
scores, a random seed (the expected value: mean over the seeds), and the oracle best of S (the upper bound). It
also reports, per score, the Spearman rank correlation between score and final quality over the seeds of an
episode, averaged over episodes; the mean quality of each candidate position over the episodes; and how often each
score picks each position. Episodes draw their own noise (``evaluation.evaluator.episode_seeds``, as the evaluation
does), so no position is better everywhere: a score that piles its picks on one position reads the noise, not the
episode. Quality is IoU for mask suites and PSNR for image suites.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

SUBSETS = (1, 4, 8)


def spearman(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Rank correlation of two (S,) vectors; None when either is constant."""
    rx, ry = x.argsort().argsort().double(), y.argsort().argsort().double()
    if rx.std() == 0 or ry.std() == 0 or x.unique().numel() == 1 or y.unique().numel() == 1:
        return None
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def episode_quality(item, predictions: torch.Tensor) -> torch.Tensor:
    """(S,) final quality of each seed's prediction (S, 3, P, P) against the item's target."""
    from pico_lightning.evaluation.metrics import episode_iou, episode_psnr, prepare

    targets = item.target[None].expand_as(predictions)
    outputs, truth = prepare(item.kind, predictions, targets)
    return (episode_iou if item.kind == "mask" else episode_psnr)(outputs, truth).float()


@torch.no_grad()
def finish_every_seed(model, item, text, guidance: float, seeds: list[int], layout, scorer) -> tuple:
    """((S, 3, H, W) images, {score name: (S,) scores}): the seed scorer's first k steps and routing scores, then
    every seed finished rather than the best one alone."""
    from pico_lightning.inference.routing import SCORES, mean_routing, score_routing
    from pico_lightning.inference.sampler import decode, denoise, init_state, make_scheduler
    from pico_lightning.inference.seed_scorer import capture_routing

    parts, grid, mask = model.parts, item.grid[None], item.mask[None]
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    state = init_state(parts.autoencoder, grid, mask, generators, text.prompt_embeds.dtype)
    scheduler = make_scheduler(parts.scheduler, scorer.num_steps, state.latent_size, grid.device)
    text_len, k = text.prompt_embeds.shape[1], scorer.scorer_steps
    with capture_routing(parts.transformer, scorer.score_blocks, layout, parts.autoencoder.scale_factor, text_len) as c:
        state = denoise(parts.transformer, scheduler, state, text, guidance, range(k))
    routing = mean_routing(c) if k > 0 else None
    scores = {name: score_routing(*routing, name) if routing else torch.zeros(len(seeds)) for name in SCORES}
    state = denoise(parts.transformer, scheduler, state, text, guidance, range(k, scorer.num_steps))
    return decode(parts.autoencoder, state), scores


def study(run_dir: Path, seeds: int, steps: int, scorer_steps: int) -> dict:
    from pico_lightning.config import EvalConfig, load_config
    from pico_lightning.data.catalogue import DatasetCatalogue
    from pico_lightning.evaluation.evaluator import episode_seeds
    from pico_lightning.inference.loading import load_inference_model
    from pico_lightning.inference.routing import SCORES
    from pico_lightning.panels import split_grid
    from pico_lightning.run_dir import RunDir

    run = RunDir(run_dir)
    cfg = load_config(run.config)
    layout = cfg.data.layout()
    model = load_inference_model(cfg.model, run.lora)
    items = DatasetCatalogue(cfg.data, cfg.eval).eval_items()
    scorer = EvalConfig(num_steps=steps, num_seeds=seeds, scorer_steps=scorer_steps)
    rows = []
    for suite, suite_items in items.items():
        for item in suite_items:
            seed_list = episode_seeds(cfg.eval.seed, item.episode, seeds)
            text = model.text(item.prompt)
            images, scores = finish_every_seed(model, item, text, cfg.model.guidance, seed_list, layout, scorer)
            quality = episode_quality(item, torch.stack([split_grid(i, layout)[-1].clamp(-1, 1) for i in images]))
            rows.append({"suite": suite, "quality": quality, "scores": scores})
    return summarise(rows, SCORES, seeds, steps, scorer_steps)


def summarise(rows: list[dict], scores: tuple[str, ...], seeds: int, steps: int, scorer_steps: int) -> dict:
    """Per suite and |S|: mean quality of single, random, oracle and each score's choice; and rank correlations."""
    result: dict = {"steps": steps, "scorer_steps": scorer_steps, "suites": {}}
    for suite in sorted({r["suite"] for r in rows}):
        mine = [r for r in rows if r["suite"] == suite]
        table = {}
        for size in (s for s in SUBSETS if s <= seeds):
            table[size] = {
                "random": _mean([r["quality"][:size].mean() for r in mine]),
                "oracle": _mean([r["quality"][:size].max() for r in mine]),
                **{name: _mean([r["quality"][_pick(r, name, size)] for r in mine]) for name in scores},
                "model_evaluations": size * scorer_steps + steps - scorer_steps if size > 1 else steps,
            }
        correlations = {}
        for name in scores:
            values = [c for r in mine if (c := spearman(r["scores"][name], r["quality"])) is not None]
            correlations[name] = _mean(values) if values else None
        result["suites"][suite] = {
            "episodes": len(mine),
            "by_seeds": table,
            "spearman": correlations,
            "per_seed": [round(_mean([r["quality"][s] for r in mine]), 4) for s in range(seeds)],
            "picks": {name: _picks(mine, name, seeds) for name in scores},
        }
    return result


def _pick(row: dict, score: str, size: int) -> int:
    """The seed ``score`` chooses among the episode's first ``size`` seeds."""
    return int(row["scores"][score][:size].argmax())


def _picks(rows: list[dict], score: str, seeds: int) -> list[int]:
    """How often each of the ``seeds`` seeds is the score's choice among all of them: a score that reads the episode
    spreads its picks; one that always prefers the same noise draw piles them on one seed."""
    counts = [0] * seeds
    for row in rows:
        counts[_pick(row, score, seeds)] += 1
    return counts


def _mean(values) -> float:
    return float(torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values]).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a run directory (its config's suites and its LoRA)")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--scorer-steps", type=int, default=2)
    parser.add_argument("--out", default="bench/seed_scorer_study.json")
    args = parser.parse_args(argv)
    result = study(Path(args.run), args.seeds, args.steps, args.scorer_steps)
    Path(args.out).write_text(json.dumps(result, indent=2))
    for suite, data in result["suites"].items():
        print(f"\n{suite} ({data['episodes']} episodes), quality = {'IoU' if 'seg' in suite else 'PSNR'}")
        names = list(next(iter(data["by_seeds"].values())))
        print("|S| " + " ".join(f"{n:>14s}" for n in names))
        for size, row in data["by_seeds"].items():
            print(f"{size:<3} " + " ".join(f"{row[n]:14.3f}" for n in names))
        print(
            "spearman(score, quality): "
            + ", ".join(f"{n} {v:+.3f}" if v is not None else f"{n} n/a" for n, v in data["spearman"].items())
        )
        print("mean quality per seed: " + " ".join(f"{q:.3f}" for q in data["per_seed"]))
        print("picks among all seeds: " + "; ".join(f"{n} {c}" for n, c in data["picks"].items()))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
