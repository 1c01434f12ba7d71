"""Convert raw task folders into VisRel shards (format: ``pico_lightning/data/schema.py``) and evaluation suites.

    pico prep folders SRC --out DIR [--held-out TASK[,TASK...]] [--suite NAME=TASK[,TASK...]]... [--shards N]

Layout::

    SRC/<category>/<task>/input/<id>.<ext>     the task's inputs
    SRC/<category>/<task>/output/<id>.<ext>    its outputs: one <id> (file stem) pairs an input and an output
    SRC/<category>/<task>/prompt.txt           optional text label (default: CATEGORY_PROMPTS[category])

``<category>`` names one family by its words (``CATEGORY_WORDS``): restoration, estimation, perception,
manipulation, VisRel's long names (restoration_enhancement, physical_geometric_estimation, semantic_perception,
generative_manipulation) or others such as manipulation_editing; case, ``-`` and spaces are ignored. ``<ext>``
is png, jpg, jpeg, bmp, tif, tiff or webp (``PICTURE_SUFFIXES``). Every image becomes RGB uint8 at its own size,
read by ``pictures.read_picture`` (EXIF orientation applied, 16-bit / 257, transparency over black), as the
training stream and ``pico infer`` read it. Task names must be unique across categories;
every pair gets variant "default". Per task, pairs sorted by id: a held-out task (``held_out``, marked so in
``index.json``) has all its pairs split "test", for testing only: they form the ``held_out`` suite; any other
task keeps the last ~1/6 (at least 2) as "val", from which ``held_in`` is drawn, and trains on the rest
(``splits.py``). ``suites`` (``--suite``) are written as ``DIR/suites/NAME.tar`` (``folder_suites.py``) and listed
in ``index.json``. The pairs are dealt over the shards in blocks of two of one task, mixing the tasks, and by
default as many shards as 128 readers want (``shard_plan.py``).

Nothing is dropped silently: the summary lists (paths relative to SRC) every skipped file or folder under
``unpaired`` (no partner, or its partner is unreadable), ``unreadable`` (corrupt or not an image; a
``prompt.txt`` that is not UTF-8 text, and the task gets the family's label),
``unknown_category`` and ``unexpected`` (outside the layout: stray files, other extensions, two files with one
id, a repeated task name, a task folder without images). Hidden files (``.*``) are ignored. Every image is
decoded once to check it (so splits count readable pairs only, and nothing is written if none is) and again to
write it.
"""

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pico_lightning.data.schema import CATEGORY_PROMPTS, INDEX_NAME, SampleMeta
from pico_lightning.pictures import PICTURE_SUFFIXES, ImageInputError, read_picture
from pico_lightning.prep import shard_plan
from pico_lightning.prep.folder_suites import check_suites, suite_episodes
from pico_lightning.prep.pixels import is_mask
from pico_lightning.prep.shards import write_shards
from pico_lightning.prep.splits import split_for
from pico_lightning.prep.suites import write_suites

LAYOUT = "SRC/<category>/<task>/{input,output}/<id>.<ext>"
# A category folder is named by words; each word below names one family (VisRel's long names are made of them).
CATEGORY_WORDS = {
    "restoration": ("restoration", "restore", "enhancement", "enhance"),
    "estimation": ("estimation", "estimate", "physical", "geometric", "geometry"),
    "perception": ("perception", "semantic", "segmentation", "detection", "recognition"),
    "manipulation": ("manipulation", "editing", "edit", "generative", "generation", "stylization", "style"),
}
WORD_CATEGORY = {word: category for category, words in CATEGORY_WORDS.items() for word in words}
SKIP_REASONS = ("unpaired", "unreadable", "unknown_category", "unexpected")


@dataclass(frozen=True)
class TaskFolder:
    """One task folder's paired files, sorted by id: (id, input path, output path)."""

    name: str
    category: str
    prompt: str
    pairs: tuple[tuple[str, Path, Path], ...]
    masks: bool  # every output is a mask (``pixels.is_mask``): its suites are scored as segmentation


