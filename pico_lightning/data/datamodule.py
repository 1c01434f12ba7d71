"""VisRelDataModule: the training stream (data/stream.py) and the evaluation items (data/eval_items.py) of a run.

The loader yields exactly ``data.epoch_batches`` batches per epoch on every rank; a run resumed inside a data epoch
(``set_position``) gets the same batches as an uninterrupted one. ``setup()`` reads the shards' samples from
index.json (else scans their json members once, PNGs unread): that picks the shots and checks that every worker's
shards can form episodes, so a bad split fails at start. ``val_dataloader`` serves this rank's share of the fixed
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
from pico_lightning.data.eval_items import EvalItem, collect_items, data_root, eval_loader
from pico_lightning.data.sources import ShardSet, load_shard_set
from pico_lightning.data.stream import (
    WARMUP_PAIRS,
    DecodePairs,
    SkipCounter,
    StreamState,
    TrainLoader,
    build_train_stages,
    worker_shards,
)
from pico_lightning.errors import UserError
from pico_lightning.panels import Layout


class VisRelDataModule(pl.LightningDataModule):
    """VisRel episodes: a resampled training stream (equal batches on every rank) and fixed eval episodes."""

    def __init__(self, cfg: DataConfig, global_batch_size: int, eval_cfg: EvalConfig | None = None):
        super().__init__()
        self.cfg, self.global_batch_size, self.eval_cfg = cfg, global_batch_size, eval_cfg
        self.layout = Layout(cfg.rows, cfg.cols, cfg.panel_size)
        self.state = StreamState(cfg.seed)
        self.data: ShardSet | None = None  # resolved on first use (setup, prompts, eval_episodes)
        self.items: dict[str, list[EvalItem]] | None = None  # eval items, read on first use (eval_items)

    def setup(self, stage: str | None = None) -> None:
        """Check the global batch against the world size, then resolve, scan and select the shards."""
        self.per_device_batch()
        self._load()

    def set_position(self, batches_done: int) -> None:
        """Place the training stream at batch ``batches_done`` (batches already trained on, counted from the
        run's start): its data epoch's seeds, and the batches of that epoch to skip. Call before the loader's
        workers start (``on_train_epoch_start``, and ``train_dataloader`` after a checkpoint restore).

        Counting from the step rather than Lightning's epoch keeps a resumed run on the same stream as an
        uninterrupted one, at any step. Exact unless a skipped pair passed the PNG check yet fails to decode.
        """
        self.state.epoch, self.state.skip = divmod(batches_done, self.cfg.epoch_batches)

    def per_device_batch(self) -> int:
        """Episodes per batch on each rank: the global batch over devices*num_nodes, which must divide it."""
        world = self._rank_world()[1]
        if self.global_batch_size % world:
            raise UserError(f"train.batch_size: {self.global_batch_size} must divide by devices*num_nodes={world}")
        return self.global_batch_size // world

    def prompts(self) -> list[str]:
        """Every prompt the data can produce under data.prompt (held-out tasks included), "" first."""
        return ep.prompt_set(self._load().index, self.cfg.prompt)

    def train_dataloader(self) -> wds.WebLoader:
        """``data.epoch_batches`` batches per epoch: per-device episodes + "skipped"."""
        data, cfg = self._load(), self.cfg
        rank, world = self._rank_world()
        warmups = self._warmups(data, world, max(1, cfg.num_workers))[rank]
        self.state.rank, self.state.world = rank, world
        if self.trainer is not None:  # after a checkpoint restore: continue the stream where the run was
            self.set_position(self.trainer.global_step * self.trainer.accumulate_grad_batches)
        counts = Counter(task for task, _, _ in {entry for found in data.entries.values() for entry in found})
        stages = build_train_stages(
            data.urls, cfg, self.state, data.keep, self.per_device_batch(), dict(counts), warmups
        )
        dataset = wds.DataPipeline(*(stage for _, stage in stages))
        return TrainLoader(dataset, self.state, cfg.epoch_batches, cfg.num_workers)

    def eval_episodes(self, split: str, n_per_task: int) -> list[dict]:
        """Fixed episodes from one plain read: "val" = held-in tasks' val pairs, "test" = held-out tasks'."""
        if split not in ("val", "test"):
            raise ValueError(f"eval_episodes: split {split!r}: expected 'val' or 'test'")
        data, cfg = self._load(), self.cfg
        tasks = frozenset(task for task, info in data.index["tasks"].items() if info["held_out"] == (split == "test"))
        keep = ep.PairFilter(frozenset({split}), tasks)
        urls = [url for url in data.urls if any(map(keep, data.metas[url]))]
        if not urls:
            return []
        counter = SkipCounter()
        pairs = wds.DataPipeline(
            wds.SimpleShardList(urls),
            wds.tarfile_to_samples(handler=counter),
            DecodePairs(keep, cfg.panel_size, cfg.resize, counter),
        )
        return ep.fixed_episodes(pairs, n_per_task, cfg.seed, self.layout, cfg.resize, cfg.prompt)

    def eval_items(self) -> dict[str, list[EvalItem]]:
        """The fixed evaluation items of ``eval.suites`` (read once); a suite without episodes is a UserError."""
        if self.items is None:
            cfg, evaluation = self.cfg, self.eval_cfg or EvalConfig(suites=[])
            self.items = collect_items(
                evaluation.suites,
                data_root(cfg.shards, cfg.root),
                self.layout,
                cfg.resize,
                cfg.prompt,
                evaluation.episodes_per_suite,
                self.eval_episodes if cfg.root or cfg.shards else None,
                evaluation.perseg_dir,
                evaluation.exemplar_swap,
            )
        return self.items

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        """This rank's share of the evaluation items, one item per batch (seed scoring runs per episode)."""
        rank, world = self._rank_world()
        return eval_loader(self.eval_items(), rank, world)

    def _rank_world(self) -> tuple[int, int]:
        """(global rank, world size): the trainer's when attached, else env RANK/WORLD_SIZE, else (0, 1)."""
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))

    def _load(self) -> ShardSet:
        if self.data is None:
            self.data = load_shard_set(self.cfg, ep.pairs_per_episode(self.layout))
        return self.data

    def _warmups(self, data: ShardSet, world: int, workers: int) -> list[list[int]]:
        """Warm-up pairs per [rank][worker]; UserError when shards are too few or a reader cannot draw.

        Every rank checks every rank's split, so a bad split fails on all of them alike (no DDP hang).
        """
        if len(data.urls) < world * workers:
            raise UserError(
                f"data.num_workers: {len(data.urls)} shards < devices*num_nodes={world} x "
                f"max(1, data.num_workers)={workers} readers; write more shards or use fewer "
                "workers"
            )
        pairs = ep.pairs_per_episode(self.layout)
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
