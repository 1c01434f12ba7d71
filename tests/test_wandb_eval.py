"""The dashboard shows the ablation: the training run uses its data as an artifact and logs its evaluation table and
LoRA; each `pico eval RUN` is a new W&B run beside it (job type eval, its group, the LoRA artifact used) that leaves
the training run as it was; `pico report` logs the sweep's tables and plots as a run in the sweep's group."""

import json
from pathlib import Path

from conftest import tiny_train_overrides
from test_sweeps import fake_sweep
from wandb_reader import read_offline_runs, read_run_dir

from pico_lightning import cli
from pico_lightning.config import load_config, save_config


def _files(directory: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def _config(run_record) -> dict:
    return {item.key: json.loads(item.value_json) for item in run_record.config.update}


def test_train_then_two_evaluations_on_wandb_offline(visrel_tiny, tmp_path):
    """The fit logs the evaluation scalars and four-panel table once, uses the data's index.json as a dataset and
    logs the LoRA with the final evaluation; two `pico eval RUN` with eval.seed 1 and 2 leave two new eval runs in
    the group, each using that LoRA artifact, and the training run's offline files unchanged byte for byte."""
    overrides = [*tiny_train_overrides(visrel_tiny, tmp_path, "wb"), "logging.wandb_mode=offline", "train.max_steps=2"]
    assert cli.main(["train", "experiments/demo.yaml", *overrides, "logging.group=abl"]) == 0
    run_dir = tmp_path / "runs" / "wb"
    trained = read_run_dir(run_dir)
    assert len(trained.runs) == 1 and trained.runs[0].job_type == "train" and trained.runs[0].run_group == "abl"
    assert [row["trainer/global_step"] for row in trained.rows if "eval/segmentation/miou" in row] == [2]
    assert any(isinstance(row.get("eval/gallery"), dict) for row in trained.rows)
    tables = list((run_dir / "wandb").glob("offline-run-*/files/media/table/eval/gallery_*.json"))
    assert len(tables) == 1  # one evaluation (at step 2), one table
    (lora,) = [artifact for artifact in trained.artifacts if artifact.type == "model"]  # beside the table's own
    assert "eval/segmentation/miou" in json.loads(lora.metadata)["eval"] and not lora.use_after_commit
    (data,) = [artifact for artifact in trained.artifacts if artifact.type == "dataset"]
    assert data.name == visrel_tiny.name and data.use_after_commit and data.user_created  # used, not produced
    assert [entry.path for entry in data.manifest.contents] == ["index.json"]
    assert json.loads(data.metadata)["suites"] == ["segmentation", "user_tasks"]

    before = _files(run_dir / "wandb")
    for seed in (1, 2):
        argv = ["eval", str(run_dir), "--suite", "segmentation", "--seeds", "2", f"eval.seed={seed}"]
        assert cli.main(argv) == 0
    assert _files(run_dir / "wandb") == before  # the training run's summary and history, untouched
    assert read_run_dir(run_dir).summary == trained.summary

    # two evaluations in one second: their offline directories sort by random id, so order them by their seed
    evaluations = sorted(read_offline_runs(run_dir / "eval"), key=lambda run: _config(run.runs[0])["eval"]["seed"])
    train_id = trained.runs[0].run_id
    assert [run.runs[0].display_name for run in evaluations] == ["wb-eval-seed1", "wb-eval-seed2"]
    assert len({train_id, *(run.runs[0].run_id for run in evaluations)}) == 3  # a new W&B run each time
    for seed, evaluation in zip((1, 2), evaluations, strict=True):
        (record,) = evaluation.runs
        assert (record.job_type, record.run_group, evaluation.exit_codes) == ("eval", "abl", [0])
        config = _config(record)
        assert config["eval"]["seed"] == seed and config["run"] == "wb" and config["train_run_id"] == train_id
        (used,) = [artifact for artifact in evaluation.artifacts if artifact.type == "model"]  # and the table's
        assert (used.type, used.name, used.use_after_commit) == ("model", f"lora-{train_id}", True)
        assert used.digest == lora.digest  # the version the training run logged, found by its content
        assert "eval/segmentation/miou" in evaluation.summary
        assert evaluation.summary["eval/per_task"]["_type"] == "table-file"
    metrics = json.loads((run_dir / "eval" / "final" / "metrics.json").read_text())  # the second evaluation's
    assert evaluations[1].summary["eval/segmentation/miou"] == metrics["eval/segmentation/miou"]


def test_report_logs_tables_and_plots_in_the_sweeps_group(tmp_path, capsys):
    """`pico report` logs as the sweep's runs do: not at all when no run config says how, else one run in the
    sweep's group holding report.csv and groups.csv as tables and the plots as images; its printout is unchanged
    but for the line saying where that run lives."""
    sweep_dir = fake_sweep(tmp_path / "sweep")
    assert cli.main(["report", str(sweep_dir)]) == 0
    quiet = capsys.readouterr().out
    assert not (sweep_dir / "wandb").exists()

    name = "num_tasks3-shots_per_task2-seed0"
    logged_as = load_config(None, ["logging.wandb_mode=offline", "logging.project=p"])
    save_config(logged_as, sweep_dir / "runs" / name / "config.yaml")
    assert cli.main(["report", str(sweep_dir)]) == 0
    printed = capsys.readouterr().out
    (report,) = read_offline_runs(sweep_dir)
    assert printed.splitlines()[:-1] == quiet.splitlines()
    (offline,) = (sweep_dir / "wandb").glob("offline-run-*")
    assert printed.splitlines()[-1] == f"W&B offline run; upload it with: wandb sync {offline}"
    (record,) = report.runs
    assert (record.job_type, record.run_group, record.project) == ("report", "demo", "p")
    (row,) = report.rows
    assert row["report/report"]["_type"] == "table-file" and row["report/groups"]["_type"] == "table-file"
    assert {row["report/psnr"]["_type"], row["report/miou"]["_type"]} == {"image-file"}
    table = next((sweep_dir / "wandb").glob("offline-run-*/files/media/table/report/report_*.table.json"))
    logged = json.loads(table.read_text())
    assert logged["columns"][:3] == ["run", "status", "step"] and len(logged["data"]) == 8
