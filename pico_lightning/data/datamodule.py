"""VisRelDataModule: the training stream (data/stream.py) and the evaluation items (data/catalogue.py) of a run.

The loader yields exactly ``data.epoch_batches`` batches per epoch on every rank; it keeps its own position (its
``state_dict``, see data/stream.py ``TrainLoader``), so a run resumed inside a data epoch gets the same batches as
an uninterrupted one. ``setup()`` has the catalogue read the shards' samples from index.json (else scan their json
members once, PNGs unread): that picks the shots and checks that every worker's shards can form episodes, so a bad
split fails at start. ``val_dataloader`` serves this rank's share of the fixed
evaluation episodes, one per batch, to Lightning's validation loop.
"""

from __future__ import annotations

import os
from collections import Counter

import lightning.pytorch as pl
import torch
import webdataset as wds

from pico_lightning.config import DataConfig, EvalConfig
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
from pico_lightning.errors import UserError
from pico_lightning.panels import Layout


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
        world = self._rank_world()[1]
        if self.global_batch_size % world:
            raise UserError(f"train.batch_size: {self.global_batch_size} must divide by devices*num_nodes={world}")
        return self.global_batch_size // world

    def prompts(self) -> list[str]:
        """The catalogue's prompts: every prompt the data can produce, "" first."""
        return self.catalogue.prompts()

    def train_dataloader(self) -> wds.WebLoader:
        """``data.epoch_batches`` batches per epoch: per-device episodes + "skipped", from the run's first batch
        (Lightning restores a resumed run's position through the loader's ``load_state_dict``)."""
        data, cfg = self.data, self.cfg
        rank, world = self._rank_world()
        warmups = reader_warmups(data, world, max(1, cfg.num_workers), self.catalogue.layout)[rank]
        state = StreamState(cfg.seed, rank, world)
        counts = Counter(task for task, _, _ in {entry for found in data.entries.values() for entry in found})
        stages = build_train_stages(data.urls, cfg, state, data.keep, self.per_device_batch(), dict(counts), warmups)
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


def reader_warmups(data: ShardSet, world: int, workers: int, layout: Layout) -> list[list[int]]:
    """Warm-up pairs per [rank][worker]; UserError when shards are too few or a reader cannot draw.

    Every rank checks every rank's split, so a bad split fails on all of them alike (no DDP hang); `pico train
    --dry-run` runs the same check for the world it is given.
    """
    if len(data.urls) < world * workers:
        raise UserError(
            f"data.num_workers: {len(data.urls)} shards < devices*num_nodes={world} x "
            f"max(1, data.num_workers)={workers} readers; write more shards (pico prep folders --shards N) or use "
            "fewer workers"
        )
    pairs = ep.pairs_per_episode(layout)
    warmups = [[0] * workers for _ in range(world)]
    for rank in range(world):
        for worker in range(workers):
            shards = worker_shards(data.urls, rank, world, worker, workers)
            entries = {entry for url in shards for entry in data.entries[url]}
            if not ep.formable(entries, pairs):
                raise UserError(
                    f"data.num_workers: rank {rank} worker {worker}'s shards {shards} hold "
                    f"no {pairs} train pairs of one selected task and variant; use fewer "
                    "workers or devices, shards that mix tasks, or more data.shots_per_task"
                )
            warmups[rank][worker] = min(WARMUP_PAIRS, len(entries))
    return warmups
