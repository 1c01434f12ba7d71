"""Sweeps: ablation-file validation and expansion, local and Slurm launchers (fake trainer), the report."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest

from pico_lightning.cli import main
from pico_lightning.errors import UserError
from pico_lightning.sweeps import launch, report
from pico_lightning.sweeps.spec import check_runs, expand, load_spec, sweep_run

REPO = Path(__file__).resolve().parents[1]


def write_spec(tmp_path: Path, grid: str, extra: str = "", data: Path | None = None) -> Path:
    """A stand-in base experiment (on ``data`` when given: a dry run checks every run against it) plus an ablation
    file over it; returns the ablation file."""
    base = tmp_path / "base.yaml"
    on_data = f"data:\n  root: {data}\nmodel:\n  pretrained_dir: ''\n" if data else ""
    base.write_text(f"train:\n  max_steps: 5\n  batch_size: 8\n{on_data}")
    path = tmp_path / "ablation.yaml"
    fixed = "  fixed:\n    train.max_steps: 3\n"
    path.write_text(f"sweep:\n  name: demo\n  base: {base}\n  grid:\n{grid}{fixed}{extra}")
    return path


GRID = "    data.num_tasks: [3, 6, 12]\n    data.shots_per_task: [2, 4]\n    train.seed: [0, 1]\n"


def test_expand_count_order_and_names(tmp_path):
    spec = load_spec(write_spec(tmp_path, GRID))
    runs = expand(spec, tmp_path / "sweep", ["lora.rank=4"])
    assert len(runs) == 12
    names = [run.name for run in runs]
    assert names[:3] == [
        "num_tasks3-shots_per_task2-seed0",
        "num_tasks3-shots_per_task2-seed1",
        "num_tasks3-shots_per_task4-seed0",
    ]
    assert names[-1] == "num_tasks12-shots_per_task4-seed1"
    assert [run.name for run in expand(spec, tmp_path / "sweep", ["lora.rank=4"])] == names
    assert runs[0].overrides == [
        f"run.dir={tmp_path / 'sweep' / 'runs'}",
        f"run.name={names[0]}",
        "logging.group=demo",
        "train.max_steps=3",
        "data.num_tasks=3",
        "data.shots_per_task=2",
        "train.seed=0",
        "lora.rank=4",
    ]
    check_runs(spec, runs, "ablation.yaml")  # every run loads through the experiment schema


@pytest.mark.parametrize(
    "grid, extra, expected",
    [
        ("    data.num_taskz: [3, 6]\n", "", "data.num_taskz"),
        ("    data.num_tasks: [3, -1]\n", "", "data.num_tasks"),
        ("    data.num_tasks: 3\n", "", "sweep.grid.data.num_tasks"),
        ("    data.num_tasks: [3, 3]\n", "", "sweep.grid.data.num_tasks"),
        ("    run.name: [a, b]\n", "", "run.name"),
        ("    data.num_tasks: [3]\n", "slurm:\n  gpu_per_node: 2\n", "slurm.gpu_per_node"),
    ],
)
def test_bad_ablation_is_one_line_naming_the_key(tmp_path, grid, extra, expected):
    path = write_spec(tmp_path, grid, extra)
    with pytest.raises(UserError) as info:
        spec = load_spec(path)
        check_runs(spec, expand(spec, tmp_path / "sweep"), path)
    message = str(info.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_bad_override_exits_2(tmp_path, capsys):
    path = write_spec(tmp_path, GRID)
    assert main(["sweep", str(path), "--dry-run", "data.num_tasks=4"]) == 2
    assert "data.num_tasks" in capsys.readouterr().err


def test_slurm_dry_run_writes_a_job_array(tmp_path, monkeypatch, visrel_tiny):
    path = write_spec(tmp_path, GRID, "slurm:\n  nodes: 2\n  gpus_per_node: 4\n  partition: gpu\n", visrel_tiny)
    out = tmp_path / "my sweep"  # a space must survive runs.txt's quoting
    assert main(["sweep", str(path), "--launcher", "slurm", "--dry-run", "--out", str(out), "lora.rank=4"]) == 0
    script = (out / "sweep.sbatch").read_text()
    for line in (
        "#SBATCH --array=0-11",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        f"#SBATCH --output={out.resolve()}/logs/",
    ):
        assert line in script
    assert "--account" not in script
    subprocess.run(["bash", "-n", str(out / "sweep.sbatch")], check=True)
    plan = json.loads((out / "sweep.json").read_text())
    assert len(plan["runs"]) == len((out / "runs.txt").read_text().splitlines()) == 12
    # Run array task 1 with a fake srun in a 2 x 4-GPU allocation: it must train run 1 with the allocation's shape
    # as defaults and its overrides after them (so the run's own overrides win).
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n')
    os.chmod(tmp_path / "bin" / "srun", 0o755)
    allocation = {"SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "4", "SLURM_GPUS_ON_NODE": "4"}
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "1", **allocation}
    job = subprocess.run(["bash", str(out / "sweep.sbatch")], env=env, capture_output=True, text=True, check=True)
    lines = job.stdout.splitlines()[1:]  # after the job's opening line
    assert job.stdout.startswith("[") and "pico train on 2 node(s) x 4 gpu rank(s)" in job.stdout.splitlines()[0]
    train = lines.index("train") - 1  # srun ran twice: the embed step (one task per node), then the training
    embed, argv = lines[:train], lines[train:]
    shape = ["train.devices=4", "train.num_nodes=2", "train.accelerator=gpu", "run.resume=auto"]
    defaults = [item for key in shape for item in ("--defaults", key)]
    run = [str(tmp_path / "base.yaml"), *plan["runs"][1]["overrides"]]
    assert embed == ["--ntasks-per-node=1", "--ntasks=2", "pico", "embed", *defaults, *run]
    assert argv == ["pico", "train", *defaults, *run]
    sweep_run(out, plan["runs"][1]["name"]).write_summary(3, {})  # finished: the array task asks and skips it
    job = subprocess.run(["bash", str(out / "sweep.sbatch")], env=env, capture_output=True, text=True, check=True)
    assert job.stdout == f"{sweep_run(out.resolve(), plan['runs'][1]['name']).path}: finished\n"


def test_slurm_without_sbatch_is_a_user_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    path = write_spec(tmp_path, GRID)
    assert main(["sweep", str(path), "--launcher", "slurm", "--out", str(tmp_path / "s")]) == 2
    assert "sbatch not found: use --dry-run" in capsys.readouterr().err


def fake_train(calls: list, fail: str = ""):
    """A stand-in for `pico train`: writes the run-directory contract, exits 0 (1 for the run ``fail``)."""

    def run_command(argv: list[str]) -> int:
        values = dict(item.split("=", 1) for item in argv if "=" in item)
        if "embed" in argv:  # the prompt-embedding step before each run's training
            return 0
        calls.append(values["run.name"])
        if values["run.name"] == fail:
            return 1
        run_dir = Path(values["run.dir"]) / values["run.name"]
        (run_dir / "eval" / "step_3").mkdir(parents=True)
        evaluation = {"eval/seen/psnr": 20.0, "eval/held_out/psnr": 15.0}
        (run_dir / "eval" / "step_3" / "metrics.json").write_text(json.dumps({"step": 3, **evaluation}))
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 3, "train/loss": 0.5}) + "\n")
        summary = {"status": "finished", "step": 3, "eval": evaluation}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return 0

    return run_command


def test_local_sweep_trains_then_skips_finished_runs(tmp_path, monkeypatch, capsys):
    path = write_spec(tmp_path, "    data.num_tasks: [3, 6]\n")
    out = tmp_path / "sweep"
    calls: list[str] = []
    monkeypatch.setattr(launch, "run_command", fake_train(calls))
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    assert calls == ["num_tasks3", "num_tasks6"]
    assert all(sweep_run(out, name).is_finished() for name in calls)
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    assert calls == ["num_tasks3", "num_tasks6"]  # nothing trained again
    assert capsys.readouterr().out.count("skipped (already finished)") == 2


def test_local_sweep_continues_after_a_failed_run(tmp_path, monkeypatch, capsys):
    path = write_spec(tmp_path, "    data.num_tasks: [3, 6]\n")
    calls: list[str] = []
    monkeypatch.setattr(launch, "run_command", fake_train(calls, fail="num_tasks3"))
    assert main(["sweep", str(path), "--out", str(tmp_path / "sweep")]) == 1
    assert calls == ["num_tasks3", "num_tasks6"]
    printed = capsys.readouterr()
    assert "1 trained, 0 skipped (finished), 1 failed: num_tasks3" in printed.out
    assert "sweep: 1/2 runs to train done (1 failed)" in printed.err and "sweep: 2/2" in printed.err  # progress


def test_local_dry_run_only_prints(tmp_path, capsys, visrel_tiny):
    path = write_spec(tmp_path, GRID, data=visrel_tiny)
    assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "sweep")]) == 0
    assert capsys.readouterr().out.count("pico train ") == 12
    assert not (tmp_path / "sweep").exists()


def test_dry_run_checks_every_run_in_its_world(tmp_path, capsys, visrel_tiny):
    """A job array of 3 ranks cannot split the base's batch of 8: every run says so, and nothing is written."""
    path = write_spec(tmp_path, GRID, "slurm:\n  ntasks_per_node: 3\n", visrel_tiny)
    assert main(["sweep", str(path), "--launcher", "slurm", "--dry-run", "--out", str(tmp_path / "sweep")]) == 1
    problems = [line for line in capsys.readouterr().err.splitlines() if line.startswith("problem: run ")]
    assert len(problems) == 12 and all("devices*num_nodes=3" in line for line in problems)
    assert not (tmp_path / "sweep").exists()


