"""The library changes no process-wide setting when imported or when it builds a fit: warning filters, float32 matmul
precision and logger levels are set for the duration of a fit only (training/train.fit_settings), or by `pico`."""

from __future__ import annotations

import ast
import logging
import os
import sys
import warnings
from pathlib import Path

import torch
from conftest import FixedDataModule

from pico_lightning.training.train import KNOWN_NOISE, fit, prepare

PACKAGE = Path(__file__).resolve().parents[1] / "pico_lightning"
SETTERS = {"filterwarnings", "simplefilter", "set_float32_matmul_precision", "setLevel", "putenv"}
BANNER = "lightning.pytorch.utilities.rank_zero"


def settings() -> tuple:
    return (
        list(warnings.filters),
        torch.get_float32_matmul_precision(),
        logging.getLogger(BANNER).level,
        os.environ.get("WANDB_SILENT"),
    )


def module_level_calls(tree: ast.Module) -> list[ast.Call]:
    """The calls that run on import: outside any function body (class bodies run on import too)."""
    calls, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        calls += [node] if isinstance(node, ast.Call) else []
        todo += list(ast.iter_child_nodes(node))
    return calls


def test_no_module_sets_a_process_setting_on_import():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for call in module_level_calls(ast.parse(path.read_text())):
            name = getattr(call.func, "attr", getattr(call.func, "id", ""))
            if name in SETTERS:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{call.lineno}: {name}")
    assert not found, found


def test_building_a_fit_sets_nothing_process_wide(tiny_cfg, monkeypatch):
    """Module, Trainer and data as fit() builds them, and the model built inside them: no call of ours changes a
    warning filter, the matmul precision or a logger level (libraries imported on first use may add their own)."""
    ours = []

    def recording(name, setter):
        def record(*args, **kwargs):
            if Path(sys._getframe(1).f_code.co_filename).is_relative_to(PACKAGE):
                ours.append(name)
            return setter(*args, **kwargs)

        return record

    for owner, name in [(warnings, "filterwarnings"), (warnings, "simplefilter"), (logging.Logger, "setLevel")]:
        monkeypatch.setattr(owner, name, recording(name, getattr(owner, name)))
    monkeypatch.setattr(
        torch, "set_float32_matmul_precision", recording("precision", torch.set_float32_matmul_precision)
    )
    precision = torch.get_float32_matmul_precision()
    module, *_ = prepare(tiny_cfg, FixedDataModule(panel_size=16))
    module.configure_model()
    assert ours == [] and torch.get_float32_matmul_precision() == precision


def test_a_fit_sets_its_settings_for_its_own_duration(tiny_cfg):
    seen = {}

    class Probe(FixedDataModule):
        def __new__(cls, **kwargs):
            data = super().__new__(cls, **kwargs)
            loader = data.train_dataloader

            def probe():  # called inside the fit
                seen.update(precision=torch.get_float32_matmul_precision(), filters=list(warnings.filters))
                return loader()

            data.train_dataloader = probe
            return data

    before = settings()
    fit(tiny_cfg, Probe(panel_size=16))
    assert settings() == before
    assert seen["precision"] == "high"
    assert {f[1].pattern for f in seen["filters"] if f[1] is not None} >= set(KNOWN_NOISE)
