"""Tiny mixed-task shards in tmp_path for the datamodule's tests: six tasks of four categories, one held out, 36
samples shuffled over 8 shards; `shards` is a fixture of every test module (conftest imports it)."""

import numpy as np
import pytest

from pico_lightning.config import DataConfig
from pico_lightning.data.datamodule import VisRelDataModule
from pico_lightning.data.schema import SampleMeta
from pico_lightning.prep.shards import write_shards

# task: (category, variants, pairs, held out); held-in tasks with >= 6 pairs keep their last 2 for "val"
TASKS = {
    "denoise": ("restoration", ("a", "b"), 10, False),
    "deblur": ("restoration", ("a",), 4, False),
    "edges": ("estimation", ("a",), 6, False),
    "segment": ("perception", ("a", "b"), 8, False),
    "colorize": ("manipulation", ("a",), 2, False),
    "sketch": ("manipulation", ("a",), 6, True),
}
TRAIN = {"denoise": 8, "deblur": 4, "edges": 4, "segment": 6, "colorize": 2}


def mixed_samples() -> list:
    """(input, output, meta) of every task, random 32 px pictures, shuffled so tasks mix in shards."""
    rng, samples = np.random.default_rng(0), []
    for task, (category, variants, count, held_out) in TASKS.items():
        for i in range(count):
            val = not held_out and count >= 6 and i >= count - 2
            variant = variants[-1] if val else variants[i % len(variants)]
            split = "test" if held_out else "val" if val else "train"
            meta = SampleMeta(task, category, variant, f"{i:04d}", "test", split, f"do {task}")
            samples.append((*rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), meta))
    return [samples[i] for i in rng.permutation(len(samples))]


@pytest.fixture
def shards(tmp_path):
    """8 shards of 5 samples (36 in all) + index.json; returns (directory, {(task, pair_id): sample})."""
    samples = mixed_samples()
    write_shards(samples, tmp_path / "visrel", maxcount=5, held_out=["sketch"])
    return tmp_path / "visrel", {(meta.task, meta.pair_id): (x, y, meta) for x, y, meta in samples}


def placed_loader(module: VisRelDataModule, batches_done: int):
    """The module's training loader placed after ``batches_done`` batches, as a resumed fit's is."""
    loader = module.train_dataloader()
    loader.load_state_dict({"batches": batches_done})
    return loader


def set_up_module(path, batch=4, **overrides) -> VisRelDataModule:
    """A set-up datamodule over ``path``: no workers, no augmentation or prompt dropout unless overridden."""
    defaults = dict(num_workers=0, epoch_batches=5, augment=False, prompt_dropout=0.0)
    module = VisRelDataModule(DataConfig(shards=str(path), **{**defaults, **overrides}), batch)
    module.setup("fit")
    return module