def convert_folders(
    src: str | os.PathLike,
    out_dir: str | os.PathLike,
    held_out: Sequence[str] = (),
    suites: Mapping[str, Sequence[str]] | None = None,
    num_shards: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict:
    """Write every readable pair under ``src`` as shards + index (+ ``suites``: {name: tasks}) in ``out_dir``;
    return what was written and skipped. ``num_shards``: None for the default count; ``seed`` picks the suites'
    exemplars; ``progress``: a bar on stderr while the pairs are written."""
    root = Path(src)
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory; expected the layout {LAYOUT}")
    skipped = {reason: [] for reason in SKIP_REASONS}
    tasks = scan_folders(root, skipped)
    total = sum(len(task.pairs) for task in tasks)
    if total == 0:
        raise ValueError(f"{root}: no readable input/output pairs; expected the layout {LAYOUT}")
    by_name, suites = {task.name: task for task in tasks}, suites or {}
    held = _check_held_out(held_out, by_name)
    check_suites(suites, by_name, held)
    splits = [[split_for(i, len(task.pairs), task.name in held) for i in range(len(task.pairs))] for task in tasks]
    layout = _shard_layout(shard_plan.task_blocks(splits), num_shards)
    written_suites = write_suites(
        out_dir,
        {name: suite_episodes(name, [by_name[t] for t in names], held, seed) for name, names in suites.items()},
    )
    samples = tqdm(
        _samples(root, tasks, splits, layout), total=total, desc="folders", unit="pair", disable=not progress
    )
    sizes = [sum(len(block.positions) for block in shard) for shard in layout]
    shards = write_shards(samples, out_dir, held_out=held, suites=written_suites, sizes=sizes)
    written = json.loads((Path(out_dir) / INDEX_NAME).read_text())["num_samples"]
    return {
        "out_dir": str(out_dir),
        "written": written,
        "num_tasks": len(tasks),
        "held_out": sorted(held),
        "suites": written_suites,
        "shards": shards,
        "skipped": skipped,
    }


def _check_held_out(names: Sequence[str], tasks: Mapping[str, TaskFolder]) -> frozenset[str]:
    """The held-out task names; ValueError naming ``--held-out`` for an unknown or too small task, or for all."""
    for name in names:
        if name not in tasks:
            raise ValueError(f"--held-out: no task {name!r} in SRC; its tasks are {', '.join(sorted(tasks))}")
        if len(tasks[name].pairs) < 2:
            raise ValueError(f"--held-out: task {name!r} has 1 pair; a held-out task needs >= 2 (one episode)")
    if names and set(names) >= set(tasks):
        raise ValueError("--held-out: every task is held out; keep at least one to train on")
    return frozenset(names)


def _shard_layout(blocks: list[shard_plan.Block], num_shards: int | None) -> list[list[shard_plan.Block]]:
    """The blocks of each shard: ``num_shards`` shards (None: the default count), no more than there are blocks."""
    count = shard_plan.default_shards(blocks) if num_shards is None else num_shards
    if count > len(blocks):
        raise ValueError(
            f"--shards: {count} shards would leave some empty; these pairs fill at most {len(blocks)} "
            f"(one per {shard_plan.EPISODE_PAIRS} pairs of one task)"
        )
    return shard_plan.deal(blocks, count)


def scan_folders(root: Path, skipped: dict[str, list[str]]) -> list[TaskFolder]:
    """Find the task folders under ``root`` and their readable pairs; record the rest in ``skipped``."""
    tasks: dict[str, TaskFolder] = {}
    for category_dir in _subfolders(root, root, skipped):
        category = category_of(category_dir.name)
        if category is None:
            skipped["unknown_category"].append(_relative(category_dir, root))
            continue
        for task_dir in _subfolders(category_dir, root, skipped):
            task = _scan_task(task_dir, category, root, skipped)
            if task.name in tasks or not _has_images(task_dir):  # a repeated task name, or no images at all
                skipped["unexpected"].append(_relative(task_dir, root))
            elif task.pairs:  # else its files are all listed in ``skipped`` already
                tasks[task.name] = task
    return list(tasks.values())


def category_of(name: str) -> str | None:
    """The family a category folder names: its words (split at ``_``, ``-``, spaces; any case) must name exactly
    one family, e.g. ``manipulation_editing``, ``Semantic-Perception``; else None (unknown or ambiguous)."""
    words = name.lower().replace("-", "_").replace(" ", "_").split("_")
    found = {WORD_CATEGORY[word] for word in words if word in WORD_CATEGORY}
    return found.pop() if len(found) == 1 else None


def _scan_task(task_dir: Path, category: str, root: Path, skipped: dict[str, list[str]]) -> TaskFolder:
    """Pair ``input/`` and ``output/`` files by id and decode both; the rest goes to ``skipped``."""
    for entry in _visible(task_dir):
        if entry.name not in ("input", "output", "prompt.txt"):
            skipped["unexpected"].append(_relative(entry, root))
    inputs = _images(task_dir / "input", root, skipped)
    outputs = _images(task_dir / "output", root, skipped)
    for stem in sorted(inputs.keys() ^ outputs.keys()):
        skipped["unpaired"].append(_relative(inputs.get(stem) or outputs[stem], root))
    pairs, masks = [], True
    for stem in sorted(inputs.keys() & outputs.keys()):
        pictures = [_read(path, root, skipped) for path in (inputs[stem], outputs[stem])]
        if all(picture is not None for picture in pictures):
            pairs.append((stem, inputs[stem], outputs[stem]))
            masks = masks and is_mask(pictures[1])
        elif any(picture is not None for picture in pictures):  # the readable partner has lost its pair
            skipped["unpaired"].append(_relative(inputs[stem] if pictures[0] is not None else outputs[stem], root))
    prompt = _prompt(task_dir / "prompt.txt", root, skipped)
    return TaskFolder(task_dir.name, category, prompt or CATEGORY_PROMPTS[category], tuple(pairs), masks)


def _prompt(path: Path, root: Path, skipped: dict[str, list[str]]) -> str:
    """The task's own text label, "" when it has none; a file that is not UTF-8 text is listed as unreadable."""
    try:
        return path.read_text(encoding="utf-8").strip() if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        skipped["unreadable"].append(_relative(path, root))
        return ""


def _images(folder: Path, root: Path, skipped: dict[str, list[str]]) -> dict[str, Path]:
    """Image files of ``folder`` by stem; other entries and repeated stems go to ``skipped``."""
    found: dict[str, Path] = {}
    for entry in _visible(folder):
        if entry.is_file() and entry.suffix.lower() in PICTURE_SUFFIXES and entry.stem not in found:
            found[entry.stem] = entry
        else:
            skipped["unexpected"].append(_relative(entry, root))
    return found


def _samples(root: Path, tasks: list[TaskFolder], splits: list[list[str]], layout: list[list[shard_plan.Block]]):
    """Yield (input, output, meta) shard by shard, block by block, as ``layout`` deals them."""
    for shard in layout:
        for block in shard:
            task = tasks[block.task]
            for position in block.positions:
                stem, input_path, output_path = task.pairs[position]
                source = _relative(input_path, root)
                meta = SampleMeta(
                    task.name, task.category, "default", stem, source, splits[block.task][position], task.prompt
                )
                yield read_picture(input_path), read_picture(output_path), meta


def _read(path: Path, root: Path, skipped: dict[str, list[str]]) -> np.ndarray | None:
    try:
        return read_picture(path)
    except ImageInputError:  # corrupt or not a picture: report, skip
        skipped["unreadable"].append(_relative(path, root))
        return None


def _subfolders(folder: Path, root: Path, skipped: dict[str, list[str]]) -> list[Path]:
    entries = _visible(folder)
    skipped["unexpected"] += [_relative(entry, root) for entry in entries if not entry.is_dir()]
    return [entry for entry in entries if entry.is_dir()]


def _has_images(task_dir: Path) -> bool:
    return any(_visible(task_dir / "input")) or any(_visible(task_dir / "output"))


def _visible(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith(".")) if folder.is_dir() else []


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