GRID_HEAD = ["data.num_tasks", "data.shots_per_task"]


def fake_sweep(root: Path) -> Path:
    """A sweep dir with 8 runs: 6 finished, 1 with only an intermediate evaluation, 1 never started."""
    grid = {"data.num_tasks": [3, 6], "data.shots_per_task": [2, 4], "train.seed": [0, 1]}
    runs = []
    for tasks in grid["data.num_tasks"]:
        for shots in grid["data.shots_per_task"]:
            for seed in grid["train.seed"]:
                name = f"num_tasks{tasks}-shots_per_task{shots}-seed{seed}"
                params = {"data.num_tasks": tasks, "data.shots_per_task": shots, "train.seed": seed}
                runs.append({"name": name, "overrides": [], "params": params})
                evaluation = {
                    "eval/seen/psnr": 20.0 + shots + seed,
                    "eval/seen/baseline_psnr": 14.0 + tasks,  # the seen tasks' copy baseline moves with them
                    "eval/seen/tasks": tasks,
                    "eval/held_out/psnr": 10.0 + tasks + seed,
                    "eval/held_out/baseline_psnr": 15.0,
                    "eval/segmentation/miou": 0.1 * tasks,
                    "eval/model_evaluations": 40,
                    "eval/seen/episodes": 8,
                    "eval/seen/denoise/psnr": 30.0,
                }
                if tasks == 3:  # 6 is the whole pool: no unseen held-in task is left
                    evaluation.update({"eval/unseen/psnr": 12.0 + seed, "eval/unseen/baseline_psnr": 13.0})
                run_dir = root / "runs" / name
                if name == "num_tasks6-shots_per_task4-seed1":
                    continue  # missing
                (run_dir / "eval" / "step_10").mkdir(parents=True)
                metrics = json.dumps({"step": 10, **evaluation})
                (run_dir / "eval" / "step_10" / "metrics.json").write_text(metrics)
                if name != "num_tasks6-shots_per_task4-seed0":  # unfinished
                    summary = {"status": "finished", "step": 20, "eval": evaluation}
                    (run_dir / "summary.json").write_text(json.dumps(summary))
    plan = {"name": "demo", "base": "base.yaml", "grid": grid, "runs": runs}
    (root / "sweep.json").write_text(json.dumps(plan))
    return root


