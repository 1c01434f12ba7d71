"""Where a recipe writes: the task-folder layout of `pico prep folders`, and the sources it reads."""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from pico_lightning.errors import UserError
from pico_lightning.pictures import PICTURE_SUFFIXES


def write_pair(raw: Path, category: str, task: str, pair_id: str, source: np.ndarray, target: np.ndarray) -> None:
    """``RAW/<category>/<task>/input/<id>.png`` and ``.../output/<id>.png`` from two (H, W, 3) uint8 arrays."""
    for side, image in (("input", source), ("output", target)):
        folder = raw / category / task / side
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(folder / f"{pair_id}.png")


def find_pictures(root: Path) -> list[Path]:
    """Every picture file under ``root`` (any depth, hidden files and folders left out), sorted."""
    found = (
        path
        for path in root.rglob("*")
        if path.suffix.lower() in PICTURE_SUFFIXES and not any(p.startswith(".") for p in path.relative_to(root).parts)
    )
    return sorted(path for path in found if path.is_file())


def pair_ids(paths: list[Path], root: Path) -> dict[Path, str]:
    """A file-name-safe id per picture, from its path under ``root``: ``a/b.jpg`` -> ``a-b``; two pictures that
    would share one (``b.jpg`` and ``b.png``) keep their extension (``b-jpg``, ``b-png``)."""

    def clean(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)

    stems = {path: clean("-".join(path.relative_to(root).with_suffix("").parts)) for path in paths}
    repeated = Counter(stems.values())
    return {
        path: f"{stem}-{path.suffix.lower().lstrip('.')}" if repeated[stem] > 1 else stem
        for path, stem in stems.items()
    }


def report(recipe: str, raw: Path, written: Counter, skipped: dict[str, list[str]]) -> None:
    """One line of what was written (pairs per task), one per skip reason; then the next command."""
    tasks = ", ".join(f"{task} {count}" for task, count in sorted(written.items()))
    print(f"{recipe}: {sum(written.values())} pairs in {len(written)} tasks under {raw}: {tasks or 'none'}")
    for reason, items in skipped.items():
        if items:
            print(
                f"{recipe}: skipped {len(items)} ({reason}): {', '.join(items[:10])}{' ...' if len(items) > 10 else ''}"
            )
    if written:
        print(f"next: pico prep folders {raw} --out DATA")


def run_recipe(recipe: str, body: Callable[[], None]) -> int:
    """Run a recipe's body: 0, or 2 with one line for an error a user can cause (a missing folder, a bad file)."""
    try:
        body()
    except UserError as err:
        print(f"{recipe}: error: {err}", file=sys.stderr)
        return 2
    return 0
