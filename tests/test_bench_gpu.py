"""bench.gpu on the CPU: the JSON it streams has every key the issue asks for, and a failing row is recorded."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.gpu import guarded, parse_row, row_order, run_bench
from bench.gpu_model import BenchSetup

ROW_KEYS = {"batch", "gradient_checkpointing", "compile", "step_s", "bare_step_s", "overhead_ratio", "peak_gb", "mfu"}
ROOT = Path(__file__).resolve().parents[1]


def check_results(results: dict, rows: int, steps: int) -> None:
    assert results["device"].startswith("CPU") and len(results["rows"]) == rows
    for row in results["rows"]:
        assert "error" not in row, row
        assert ROW_KEYS | {"samples_per_s"} <= set(row)
        assert row["step_s"] > 0 and row["bare_step_s"] > 0 and row["peak_gb"] is None and row["mfu"] is None
        assert row["samples_per_s"] == pytest.approx(row["batch"] / row["step_s"])
    assert 0 <= results["loader_wait_fraction"] < 1
    assert results["flops"]["forward_flops_per_sample"] > 0
    inference = results["inference"]
    assert {"sampler_vs_diffusers_ratio", "max_abs_diff", "mean_abs_diff"} <= set(inference)
    assert inference["max_abs_diff"] <= 1 / 255  # fp32 on the CPU: the same picture
    for seeds in (4, 8):
        scored = inference["seed_scorer"][str(seeds)]
        assert scored["evaluations"] == seeds * 2 + (steps - 2) and scored["seconds_ratio"] > 0


@pytest.mark.slow  # ~40 s on 2 shared cores
def test_reduced_run_streams_every_key(tmp_path):
    """The same code as `--tiny` with fewer rows and steps: batch 1, checkpointing on/off, no compile."""
    setup = BenchSetup(True, torch.device("cpu"), (1,), compile_modes=(False,), warmup=1, timed=2, inference_steps=3)
    out = tmp_path / "gpu_results.json"
    results = run_bench(setup, out)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    check_results(results, rows=2, steps=3)
    assert [(r["gradient_checkpointing"], r["compile"]) for r in results["rows"]] == [(True, False), (False, False)]


def test_a_failing_measurement_is_recorded():
    def out_of_memory():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    assert guarded(out_of_memory) == {"error": "OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB"}


@pytest.mark.slow
def test_tiny_command(tmp_path):
    """`python -m bench.gpu --tiny`: all 8 rows (batch 1, 4 x checkpointing x compile) and the inference section."""
    out = tmp_path / "tiny.json"
    subprocess.run([sys.executable, "-m", "bench.gpu", "--tiny", "--out", str(out)], cwd=ROOT, check=True)
    check_results(json.loads(out.read_text()), rows=8, steps=28)


def test_only_names_rows_in_the_order_given_and_refuses_typos():
    setup = BenchSetup(True, torch.device("cpu"), only=("b4-ckpt0-compile1", "inference", "b1-ckpt1-compile0-int8"))
    assert row_order(setup) == [(4, False, True, ""), (1, True, False, "int8")]
    with pytest.raises(SystemExit, match="expected b<batch>-ckpt<0|1>-compile<0|1>"):
        parse_row("b1-ckpt1-compile0-fp4")


def test_default_rows_put_the_shipped_config_and_its_levers_first():
    setup = BenchSetup(True, torch.device("cpu"), variants=("int8",))
    rows = row_order(setup)
    assert rows[:4] == [(1, True, False, ""), (4, True, False, ""), (1, True, False, "int8"), (1, True, True, "")]
    assert len(rows) == len(set(rows)) == 9  # 2 batches x checkpointing x compile, and the lever