def test_report_writes_table_csv_and_seen_vs_unseen_plots(tmp_path, capsys):
    sweep_dir = fake_sweep(tmp_path / "sweep")
    assert main(["report", str(sweep_dir), "--out", str(tmp_path / "report")]) == 0
    out = tmp_path / "report"
    markdown = (out / "report.md").read_text()
    header = "| run | status | step | data.num_tasks | data.shots_per_task | train.seed | held_out/baseline_psnr |"
    assert header in markdown
    assert "| num_tasks6-shots_per_task4-seed1 | missing |" in markdown
    assert "| num_tasks6-shots_per_task4-seed0 | unfinished | 10 |" in markdown
    assert len((out / "report.csv").read_text().splitlines()) == 9
    assert {path.name for path in out.glob("*.png")} == {"psnr.png", "miou.png"}  # baselines are drawn in them
    printed = capsys.readouterr().out
    assert "missing (1): num_tasks6-shots_per_task4-seed1" in printed and str(out / "psnr.png") in printed
    assert "not plotted (the same in every run): eval/model_evaluations\n" in printed


def test_report_groups_table_has_each_group_with_its_seed_spread_and_baseline(tmp_path):
    sweep_dir = fake_sweep(tmp_path / "sweep")
    assert main(["report", str(sweep_dir)]) == 0
    markdown = (sweep_dir / "report.md").read_text()
    assert "| data.num_tasks | data.shots_per_task | group | tasks | psnr | miou |" in markdown
    assert "| 3 | 2 | seen | 3 | 22.5 [22, 23] n=2 (copy 17) |  |" in markdown  # baseline 14 + num_tasks
    assert "| 3 | 2 | unseen |  | 12.5 [12, 13] n=2 (copy 13) |  |" in markdown
    assert "| 6 | 2 | seen | 6 | 22.5 [22, 23] n=2 (copy 20) |  |" in markdown
    assert "| 6 | 2 | unseen" not in markdown  # all 6 tasks trained: no unseen group
    groups = list(csv.reader((sweep_dir / "groups.csv").open()))
    assert groups[0] == [*GRID_HEAD, "group", "tasks", "metric", "runs", "mean", "min", "max", "baseline"]
    assert ["6", "4", "held_out", "", "psnr", "1", "16.0", "16.0", "16.0", "15.0"] in groups


