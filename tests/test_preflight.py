"""`pico train --dry-run`: the plan and every problem, one line each, without building the model."""

from __future__ import annotations

from conftest import tiny_train_overrides

from pico_lightning import cli


def dry_run(capsys, overrides: list[str]) -> tuple[int, str, str]:
    code = cli.main(["train", "experiments/demo.yaml", *overrides, "--dry-run"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_dry_run_prints_the_plan_and_writes_nothing(visrel_tiny, tiny_flux_dir, tmp_path, capsys):
    overrides = [*tiny_train_overrides(visrel_tiny, tmp_path, "dry"), f"model.pretrained_dir={tiny_flux_dir}"]
    code, out, err = dry_run(capsys, [*overrides, "train.devices=2", "train.accelerator=cpu"])
    assert code == 0, err
    assert "world 2 (1 node(s) x 2 device(s)): global batch 4 = 2 per device x 2" in out
    assert f"model: {tiny_flux_dir}" in out
    assert "2 rank(s) x 1 loader worker(s) = 2 readers" in out and "readers: each reads shards of its own" in out
    assert "eval seen: 4 episodes over 4 task(s)" in out and "eval segmentation: 4 episodes" in out
    assert f"checkpoint every 2 steps to {tmp_path / 'runs' / 'dry' / 'checkpoints'}" in out
    assert "0 problem(s)" in out and not (tmp_path / "runs").exists()


def test_dry_run_lists_every_problem_on_one_line_each(visrel_tiny, tmp_path, capsys):
    overrides = tiny_train_overrides(visrel_tiny, tmp_path, "bad")
    broken = [
        *overrides,
        f"model.pretrained_dir={tmp_path / 'no_weights'}",
        "train.devices=3",  # the global batch of 4 does not divide by 3
        "eval.suites=[held_in,user_tasks]",
    ]
    code, out, err = dry_run(capsys, broken)
    problems = [line for line in err.splitlines() if line.startswith("problem: ")]
    assert code == 1 and "2 problem(s)" in out, err
    assert any("train.batch_size" in line for line in problems)
    assert any("no_weights: model directory not found" in line for line in problems)
    assert "Traceback" not in err


def test_print_config_does_not_need_the_weights(capsys):
    code = cli.main(["train", "experiments/flux_fill.yaml", "--print-config"])
    assert code == 0 and "pretrained_dir: /path/to/FLUX.1-Fill-dev" in capsys.readouterr().out
