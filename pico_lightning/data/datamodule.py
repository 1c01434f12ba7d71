"""VisRelDataModule: VisRel shards -> batches of episodes, as many on every rank; deterministic eval episodes.

The training stream (``build_train_stages``) runs in each DataLoader worker of each rank:

    shards    this rank's shards[rank::world], this worker's [worker::workers] of those, resampled forever
              (seeded by data.seed, epoch, rank, worker)
    read      tar members -> samples (webdataset; a bad shard or member is counted by the SkipCounter)
    decode    json meta -> keep the train pairs of the selected tasks (and shots); PNGs -> uint8 (3, S, S)
    episodes  pools by (task, variant) -> EpisodeSampler -> make_episode, 2 episodes per pair read once warm
    batch     per-device batch -> {"grid", "mask", "prompt", "task", "category", "skipped"}; "skipped" counts
              the samples and shards this worker skipped so far this epoch (logged as data/skipped)

The WebLoader yields exactly ``data.epoch_batches`` batches per epoch on every rank. ``setup()`` scans the
shards' json members once (PNGs are not read): that checks every shard, picks the shots and checks that
every worker's shards can form episodes, so a bad split fails at start instead of hanging a worker.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import torch
import webdataset as wds
from PIL import Image

from pico_lightning.config import DataConfig
from pico_lightning.data import episodes as ep
from pico_lightning.data.schema import SampleMeta
from pico_lightning.data.sources import MEMBERS, ShardSet, load_shard_set
from pico_lightning.errors import UserError
from pico_lightning.panels import Layout, fit_panel, to_tensor

log = logging.getLogger(__name__)
POOL_SIZE = 16  # pairs kept per (task, variant) in a worker: 16 * 2 * 3 * S^2 bytes (S=512: 25 MB)
WARMUP_PAIRS = 64  # pairs read (at most the worker's own) before the first episode, so pools are mixed
EPISODES_PER_PAIR = 2  # episodes drawn per pair read once warm: each decoded pair serves ~4 episodes
DECODE_ERRORS = (KeyError, ValueError, OSError, SyntaxError, EOFError, Image.DecompressionBombError)


@dataclass
class StreamState:
    """What seeds a training stream; its stages share it, so ``set_position`` reaches workers started later."""

    seed: int
    rank: int = 0
    world: int = 1
    epoch: int = 0


class SkipCounter:
    """Error handler of a stream: counts each skipped sample or shard and warns once; never fatal."""

    def __init__(self) -> None:
        self.count, self.warned = 0, False

    def __call__(self, exn: BaseException, where: str = "") -> bool:
        self.count += 1
        if not self.warned:
            self.warned = True
            log.warning(
                "data: skipped a corrupt sample or shard %s(%s: %s); further ones are only counted (data/skipped)",
                f"{where} " if where else "",
                type(exn).__name__,
                exn,
            )
        return True


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def worker_shards(urls: list[str], rank: int, world: int, worker: int, workers: int) -> list[str]:
    """The disjoint subset of shards one worker of one rank reads."""
    return urls[rank::world][worker::workers]


class RankShards(torch.utils.data.IterableDataset):
    """Shard stage: this rank's and worker's shards, resampled forever (seed, epoch, rank, worker)."""

    def __init__(self, urls: list[str], state: StreamState):
        super().__init__()
        self.urls, self.state = urls, state

    def __iter__(self) -> Iterator[dict]:
        worker, workers = _worker()
        mine = worker_shards(self.urls, self.state.rank, self.state.world, worker, workers)
        rng = ep.seeded_rng(self.state.seed, "shards", self.state.epoch, self.state.rank, worker)
        while True:
            yield {"url": mine[int(rng.integers(len(mine)))]}


def decode_panel(data: bytes, size: int, mode: str) -> torch.Tensor:
    """PNG bytes -> (3, size, size) uint8 panel (exact when the picture is already size x size)."""
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")  # decodes fully: a truncated PNG raises here
    if image.size == (size, size):
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
    panel = fit_panel(to_tensor(image), size, mode)
    return ((panel + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class DecodePairs:
    """Decode stage: samples -> the Pairs the filter keeps; a corrupt one (PNG, json, key) is only counted."""

    def __init__(self, keep: ep.PairFilter, panel_size: int, resize_mode: str, counter: SkipCounter):
        self.keep, self.size, self.mode, self.counter = keep, panel_size, resize_mode, counter

    def __call__(self, samples: Iterable[dict]) -> Iterator[ep.Pair]:
        for sample in samples:
            try:
                meta = SampleMeta.from_json(json.loads(sample["json"]))
                if not self.keep(meta):
                    continue
                images = (decode_panel(sample[key], self.size, self.mode) for key in MEMBERS[:2])
                pair = ep.Pair(meta, *images)
            except DECODE_ERRORS as err:
                self.counter(err, where=f"{sample.get('__url__')}:{sample.get('__key__')}")
                continue
            yield pair


class EpisodeStream:
    """Episode stage: pools the pairs by (task, variant); once warm, draws EPISODES_PER_PAIR per pair read."""

    def __init__(self, cfg: DataConfig, state: StreamState, counts: dict[str, int], warmups: list[int]):
        self.cfg, self.state, self.counts, self.warmups = cfg, state, counts, warmups

    def __call__(self, pairs: Iterable[ep.Pair]) -> Iterator[dict]:
        cfg, worker = self.cfg, _worker()[0]
        layout = Layout(cfg.rows, cfg.cols, cfg.panel_size)
        rng = ep.seeded_rng(self.state.seed, "episodes", self.state.epoch, self.state.rank, worker)
        pool = ep.EpisodePool(POOL_SIZE, rng)
        k = ep.pairs_per_episode(layout)
        sampler = ep.EpisodeSampler(cfg.sampling, cfg.task_weights, rng, k, self.counts)
        for read, pair in enumerate(pairs, 1):
            pool.add(pair)
            if read < self.warmups[worker] or not sampler.task_probabilities(pool.pools):
                continue
            for _ in range(EPISODES_PER_PAIR):
                drawn = sampler.draw(pool.pools)
                yield ep.make_episode(drawn, layout, cfg.resize, cfg.prompt, cfg.prompt_dropout, cfg.augment, rng)


class BatchEpisodes:
    """Batch stage: full batches of ``batch_size`` episodes plus "skipped", the stream's skip count so far."""

    def __init__(self, batch_size: int, counter: SkipCounter):
        self.batch_size, self.counter = batch_size, counter

    def __call__(self, episodes: Iterable[dict]) -> Iterator[dict]:
        self.counter.count = 0  # per epoch: the same for in-process and worker streams
        batch = []
        for episode in episodes:
            batch.append(episode)
            if len(batch) == self.batch_size:
                yield ep.collate_episodes(batch) | {"skipped": torch.tensor(self.counter.count)}
                batch = []