def test_report_plot_lines_mean_and_spread(tmp_path):
    plan = json.loads((fake_sweep(tmp_path) / "sweep.json").read_text())
    results = [report.read_run(sweep_run(tmp_path, run["name"]), run["name"], run["params"]) for run in plan["runs"]]
    keys = ["eval/seen/psnr", "eval/unseen/psnr", "eval/held_out/psnr"]
    figure = report.plot_metric(results, "psnr", keys, plan["grid"])
    labels = figure.axes[0].get_legend_handles_labels()[1]
    groups = ("seen tasks", "unseen held-in tasks", "held-out tasks")
    assert labels == [f"{group}: baseline B′ = B" for group in groups] + [  # matplotlib lists plain lines first
        f"{group}, shots_per_task={shots}" for group in groups for shots in (2, 4)
    ]
    baselines = [line for line in figure.axes[0].get_lines() if line.get_linestyle() == ":"]
    assert [list(line.get_ydata()) for line in baselines] == [[17.0, 20.0], [13.0], [15.0, 15.0]]  # per x
    assert [line.get_color() for line in baselines] == ["tab:blue", "tab:green", "tab:orange"]
    # held-out psnr = 10 + num_tasks + seed; the incomplete runs have shots 4, so shots 2 has both seeds
    points = report.aggregate(results, keys[2], "data.num_tasks", [3, 6], ("data.shots_per_task", 2))
    assert points == [(0, 13.5, 13.0, 14.0), (1, 16.5, 16.0, 17.0)]  # (x index, mean, min, max)


