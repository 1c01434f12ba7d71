"""Named evaluation suites from a lab's task folders: ``pico prep folders ... --suite NAME=TASK[,TASK...]``.

A suite is written as ``OUT/suites/NAME.tar`` in the suite format of ``data/suites.py``. Its episodes come from
its tasks' evaluation pairs, the pairs no run trains on: a held-in task's ``val`` pairs (the last ~1/6, at least
2, of its pairs sorted by id; ``splits.py``), a held-out task's pairs (all ``test``). Every evaluation pair is
the query (B, B') of one episode, in id order, task by task; its exemplar (A, A') is another evaluation pair of
the same task, drawn by a generator seeded by (seed, suite, task), so the same seed gives the same episodes.

A suite is scored as masks (kind ``mask``: IoU, mIoU) when every output of its tasks is a mask
(``pixels.is_mask``: two colours, e.g. white on black); otherwise as pictures (kind ``image``: PSNR, SSIM).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from pico_lightning.data.eval_items import SHARD_SUITES, SWAPPED
from pico_lightning.data.suites import SuiteEpisode
from pico_lightning.pictures import read_picture
from pico_lightning.prep.splits import split_for

if TYPE_CHECKING:
    from pico_lightning.prep.folders import TaskFolder

SUITE_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a file name (suites/NAME.tar) and a metric key (eval/NAME/...)
# Read from the shards (held_in, held_out, held_in's exemplar-swapped copy) or a PerSeg folder, never suites/.
RESERVED = (*SHARD_SUITES, "held_in" + SWAPPED, "perseg")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def parse_names(values: Sequence[str], flag: str) -> tuple[str, ...]:
    """Task names from repeatable comma lists (``--held-out a,b --held-out c``), in order, each once."""
    names = [name.strip() for value in values for name in value.split(",")]
    if "" in names:
        raise ValueError(f"{flag} {','.join(values)}: an empty task name; expected TASK[,TASK...]")
    return tuple(dict.fromkeys(names))


def parse_suites(values: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``NAME=TASK[,TASK...]`` requests -> {name: tasks}; ValueError naming ``--suite`` when one is malformed."""
    suites: dict[str, tuple[str, ...]] = {}
    for value in values:
        name, sign, tasks = value.partition("=")
        if not sign or not tasks.strip():
            raise ValueError(f"--suite {value}: expected NAME=TASK[,TASK...]")
        if not SUITE_NAME.fullmatch(name):
            raise ValueError(f"--suite {value}: the name {name!r} must be letters, digits, '_' or '-'")
        if name in RESERVED:
            raise ValueError(
                f"--suite {value}: {name!r} is a reserved suite name (held_in and held_out come from the "
                "shards' val and test pairs); choose another name"
            )
        if name in suites:
            raise ValueError(f"--suite {value}: suite {name!r} is given twice")
        suites[name] = parse_names([tasks], f"--suite {name}=")
    return suites


def evaluation_positions(task: TaskFolder, held_out: bool) -> list[int]:
    """Positions (in the task's id order) of the pairs it is evaluated on: val when held in, test when held out."""
    count, split = len(task.pairs), "test" if held_out else "val"
    return [position for position in range(count) if split_for(position, count, held_out) == split]


def check_suites(
    suites: Mapping[str, Sequence[str]], tasks: Mapping[str, TaskFolder], held_out: frozenset[str]
) -> None:
    """ValueError naming ``--suite`` and the task when a task is unknown or has too few evaluation pairs."""
    for name, names in suites.items():
        for task in names:
            if task not in tasks:
                known = ", ".join(sorted(tasks))
                raise ValueError(f"--suite {name}={','.join(names)}: no task {task!r} in SRC; its tasks are {known}")
            if len(evaluation_positions(tasks[task], task in held_out)) < 2:
                raise ValueError(
                    f"--suite {name}: task {task!r} has {len(tasks[task].pairs)} pairs, too few to set 2 aside "
                    "for evaluation (a held-in task needs >= 4); add pairs or hold it out with --held-out"
                )


def suite_kind(tasks: Sequence[TaskFolder]) -> str:
    """``mask`` when every output of the tasks is a mask, else ``image``."""
    return "mask" if all(task.masks for task in tasks) else "image"


def suite_episodes(
    name: str, tasks: Sequence[TaskFolder], held_out: frozenset[str], seed: int
) -> Iterator[SuiteEpisode]:
    """The suite's episodes, one per evaluation pair of its tasks; pictures are read as each one is yielded."""
    kind = suite_kind(tasks)
    for task in tasks:
        positions = evaluation_positions(task, task.name in held_out)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode()), zlib.crc32(task.name.encode())])
        for k, query in enumerate(positions):
            others = positions[:k] + positions[k + 1 :]
            exemplar = others[int(rng.integers(len(others)))]
            panels = [read_picture(path) for position in (exemplar, query) for path in task.pairs[position][1:]]
            episode_id = "-".join(_UNSAFE.sub("_", part) for part in (task.name, task.pairs[query][0]))
            yield SuiteEpisode(name, task.name, episode_id, panels, kind, task.prompt)
