"""The VisRel training stream: shards -> batches of episodes, as many on every rank, resumable at any batch.

It runs in each DataLoader worker of each rank (``build_train_stages``; ``TrainLoader`` wraps it):

    shards    this rank's shards[rank::world], this worker's [worker::workers] of those (every shard when the
              readers share them, ``StreamState.shared``), resampled forever (seeded by data.seed, epoch, rank, worker)
    read      tar members -> samples (webdataset; a bad shard or member is counted by the SkipCounter)
    decode    json meta -> keep the train pairs of the selected tasks (and shots); PNGs checked (chunk CRCs)
              but decoded (``pictures.read_picture``) to uint8 (3, S, S) only when an episode first uses them
    episodes  pools by (task, variant) -> EpisodeSampler -> make_episode, 2 episodes per pair read once warm
    batch     per-device batch -> TrainBatch (data/batch.py: grid, mask, prompt, task, category, skipped);
              "skipped" counts the samples and shards this worker skipped so far this epoch (logged as data/skipped)

A stream placed inside a data epoch (``StreamState.skip``) replays the epoch's random draws up to that batch
without decoding or composing a picture, then yields the remaining batches: the same batches as an uninterrupted
run, at any worker count. ``TrainLoader`` owns that position: it counts the batches it hands out and saves and
restores the count through Lightning's loader ``state_dict``, so a resumed run continues the same stream.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
import webdataset as wds

from pico_lightning.config import DataConfig
from pico_lightning.data import episodes as ep
from pico_lightning.data.batch import TrainBatch
from pico_lightning.data.schema import SampleMeta
from pico_lightning.data.sources import MEMBERS
from pico_lightning.panels import fit_panel, to_tensor
from pico_lightning.pictures import check_picture, read_picture

log = logging.getLogger(__name__)
POOL_SIZE = 16  # pairs kept per (task, variant) in a worker: 16 * 2 * 3 * S^2 bytes (S=512: 25 MB)
WARMUP_PAIRS = 64  # pairs read (at most the worker's own) before the first episode, so pools are mixed
EPISODES_PER_PAIR = 2  # episodes drawn per pair read once warm: each decoded pair serves ~4 episodes
DECODE_ERRORS = (KeyError, ValueError)  # a missing member; bad json, meta or picture (ImageInputError)


@dataclass
class StreamState:
    """What seeds a training stream; its stages share it, and ``TrainLoader`` places it before its workers start."""

    seed: int
    rank: int = 0
    world: int = 1
    epoch: int = 0
    skip: int = 0  # batches of this data epoch already trained on (all workers together)
    shared: bool = False  # every reader draws from every shard: too few to give each reader its own (datamodule)

    def reader(self) -> tuple[int, int, int]:
        """(worker it plays, workers, batches it skips) for the calling DataLoader worker.

        The loader takes its j-th batch from worker j % workers. A stream resumed after ``skip`` batches must
        start with the batch the uninterrupted run's worker skip % workers made next, so worker p plays worker
        (p + skip) % workers (its shards and seeds) and skips that one's first (p + skip) // workers batches.
        """
        worker, workers = _worker()
        return (worker + self.skip) % workers, workers, (worker + self.skip) // workers


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
    """Shard stage: this rank's and worker's shards (all when shared), resampled forever (seed, epoch, rank, worker)."""

    def __init__(self, urls: list[str], state: StreamState):
        super().__init__()
        self.urls, self.state = urls, state

    def __iter__(self) -> Iterator[dict]:
        worker, workers, _ = self.state.reader()
        mine = (
            self.urls
            if self.state.shared
            else worker_shards(self.urls, self.state.rank, self.state.world, worker, workers)
        )
        rng = ep.seeded_rng(self.state.seed, "shards", self.state.epoch, self.state.rank, worker)
        while True:
            yield {"url": mine[int(rng.integers(len(mine)))]}


def decode_panel(data: bytes, size: int, mode: str) -> torch.Tensor:
    """PNG bytes -> (3, size, size) uint8 panel (exact when the picture is already size x size)."""
    picture = read_picture(data, "shard picture")  # decodes fully: a truncated PNG raises here
    if picture.shape[:2] == (size, size):
        return torch.from_numpy(np.array(picture)).permute(2, 0, 1).contiguous()
    panel = fit_panel(to_tensor(picture), size, mode)
    return ((panel + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class LazyPanel:
    """A panel's image bytes, decoded on first use (then kept): skipped episodes never decode their pairs."""

    def __init__(self, data: bytes, size: int, mode: str):
        check_picture(data, "shard picture")  # chunk CRCs and truncation, without inflating the pixels
        self.data, self.size, self.mode = data, size, mode
        self.panel: torch.Tensor | None = None

    def tensor(self) -> torch.Tensor:
        if self.panel is None:
            self.panel, self.data = decode_panel(self.data, self.size, self.mode), b""
        return self.panel


