"""The W&B runs beside the training runs, so that the dashboard shows an ablation: a sweep is one W&B group
(`pico sweep` sets ``logging.group`` to the sweep's name for every run) holding its training runs
(training/wandb_run.py), an evaluation run per `pico eval RUN` and a report run per `pico report SWEEP_DIR`.

- Every W&B run of ours takes its project from ``logging.project``, else WANDB_PROJECT, else 'pico'
  (:func:`wandb_project`), its entity from ``logging.entity`` or WANDB_ENTITY, and prints one line saying where it
  lives (:func:`where`).
- `pico eval RUN`: a new run (job type 'eval') in the training run's group, named ``<run>-eval-seed<S>``, that uses
  the training run's LoRA artifact and holds the metrics in its summary, with a table of per-task rows and the
  gallery (:func:`log_evaluation`). Its files: ``RUN/eval/wandb/``.
- `pico report SWEEP_DIR`: a run (job type 'report') in the sweep's group with report.csv and groups.csv as tables
  and the plots as images (:func:`log_report`). Its files: ``<report directory>/wandb/``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from pico_lightning.compat import use_artifact
from pico_lightning.config import EvalConfig, LoggingConfig
from pico_lightning.run_dir import RunDir

EVAL_JOB, REPORT_JOB = "eval", "report"


def wandb_project(logging: LoggingConfig) -> str:
    """logging.project, else the WANDB_PROJECT environment variable, else 'pico'."""
    return logging.project or os.environ.get("WANDB_PROJECT") or "pico"


def where(run) -> str:
    """One line saying where a W&B run lives: its URL, or the command that uploads its offline directory."""
    if run.offline:
        return f"W&B offline run; upload it with: wandb sync {run.settings.sync_dir}"
    return f"W&B run: {run.url}"


def lora_artifact_name(wandb_id: str) -> str:
    """The name of the LoRA artifact that the training run ``wandb_id`` logs at the end of its fit."""
    return f"lora-{wandb_id}"


@contextmanager
def side_run(logging: LoggingConfig, mode: str, directory: Path, **init) -> Iterator:
    """A W&B run of its own (a new id) in ``logging``'s project, entity, group and tags, its files in
    ``directory/wandb``; ``init`` adds wandb.init arguments (job_type, name, config). Where it lives is printed; at
    the end it is finished (failed when the block raised) and W&B's writer stopped, so its file is complete."""
    import wandb

    extra = {"entity": logging.entity} if logging.entity else {}
    run = wandb.init(
        dir=str(directory),
        project=wandb_project(logging),
        group=logging.group or None,
        tags=list(logging.tags) or None,
        mode=mode,
        **extra,
        **init,
    )
    failed = True
    try:
        yield run
        failed = False
        print(where(run), flush=True)
    finally:
        run.finish(exit_code=1 if failed else None)
        wandb.teardown()


def log_evaluation(
    run: RunDir,
    logging: LoggingConfig,
    evaluation: EvalConfig,
    metrics: Mapping[str, float],
    out: Path,
    lora: Path | None,
) -> None:
    """Log `pico eval RUN`'s ``metrics`` (written to ``out``) as a new W&B evaluation run of ``run``.

    A new run, not the training run resumed: resuming would overwrite the training run's summary with each
    evaluation, so two evaluations (two ``eval.seed`` values, other suites) could not stand side by side, and its
    history would gain rows that belong to no training step. So its id is W&B's fresh one each time, never the run
    directory's ``wandb_id``, and nothing of the training run's files is touched. It shares the training run's
    project, entity and group (``logging``, from the run's config), is named after the run and ``eval.seed``, holds
    the eval section as its config and uses ``lora`` (the run's own LoRA; None for another) as the artifact that the
    training run logged, built again from the same files, so its digest finds that version."""
    mode = logging.mode()
    if mode == "disabled":
        return
    import wandb

    name, trained = run.path.name, run.wandb_id(create=False)
    config = {"run": name, "train_run_id": trained, "eval": asdict(evaluation)}
    init = {"job_type": EVAL_JOB, "name": f"{name}-eval-seed{evaluation.seed}", "config": config}
    with side_run(logging, mode, run.eval_dir, **init) as wandb_run:
        if lora is not None and trained is not None:  # no id: the training logged no W&B run, so no LoRA artifact
            artifact = wandb.Artifact(lora_artifact_name(trained), type="model")
            artifact.add_dir(str(lora), policy="immutable")  # no staging copy of a LoRA that may weigh a GB
            use_artifact(wandb_run, artifact)
        wandb_run.summary.update({key: float(value) for key, value in metrics.items()})
        columns, rows = task_rows(metrics)
        media = {"eval/per_task": wandb.Table(columns=columns, data=rows)} if rows else {}
        if (out / "gallery.png").is_file():
            media["eval/gallery_image"] = wandb.Image(str(out / "gallery.png"))
        if media:
            wandb_run.log(media)


def task_rows(metrics: Mapping[str, float]) -> tuple[list[str], list[list]]:
    """The per-task metrics (``eval/<suite>/<task>/<metric>``) as table columns (suite, task, one per metric name)
    and one row per suite and task."""
    cells: dict[tuple[str, str], dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 4:
            cells.setdefault((parts[1], parts[2]), {})[parts[3]] = float(value)
    names = sorted({name for row in cells.values() for name in row})
    rows = [[suite, task, *(row.get(name) for name in names)] for (suite, task), row in sorted(cells.items())]
    return ["suite", "task", *names], rows


def log_report(logging: LoggingConfig, mode: str, out: Path, paths: list[Path]) -> None:
    """Log a sweep's report as one W&B run in the sweep's group (``logging.group``; job type 'report'): each CSV of
    ``paths`` as a table and each PNG as an image, keyed ``report/<file stem>``; its files in ``out/wandb``."""
    import wandb

    init = {"job_type": REPORT_JOB, "name": f"{logging.group}-report", "config": {"sweep": logging.group}}
    with side_run(logging, mode, out, **init) as run:
        media = {f"report/{path.stem}": csv_table(path) for path in paths if path.suffix == ".csv"}
        media.update({f"report/{path.stem}": wandb.Image(str(path)) for path in paths if path.suffix == ".png"})
        run.log(media)


def csv_table(path: Path):
    """A CSV file (header first) as a wandb.Table: numbers as numbers, empty cells as missing values."""
    import wandb

    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    # a swept key may take values of several types (numbers and names), which a typed column would refuse
    return wandb.Table(columns=header, data=[[_cell(value) for value in row] for row in rows], allow_mixed_types=True)


def _cell(text: str) -> float | int | str | None:
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text