def build_train_stages(
    urls: list[str],
    cfg: DataConfig,
    state: StreamState,
    keep: ep.PairFilter,
    batch_size: int,
    counts: dict[str, int],
    warmups: list[int],
) -> list[tuple]:
    """The training stream as named, picklable stages in order (``counts``: kept train pairs per task)."""
    counter = SkipCounter()
    return [
        ("shards", RankShards(urls, state)),
        ("read", wds.tarfile_to_samples(handler=counter)),
        ("decode", DecodePairs(keep, cfg.panel_size, cfg.resize, counter)),
        ("episodes", EpisodeStream(cfg, state, counts, warmups)),
        ("batch", BatchEpisodes(batch_size, counter)),
    ]


class VisRelDataModule(pl.LightningDataModule):
    """VisRel episodes: a resampled training stream (equal batches on every rank) and fixed eval episodes."""

    def __init__(self, cfg: DataConfig, global_batch_size: int):
        super().__init__()
        self.cfg, self.global_batch_size = cfg, global_batch_size
        self.layout = Layout(cfg.rows, cfg.cols, cfg.panel_size)
        self.state = StreamState(cfg.seed)
        self.data: ShardSet | None = None  # resolved on first use (setup, prompts, eval_episodes)

    def setup(self, stage: str | None = None) -> None:
        """Check the global batch against the world size, then resolve, scan and select the shards."""
        self.per_device_batch()
        self._load()

    def set_position(self, batches_done: int) -> None:
        """Seed the training stream for the data epoch holding batch ``batches_done`` (batches already trained
        on, counted from the run's start). Call before the loader's workers start (``on_train_epoch_start``).

        Counting from the step rather than Lightning's epoch keeps a resumed run on the same stream as an
        uninterrupted one: exact when checkpoints fall on data-epoch boundaries (train.checkpoint_every a
        multiple of data.epoch_batches); otherwise the interrupted data epoch starts over.
        """
        self.state.epoch = batches_done // self.cfg.epoch_batches

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
        loader = wds.WebLoader(dataset, batch_size=None, num_workers=cfg.num_workers, persistent_workers=False)
        return loader.with_epoch(cfg.epoch_batches).with_length(cfg.epoch_batches, silent=True)

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
