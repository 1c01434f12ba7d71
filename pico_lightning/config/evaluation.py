"""The evaluation section of the experiment schema."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pico_lightning.config.checks import check

HELD_IN_GROUPS = ("seen", "unseen")  # the groups `held_in` is reported as (data/eval_items.py): no suite's name
SEED_STRIDE = 1 << 16  # each evaluation episode owns a block of this many seeds, so eval.num_seeds is at most this


@dataclass
class EvalConfig:
    suites: list[str] = field(default_factory=lambda: ["segmentation", "user_tasks", "held_in"])
    """Evaluation suites to run: `held_in` (val pairs of the held-in tasks, reported as two groups: eval/seen/*
    over the tasks this run trains on, eval/unseen/* over the pool's others), `held_out` (test pairs of the tasks
    no run trains on), `perseg` (eval.perseg_dir), or any suite the data holds as DATA/suites/<name>.tar. Names are
    checked against the data when the run reads it."""
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
    routing_score: Literal["query_mass", "exemplar_mass", "agreement", "concentration"] = "exemplar_mass"
    """Attention routing score used to pick the seed (inference/routing.py). exemplar_mass beat a random seed in 7 of
    8 rows of the seed-scorer study on the shipped demo model (bench/RESULTS.md); moderate evidence at 32 episodes a
    suite, to redo on FLUX.1-Fill."""
    score_blocks: list[int] = field(default_factory=list)
    """Blocks (index over double then single blocks) whose attention is scored; empty = the last 4 double blocks
    (FLUX.1-Fill: 15-18 of 0-18; all of them in smaller models). Capture cost grows with each block."""
    seed: int = 0
    """First candidate seed; the k-th episode of a suite gets seed + k * SEED_STRIDE + (0 .. |S| - 1)."""
    gallery_episodes: int = 4
    """Episodes per suite drawn in the gallery and the W&B table (fixed across steps)."""
    exemplar_swap: bool = False
    """Also evaluate the held-in episodes with the exemplar pair of another task (eval/seen/swapped_<metric>):
    the control that shows whether outputs follow the exemplar."""
    compile: bool = False
    """Regional torch.compile of the DiT's repeated blocks for sampling in `pico infer`, `pico eval` and PicoPipeline
    (the in-loop evaluation samples with the training module's blocks, compiled by train.compile): each block type
    compiles once per shape, about 40 s on a GPU, so it pays over many images, not one."""
    perseg_dir: str = ""
    """A PerSeg-style folder (Images/<object>/*.jpg, Annotations/<object>/*.png) for the 'perseg' suite."""

    def __post_init__(self) -> None:
        check(self.num_steps >= 1, "eval.num_steps", "an integer >= 1", self.num_steps)
        check(1 <= self.num_seeds <= SEED_STRIDE, "eval.num_seeds", f"an integer in [1, {SEED_STRIDE}]", self.num_seeds)
        check(
            0 <= self.scorer_steps < self.num_steps,
            "eval.scorer_steps",
            f"an integer in [0, eval.num_steps={self.num_steps})",
            self.scorer_steps,
        )
        check(self.every_n_steps >= 0, "eval.every_n_steps", "an integer >= 0", self.every_n_steps)
        bad = [s for s in self.suites if not re.fullmatch(r"[\w.-]+", s) or s in HELD_IN_GROUPS]
        check(not bad, "eval.suites", f"suite names (letters, digits, _ . -; not {HELD_IN_GROUPS}: name held_in)", bad)
        check(len(set(self.suites)) == len(self.suites), "eval.suites", "each suite once", self.suites)
        check(
            "perseg" not in self.suites or bool(self.perseg_dir),
            "eval.perseg_dir",
            "a PerSeg folder when eval.suites has 'perseg'",
            self.perseg_dir,
        )
