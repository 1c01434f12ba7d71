"""The VisRel shard format: one sample is one (input, output) pair of one task.

A shard set is a directory of WebDataset tar files plus an index::

    OUT/visrel-000000.tar ... visrel-00000N.tar
    OUT/index.json

Each sample in a tar is three members sharing one key (``make_key``, e.g. ``denoise/gaussian_low/0003``;
only ``[A-Za-z0-9_-]`` and ``/``, so no dot splits it):

    <key>.input.png    RGB uint8 PNG, the task's input
    <key>.output.png   RGB uint8 PNG, the task's output (masks white on black, depth as grey)
    <key>.json         ``SampleMeta``: {"task", "category", "variant", "pair_id", "source", "split", "prompt"}

``category`` is one of ``CATEGORIES`` (restoration/enhancement, physical/geometric estimation, semantic
perception, generative manipulation), ``split`` one of ``SPLITS``; ``prompt`` is the family's minimal text
label (``CATEGORY_PROMPTS``) unless a task folder gives its own. ``pair_id`` is unique within a task; an
episode pairs two samples of the same task and variant.

``index.json`` (``INDEX_NAME``) describes the whole set so loaders never count::

    {"format": 1,
     "tasks": {task: {"category", "variants": [...], "held_out": bool, "prompt", "counts": {split: n}}},
     "categories": {category: {"num_tasks": n, "num_samples": n}},
     "splits": {split: n},
     "shards": [relative tar names], "shard_sizes": [samples per shard], "shard_bytes": [tar file sizes],
     "shard_samples": [[[task, variant, pair_id, split, source], ...] per shard],   # so loaders never scan
     "num_samples": n,
     "suites": {name: {"file": "suites/<name>.tar", "kind": "mask" | "image", "num_episodes": n,
                       "tasks": {task: episodes}}}}   # the evaluation suites written next to the shards

Held-out tasks (unseen-task evaluation) have every sample in split ``test``. ``pico prep folders`` writes shards
that mix the tasks, each holding whole blocks of two or more pairs of one task, variant and split
(``prep/shard_plan.py``).
"""

import io
import re
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

CATEGORIES = ("restoration", "estimation", "perception", "manipulation")
SPLITS = ("train", "val", "test")
CATEGORY_PROMPTS = {
    "restoration": "Restore",
    "estimation": "Estimate",
    "perception": "Segment",
    "manipulation": "Edit",
}
INDEX_NAME = "index.json"
INDEX_FORMAT = 1
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class SampleMeta:
    """The ``json`` member of one sample; validated on construction."""

    task: str
    category: str
    variant: str
    pair_id: str
    source: str
    split: str
    prompt: str

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"sample meta: field '{name}' must be a non-empty string, got {value!r}")
        if self.category not in CATEGORIES:
            raise ValueError(f"sample meta: field 'category' is {self.category!r}, not one of {CATEGORIES}")
        if self.split not in SPLITS:
            raise ValueError(f"sample meta: field 'split' is {self.split!r}, not one of {SPLITS}")

    def to_json(self) -> dict:
        """Return the meta as a plain dict (the sample's ``json`` member)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "SampleMeta":
        """Build from a decoded ``json`` member; extra keys are ignored, missing ones raise ``ValueError``."""
        if not isinstance(data, dict):
            raise ValueError(f"sample meta: expected a JSON object, got {type(data).__name__}")
        fields = cls.__dataclass_fields__
        missing = [name for name in fields if name not in data]
        if missing:
            raise ValueError(f"sample meta: missing field '{missing[0]}'")
        return cls(**{name: data[name] for name in fields})


def make_key(task: str, variant: str, pair_id: str) -> str:
    """Return the tar-safe sample key ``task/variant/pair_id`` (unsafe characters become ``_``)."""
    parts = [_UNSAFE.sub("_", str(part)) for part in (task, variant, pair_id)]
    if not all(parts):
        raise ValueError(f"make_key: empty key part in {(task, variant, pair_id)!r}")
    return "/".join(parts)


def encode_png(image: np.ndarray) -> bytes:
    """Encode an RGB image (H, W, 3) uint8 as PNG bytes (deterministic: no timestamps)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"encode_png: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return buffer.getvalue()