class DecodePairs:
    """Decode stage: samples -> the Pairs the filter keeps; a corrupt one (PNG, json, key) is only counted.

    ``lazy``: the pictures stay LazyPanels (checked, not decoded) until an episode uses them.
    """

    def __init__(
        self, keep: ep.PairFilter, panel_size: int, resize_mode: str, counter: SkipCounter, lazy: bool = False
    ):
        self.keep, self.size, self.mode, self.counter, self.lazy = keep, panel_size, resize_mode, counter, lazy

    def __call__(self, samples: Iterable[dict]) -> Iterator[ep.Pair]:
        load = LazyPanel if self.lazy else decode_panel
        for sample in samples:
            try:
                meta = SampleMeta.from_json(json.loads(sample["json"]))
                if not self.keep(meta):
                    continue
                pair = ep.Pair(meta, *(load(sample[key], self.size, self.mode) for key in MEMBERS[:2]))
            except DECODE_ERRORS as err:
                self.counter(err, where=f"{sample.get('__url__')}:{sample.get('__key__')}")
                continue
            yield pair


class EpisodeStream:
    """Episode stage: pools the (lazy) pairs by (task, variant); once warm, draws EPISODES_PER_PAIR per pair read.

    The first ``skip * batch_size`` episodes of a resumed stream only make their random draws.
    """

    def __init__(
        self,
        cfg: DataConfig,
        state: StreamState,
        counts: dict[str, int],
        warmups: list[int],
        batch_size: int,
        counter: SkipCounter,
    ):
        self.cfg, self.state, self.counts, self.warmups = cfg, state, counts, warmups
        self.batch_size, self.counter = batch_size, counter

    def __call__(self, pairs: Iterable[ep.Pair]) -> Iterator[dict]:
        cfg, (worker, _, skip) = self.cfg, self.state.reader()
        skip *= self.batch_size
        layout = cfg.layout()
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
                if skip:
                    skip -= 1
                    ep.draw_flags(rng, cfg.augment, cfg.prompt_dropout)
                    continue
                try:
                    drawn = [ep.Pair(p.meta, p.input.tensor(), p.output.tensor()) for p in drawn]
                except DECODE_ERRORS as err:  # passed the CRC check, yet does not decode: counted, not drawn
                    self.counter(err, where=f"{drawn[0].meta.task}/{drawn[0].meta.variant}")
                    continue
                yield ep.make_episode(drawn, layout, cfg.resize, cfg.prompt, cfg.prompt_dropout, cfg.augment, rng)


class BatchEpisodes:
    """Batch stage: full batches of ``batch_size`` episodes plus "skipped", the stream's skip count so far."""

    def __init__(self, batch_size: int, counter: SkipCounter):
        self.batch_size, self.counter = batch_size, counter

    def __call__(self, episodes: Iterable[dict]) -> Iterator[TrainBatch]:
        self.counter.count = 0  # per epoch: the same for in-process and worker streams
        chosen = []
        for episode in episodes:
            chosen.append(episode)
            if len(chosen) == self.batch_size:
                batch = ep.collate_episodes(chosen)
                batch["skipped"] = torch.tensor(self.counter.count)
                yield batch
                chosen = []


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
        ("decode", DecodePairs(keep, cfg.panel_size, cfg.resize, counter, lazy=True)),
        ("episodes", EpisodeStream(cfg, state, counts, warmups, batch_size, counter)),
        ("batch", BatchEpisodes(batch_size, counter)),
    ]


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers ignore SIGTERM and SIGUSR1: SLURM signals every process of a job, and the training process,
    which decides when to stop, shuts its workers down itself (a worker killed first is a traceback in the fit)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


class TrainLoader(wds.WebLoader):
    """The training loader: ``epoch_batches`` long, fresh workers per epoch, and the owner of its position.

    ``position`` counts the batches handed out since the run's start, across data epochs. Each iteration places
    the stream there (data epoch = position // epoch_batches, batches of it to skip = the rest) before its workers
    start, then yields the rest of that data epoch, so Lightning's epoch (which counts restored batches) ends
    with it. Lightning stores :meth:`state_dict` in every checkpoint and calls :meth:`load_state_dict` on a resume
    before it first iterates the loader (``FitLoop.setup_data``). Its fetcher takes no batch ahead of the step for
    a loader with a length, so at a save the count is exactly the batches trained on: the resumed stream yields
    what an uninterrupted run would, at any step and worker count.
    """

    def __init__(self, dataset: wds.DataPipeline, state: StreamState, epoch_batches: int, num_workers: int):
        super().__init__(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            persistent_workers=False,
            worker_init_fn=ignore_stop_signals,
        )
        self.state, self.epoch_batches = state, epoch_batches
        self.position = 0

    def __iter__(self) -> Iterator[TrainBatch]:
        self.state.epoch, self.state.skip = divmod(self.position, self.epoch_batches)
        return self._count(islice(iter(self.pipeline[0]), self.epoch_batches - self.state.skip))

    def _count(self, batches: Iterator[TrainBatch]) -> Iterator[TrainBatch]:
        for batch in batches:
            self.position += 1  # counted when handed out: a checkpoint after this step includes the batch
            yield batch

    def __len__(self) -> int:
        return self.epoch_batches

    def state_dict(self) -> dict:
        """``{"batches": n}``: batches handed out since the run's start (data epoch and skip derive from it)."""
        return {"batches": self.position}

    def load_state_dict(self, state: dict) -> None:
        """Continue after ``state["batches"]`` batches; call before iterating (Lightning does)."""
        if "batches" not in state:  # written before the loader kept its position
            log.warning("the checkpoint holds no data stream position: the stream starts from its beginning")
        self.position = int(state.get("batches", 0))
