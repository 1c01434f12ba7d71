"""The run directory's contract: one answer to "is this run finished?", for Python and for shell scripts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pico_lightning.errors import UserError
from pico_lightning.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]


def is_finished_in_shell(run: RunDir) -> bool:
    """What a sweep's array script asks (its exit code), in a process of its own."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pico_lightning.run_dir", "is-finished", str(run.path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode == 0


def test_a_written_summary_makes_the_run_finished(tmp_path):
    run = RunDir(tmp_path / "run")
    assert not run.is_finished() and run.read_summary() is None and not is_finished_in_shell(run)
    written = run.write_summary(7, {"eval/held_in/psnr": 21})
    assert run.is_finished() and is_finished_in_shell(run)
    assert run.read_summary() == written == json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written == {
        "status": "finished",
        "step": 7,
        "eval": {"eval/held_in/psnr": 21.0},
        "lora": str(tmp_path / "run" / "lora"),
        "checkpoint": str(tmp_path / "run" / "checkpoints" / "last.ckpt"),
    }


def test_only_status_finished_is_finished(tmp_path):
    run = RunDir(tmp_path)
    run.summary.write_text('{"status": "running", "step": 3}')
    assert not run.is_finished() and not is_finished_in_shell(run) and run.read_summary()["step"] == 3


@pytest.mark.parametrize("text", ['{"status": "fini', "[1, 2]"])
def test_a_corrupt_summary_is_not_finished_and_one_line_when_read(tmp_path, text):
    run = RunDir(tmp_path)
    run.summary.write_text(text)
    assert not run.is_finished() and not is_finished_in_shell(run)
    with pytest.raises(UserError, match=f"^{run.summary}: (unreadable run summary|not a run summary)") as err:
        run.read_summary()
    assert "\n" not in str(err.value)


def test_evaluated_steps_and_their_files(tmp_path):
    run = RunDir(tmp_path)
    for step in (10, 2, 30):
        run.eval_metrics(step).parent.mkdir(parents=True)
        run.eval_metrics(step).write_text("{}")
    (run.eval_dir / "step_40").mkdir()  # an evaluation still being written: no metrics.json yet
    run.final_eval.mkdir()
    assert run.evaluated_steps() == [2, 10, 30]
    assert run.eval_gallery(2) == tmp_path / "eval" / "step_2" / "gallery.png"


def test_existing_wants_a_directory_pico_train_wrote(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        RunDir.existing(tmp_path / "nothing")
    with pytest.raises(UserError, match="no config.yaml"):
        RunDir.existing(tmp_path)
    (tmp_path / "config.yaml").write_text("train:\n  max_steps: 3\n")
    assert RunDir.existing(str(tmp_path)) == RunDir(tmp_path)