def test_report_plot_styles_only_the_values_that_ran(tmp_path):
    """A trimmed grid (only shots_per_task=4 run here) draws its one value solid, not in the dotted style the
    baselines use."""
    plan = json.loads((fake_sweep(tmp_path) / "sweep.json").read_text())
    runs = [run for run in plan["runs"] if run["params"]["data.shots_per_task"] == 4]
    results = [report.read_run(sweep_run(tmp_path, run["name"]), run["name"], run["params"]) for run in runs]
    axes = report.plot_metric(results, "psnr", ["eval/held_out/psnr"], plan["grid"]).axes[0]
    assert axes.get_legend_handles_labels()[1][1:] == ["held-out tasks, shots_per_task=4"]
    assert [container.lines[0].get_linestyle() for container in axes.containers] == ["-"]


def test_report_plots_counts_spanning_decades_on_a_log_axis(tmp_path):
    plan = json.loads((fake_sweep(tmp_path) / "sweep.json").read_text())
    results = [report.read_run(sweep_run(tmp_path, run["name"]), run["name"], run["params"]) for run in plan["runs"]]
    linear = report.plot_metric(results, "psnr", ["eval/held_out/psnr"], plan["grid"])  # 3 and 6 tasks
    assert linear.axes[0].get_xscale() == "linear"
    decades = {**plan["grid"], "data.num_tasks": [3, 300]}  # no run at 300: the axis follows the grid
    figure = report.plot_metric(results, "psnr", ["eval/held_out/psnr"], decades)
    assert figure.axes[0].get_xscale() == "log"
    assert [tick.get_text() for tick in figure.axes[0].get_xticklabels()] == ["3", "300"]


def test_report_metric_selection(tmp_path, capsys):
    sweep_dir = fake_sweep(tmp_path / "sweep")
    assert main(["report", str(sweep_dir), "--metric", "psnr"]) == 0  # suite-level psnr keys only
    assert {path.name for path in sweep_dir.glob("*.png")} == {"psnr.png"}
    assert "| held_out/psnr | seen/psnr | unseen/psnr |\n" in (sweep_dir / "report.md").read_text()
    chosen = ["--metric", "eval/seen/denoise/psnr", "--metric", "episodes"]
    assert main(["report", str(sweep_dir), *chosen]) == 0
    assert "seen/denoise/psnr | seen/episodes |\n" in (sweep_dir / "report.md").read_text()
    assert main(["report", str(sweep_dir), "--metric", "fid"]) == 2
    assert "--metric fid" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2


ABLATIONS = sorted((REPO / "experiments" / "ablations").glob("*.yaml"))


@pytest.mark.parametrize("path", ABLATIONS, ids=lambda path: path.name)
def test_every_ablation_file_parses(path, tmp_path, monkeypatch):
    spec = load_spec(path)
    weights = [f"model.pretrained_dir={tmp_path}"] if "flux" in path.name else []  # stands in for real FLUX weights
    runs = expand(spec, tmp_path / "sweep", weights)
    assert len(runs) > 1 and len({run.name for run in runs}) == len(runs)
    monkeypatch.chdir(tmp_path)  # the base is found from the ablation file, wherever the sweep starts
    check_runs(spec, runs, path)


@pytest.mark.parametrize("name", ["slurm.sbatch", "torchrun.sh"])
def test_launch_scripts_are_valid_bash(name):
    subprocess.run(["bash", "-n", str(REPO / "experiments" / "launch" / name)], check=True)
