"""VisRelDataModule: the training stream (data/stream.py) and the evaluation items (data/catalogue.py) of a run.

The loader yields exactly ``data.epoch_batches`` batches per epoch on every rank; it keeps its own position (its
``state_dict``, see data/stream.py ``TrainLoader``), so a run resumed inside a data epoch gets the same batches as
an uninterrupted one. ``setup()`` has the catalogue read the shards' samples from index.json (else scan their json
members once, PNGs unread): that picks the shots. Each loader worker of each rank (a reader) reads shards of its own
when there are enough for every reader's to form episodes; otherwise every reader draws from all shards, each
with its own seed, so a dataset of a few hundred pairs feeds 128 readers (4 nodes x 8 GPUs x 4 workers) as it
feeds one. Both are fixed by (shards, world size, workers), so a resumed run reads as the uninterrupted one did.
``val_dataloader`` serves this rank's share of the fixed evaluation episodes, one per batch, to Lightning's
validation loop.
"""

from __future__ import annotations

import logging
import os
from collections import Counter

import lightning.pytorch as pl
import torch
import webdataset as wds

from pico_lightning.config import DataConfig, EvalConfig
from pico_lightning.config.train import split_batch
from pico_lightning.data import episodes as ep
from pico_lightning.data.catalogue import DatasetCatalogue
from pico_lightning.data.eval_items import EvalItem, eval_loader
from pico_lightning.data.sources import ShardSet
from pico_lightning.data.stream import (
    WARMUP_PAIRS,
    StreamState,
    TrainLoader,
    build_train_stages,
    worker_shards,
)
from pico_lightning.panels import Layout

log = logging.getLogger(__name__)


class VisRelDataModule(pl.LightningDataModule):
    """VisRel episodes: a resampled training stream (equal batches on every rank) and fixed eval episodes, both
    read through the run's :class:`~pico_lightning.data.catalogue.DatasetCatalogue`."""

    def __init__(self, cfg: DataConfig, global_batch_size: int, eval_cfg: EvalConfig | None = None):
        super().__init__()
        self.cfg, self.global_batch_size = cfg, global_batch_size
        self.catalogue = DatasetCatalogue(cfg, eval_cfg)

    @property
    def data(self) -> ShardSet:
        """The catalogue's shards, resolved on first use (setup, prompts, eval_items)."""
        return self.catalogue.shards()

    def setup(self, stage: str | None = None) -> None:
        """Check the global batch against the world size, then resolve, scan and select the shards."""
        self.per_device_batch()
        self.catalogue.shards()  # read now: a bad data config fails at setup, on every rank

    def per_device_batch(self) -> int:
        """Episodes per batch on each rank: the global batch over devices*num_nodes, which must divide it."""
        return split_batch(self.global_batch_size, self._rank_world()[1])

    def prompts(self) -> list[str]:
        """The catalogue's prompts: every prompt the data can produce, "" first."""
        return self.catalogue.prompts()

    def train_dataloader(self) -> wds.WebLoader:
        """``data.epoch_batches`` batches per epoch: per-device episodes + "skipped", from the run's first batch
        (Lightning restores a resumed run's position through the loader's ``load_state_dict``)."""
        data, cfg = self.data, self.cfg
        rank, world = self._rank_world()
        warmups, shared = plan_readers(data, world, max(1, cfg.num_workers), self.catalogue.layout)
        if shared and rank == 0:
            log.info(
                "data: %d shards cannot give each of devices*num_nodes=%d x max(1, data.num_workers)=%d readers "
                "shards of its own that form episodes: every reader draws from all shards, with its own seed (more "
                "shards that mix tasks, e.g. `pico prep folders ... --shards N`, give disjoint ones)",
                len(data.urls),
                world,
                max(1, cfg.num_workers),
            )
        state = StreamState(cfg.seed, rank, world, shared=shared)
        counts = Counter(task for task, _, _ in {entry for found in data.entries.values() for entry in found})
        stages = build_train_stages(
            data.urls, cfg, state, data.keep, self.per_device_batch(), dict(counts), warmups[rank]
        )
        dataset = wds.DataPipeline(*(stage for _, stage in stages))
        return TrainLoader(dataset, state, cfg.epoch_batches, cfg.num_workers)

    def eval_items(self) -> dict[str, list[EvalItem]]:
        """The catalogue's fixed evaluation items of ``eval.suites`` (read once)."""
        return self.catalogue.eval_items()

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """This rank's share of the evaluation items, one item per batch (seed scoring runs per episode)."""
        rank, world = self._rank_world()
        return eval_loader(self.eval_items(), rank, world)

    def _rank_world(self) -> tuple[int, int]:
        """(global rank, world size): the trainer's when attached, else env RANK/WORLD_SIZE, else (0, 1)."""
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def plan_readers(data: ShardSet, world: int, workers: int, layout: Layout) -> tuple[list[list[int]], bool]:
    """Warm-up pairs per [rank][worker], and whether the readers share every shard (see the module docstring):
    they do when some reader's own shards ([rank::world][worker::workers]) hold no episode. Every rank decides from
    every rank's split, so all decide alike (no DDP hang); `pico train --dry-run` asks the same for its world."""
    pairs = ep.pairs_per_episode(layout)
    shares = [
        [
            {entry for url in worker_shards(data.urls, rank, world, worker, workers) for entry in data.entries[url]}
            for worker in range(workers)
        ]
        for rank in range(world)
    ]
    if all(ep.formable(share, pairs) for row in shares for share in row):
        return [[min(WARMUP_PAIRS, len(share)) for share in row] for row in shares], False
    every = {entry for found in data.entries.values() for entry in found}
    return [[min(WARMUP_PAIRS, len(every))] * workers for _ in range(world)], True
