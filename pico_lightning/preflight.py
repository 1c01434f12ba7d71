"""The pre-flight of a fit: every check `pico train` can make before the queue does, without building the model.

    pico train experiments/flux_fill.yaml train.devices=8 model.pretrained_dir=/ckpt/FLUX.1-Fill-dev --dry-run

It resolves the config for the world it names (train.devices x train.num_nodes, as the launch scripts set them),
checks the batch against that world, reads the data's catalogue (index.json), says how the (rank, loader worker)
readers split the shards, counts each evaluation suite's episodes and checks the model
directory's layout. It imports no GPU code and reads no weights, so it runs on a login node. `pico train` runs the
the same checks when it starts, in the fit's own order; `--dry-run` runs them all, prints the plan and every
problem, and stops there.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pico_lightning.config import ExperimentConfig
from pico_lightning.errors import UserError


@dataclass
class Preflight:
    """What a fit would do (``plan``, one line each) and what stops it (``problems``, one line each)."""

    plan: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def check(self, step) -> object | None:
        """Run ``step()``; a UserError it raises becomes a problem line (and None is returned)."""
        try:
            return step()
        except UserError as err:
            self.problems.append(str(err))
            return None


def preflight(cfg: ExperimentConfig) -> Preflight:
    """Every check of the module doc, each problem collected rather than raised, and the plan of what passed."""
    from pico_lightning.data.catalogue import DatasetCatalogue
    from pico_lightning.data.datamodule import plan_readers

    result = Preflight()
    train = cfg.train
    if result.check(train.per_device_batch) is not None:
        result.plan.append(train.describe_batch())
    result.check(lambda: _model(cfg, result))
    catalogue = DatasetCatalogue(cfg.data, cfg.eval)
    shards = result.check(catalogue.shards)
    if shards is not None:
        workers = max(1, cfg.data.num_workers)
        tasks = sorted(shards.keep.tasks)
        result.plan.append(
            f"data: {len(shards.urls)} shards, {len(tasks)} training tasks ({', '.join(tasks)}); "
            f"{train.world_size()} rank(s) x {workers} loader worker(s) = {train.world_size() * workers} readers"
        )
        _, shared = plan_readers(shards, train.world_size(), workers, catalogue.layout)
        result.plan.append(
            "readers: every reader draws from all shards, with its own seed (too few shards for disjoint ones)"
            if shared
            else "readers: each reads shards of its own"
        )
        if cfg.eval.suites:
            items = result.check(catalogue.eval_items)
            for suite, found in (items or {}).items():
                counted = Counter(item.task for item in found)
                result.plan.append(f"eval {suite}: {len(found)} episodes over {len(counted)} task(s)")
    result.plan.append(_schedule(cfg))
    return result


def _model(cfg: ExperimentConfig, result: Preflight) -> None:
    from pico_lightning.model.backbone import check_model_dir

    if cfg.model.pretrained_dir:
        check_model_dir(cfg.model.pretrained_dir)
        result.plan.append(f"model: {cfg.model.pretrained_dir} ({cfg.model.dtype})")
    else:
        result.plan.append(f"model: in-process preset {cfg.model.preset} (random init)")


def _schedule(cfg: ExperimentConfig) -> str:
    every = cfg.eval.every_n_steps
    evaluation = f"evaluate every {every} steps and at the end" if every else "evaluate at the end"
    if not cfg.eval.suites:
        evaluation = "no evaluation"
    return (
        f"steps: {cfg.train.max_steps}; {evaluation}; checkpoint every {cfg.train.checkpoint_every} steps to "
        f"{cfg.run.path() / 'checkpoints'} (resume: {cfg.run.resume})"
    )
