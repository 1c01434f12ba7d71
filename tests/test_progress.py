"""The training progress bar in a log file."""

import io

from pico_lightning.training.progress import StepProgressBar


def test_a_bar_written_to_a_log_file_is_ascii(monkeypatch):
    log = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)  # a SLURM job's stdout: UTF-8, no tty
    monkeypatch.setattr("sys.stdout", log)
    bar = StepProgressBar().init_train_tqdm()
    bar.total = 10
    bar.update(4)
    bar.refresh()
    drawn = log.buffer.getvalue()
    assert b"4/10" in drawn and drawn.isascii(), drawn


def test_a_disabled_bar_is_left_alone():
    bar = StepProgressBar()
    bar.disable()  # as on ranks other than 0
    assert bar.init_train_tqdm().disable
