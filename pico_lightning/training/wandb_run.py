"""The W&B run of a fit: one id kept in the run directory, no step logged twice, links, the data and the LoRA as
artifacts. The runs beside it (evaluations, reports) are in pico_lightning/dashboard.py.

- ``<run dir>/wandb_id`` holds the W&B run id (:meth:`RunDir.wandb_id`), generated when the directory is first
  trained. It travels with the directory: a moved run keeps its W&B run, a resumed one continues it
  (``resume="allow"``); an ``rm -rf``'d and restarted run gets a fresh id.
- ``<run dir>/wandb_steps.json`` holds, per metric key, the highest step already sent to W&B, so the steps that a
  run resumed from an earlier checkpoint trains again are not logged twice (:class:`PicoWandbLogger`).
- At the start and end of a fit, rank zero prints one line: the run's URL (online) or the exact ``wandb sync``
  command of its offline directory.
- When the W&B run starts for the first time, it uses the training data as a ``dataset`` artifact (lineage:
  :func:`use_dataset`); its resumes do not use it again.
- At the end of a fit, the exported ``lora/`` is logged as a ``model`` artifact whose metadata holds the resolved
  config and the final evaluation (:func:`log_lora`); `pico eval RUN`'s evaluation runs use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from pico_lightning.compat import drop_wandb_anonymous, use_artifact, wandb_run_started
from pico_lightning.config import LoggingConfig
from pico_lightning.dashboard import lora_artifact_name, wandb_project, where
from pico_lightning.data.schema import INDEX_NAME
from pico_lightning.data.sources import read_index
from pico_lightning.data.suites import suite_names
from pico_lightning.files import write_json
from pico_lightning.run_dir import RunDir

BOOKKEEPING = frozenset({"epoch"})  # added by Lightning to every row: never a reason to keep or drop one
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_.-]+")  # W&B artifact names: letters, digits, '_', '-', '.'


class LoggedSteps:
    """The highest step each metric key has reached in W&B, kept in a JSON file of the run directory."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._marks: dict[str, float] | None = None

    @property
    def marks(self) -> dict[str, float]:
        if self._marks is None:
            self._marks = json.loads(self.path.read_text()) if self.path.is_file() else {}
        return self._marks

    def unseen(self, metrics: Mapping[str, object], step: float) -> dict[str, object]:
        """The part of ``metrics`` not yet logged at ``step`` or later; empty when only bookkeeping is left."""
        fresh = {k: v for k, v in metrics.items() if k not in BOOKKEEPING and step > self.marks.get(k, -1)}
        if fresh:
            fresh.update({k: v for k, v in metrics.items() if k in BOOKKEEPING})
        return fresh

    def record(self, keys, step: float) -> None:
        """Note that ``keys`` reached W&B at ``step`` (written before the next row is logged)."""
        self.marks.update({k: step for k in keys if k not in BOOKKEEPING})
        write_json(self.path, self.marks)


