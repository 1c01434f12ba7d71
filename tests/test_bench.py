"""The benchmark harness is checked by running it: `python -m bench.gpu --tiny` on one section writes its JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_harness_runs_one_section(tmp_path):
    out = tmp_path / "results.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "bench.gpu", "--tiny", "--only", "text_cache", "--out", str(out)]
    printed = subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    results = json.loads(out.read_text())
    assert results["tiny"] and results["rows"] == [] and results["flops"]["forward_flops_per_sample"] > 0
    assert results["text_cache"]["text_cache_speedup"] > 0 and "text_cache_speedup" in printed