class PicoWandbLogger(WandbLogger):
    """Lightning's WandbLogger that never sends a metric twice for one step, and prints where its run lives.

    A run resumed from a checkpoint at step S trains steps S.. again, while its W&B run may already hold rows up to
    a later step S+k (the dead process logged past its last checkpoint). wandb can rewind a run instead
    (``wandb.init(resume_from="<id>?_step=N")``, in wandb 0.31 a beta feature), but only online, only when the server
    enables it, and counted in wandb's own ``_step``, which is not the trainer step that Lightning logs as
    ``trainer/global_step``. Dropping what W&B already has works in every mode instead: before a row is sent, each
    key at or below its high-water mark in ``wandb_steps.json`` is removed (resume is exact, so the dropped values
    equal those W&B holds). The mark is written after every row, so a process killed before wandb wrote its last
    rows leaves those steps missing from W&B, never doubled; metrics.jsonl holds them all.
    """

    def __init__(self, run: RunDir, dataset: Path | None = None, **kwargs):
        super().__init__(**kwargs)
        drop_wandb_anonymous(self)  # Lightning passes wandb's deprecated `anonymous`: a warning on every run
        self._logged = LoggedSteps(run.wandb_steps)
        self._dataset = dataset  # the data's index.json, used as an artifact when the run starts
        self.failed = False

    @property
    def experiment(self):
        """The W&B run (created on first use, at fit start on global rank zero, which prints where it lives and
        uses the dataset artifact, if given)."""
        starting = wandb_run_started(self) is None and rank_zero_only.rank == 0
        run = super().experiment
        if starting:
            print(where(run), flush=True)
            if self._dataset is not None:
                use_dataset(run, self._dataset)
        return run

    def print_where(self) -> None:
        """Print where the run lives, once it has started (global rank zero only: no other rank starts it)."""
        run = wandb_run_started(self)
        if run is not None:
            print(where(run), flush=True)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Lightning says how the fit ended; 'failed' (an exception, Ctrl-C) marks the W&B run failed at finish."""
        super().finalize(status)
        self.failed = status == "failed"

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if step is not None:
            metrics = self._logged.unseen(metrics, step)
            if not metrics:
                return
        super().log_metrics(metrics, step)
        if step is not None:
            self._logged.record(metrics, step)


def build_wandb_logger(
    logging: LoggingConfig, mode: str, run: RunDir, name: str, config: dict, dataset: Path | None
) -> PicoWandbLogger:
    """The fit's W&B logger: project and entity from the config, else WANDB_PROJECT / WANDB_ENTITY (wandb reads
    the latter itself), job type 'train', the W&B run id of ``run`` (its files in ``run``'s ``wandb/``).

    ``dataset`` (the data's index.json, or None) is used once per W&B run: only by the fit that creates the id. A
    resumed or requeued fit continues a run that already has it as an input."""
    extra = {"entity": logging.entity} if logging.entity else {}
    first = rank_zero_only.rank == 0 and run.wandb_id(create=False) is None
    return PicoWandbLogger(
        run,
        dataset=dataset if first else None,
        name=name,
        project=wandb_project(logging),
        group=logging.group or None,
        tags=list(logging.tags) or None,
        save_dir=str(run.path),
        mode=mode,  # not Lightning's `offline`, which sets WANDB_MODE for the whole process
        config=config,
        id=run.wandb_id(create=rank_zero_only.rank == 0),
        resume="allow",
        job_type="train",
        **extra,
    )


def use_dataset(run, index: Path) -> None:
    """Mark the data a fit trains on as an input of its W&B run: a 'dataset' artifact named after the data's
    directory, holding its index.json. The index names every task, split and shard with each shard's byte size,
    which tells two datasets apart at a few MB where the shards of 100k pairs weigh GBs; the metadata says where the
    data lies, its size and the evaluation suites it holds (``suites/<name>.tar``)."""
    import wandb

    summary = read_index(index)
    folder = index.parent.resolve()
    artifact = wandb.Artifact(
        _NOT_IN_NAMES.sub("_", folder.name).strip("_") or "data",
        type="dataset",
        description=f"`pico prep` data at {folder}",
        metadata={
            "path": str(folder),
            "num_samples": summary.get("num_samples"),
            "num_tasks": len(summary["tasks"]),
            "suites": suite_names(folder),
        },
    )
    artifact.add_file(str(index), name=INDEX_NAME)
    use_artifact(run, artifact)


def log_lora(loggers, lora_dir: Path, config: dict, metrics: Mapping[str, float], step: int) -> None:
    """Log ``lora_dir`` as a 'model' artifact of the fit's W&B run, with the resolved config and the final
    evaluation as metadata (global rank zero, after the LoRA export)."""
    runs = [logger.experiment for logger in loggers if isinstance(logger, WandbLogger)]
    if not runs or not Path(lora_dir).is_dir():
        return
    import wandb

    artifact = wandb.Artifact(
        lora_artifact_name(runs[0].id),
        type="model",
        description=f"LoRA (diffusers format) at step {step}",
        metadata={"step": step, "config": config, "eval": {k: float(v) for k, v in metrics.items()}},
    )
    artifact.add_dir(str(lora_dir))
    runs[0].log_artifact(artifact, aliases=["latest", f"step-{step}"])
