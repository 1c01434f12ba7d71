"""DatasetCatalogue: what a run's data holds, read without a Trainer: shards, tasks, prompts, evaluation items.

The training DataModule reads its shards through it, and so do `pico embed` (the prompts to embed), `pico eval`
(the evaluation items) and the benchmarks; nothing builds a DataModule only to read the data. Everything is read on
first use and kept: constructing a catalogue does no IO.

    catalogue = DatasetCatalogue(cfg.data, cfg.eval)
    catalogue.prompts()        # every prompt the data can produce, "" first
    catalogue.eval_items()     # {suite or group: [EvalItem]} of eval.suites (held_in -> seen, unseen)
    run_prompts(catalogue.prompts())  # what `pico embed` embeds: those, plus the family labels the suites use
"""

from __future__ import annotations

from collections.abc import Callable

import webdataset as wds

from pico_lightning.config import DataConfig, EvalConfig
from pico_lightning.data import episodes as ep
from pico_lightning.data.eval_items import EvalData, EvalItem, collect_items, data_root
from pico_lightning.data.schema import CATEGORY_PROMPTS
from pico_lightning.data.sources import ShardSet, load_shard_set
from pico_lightning.data.stream import DecodePairs, SkipCounter


def run_prompts(data_prompts: list[str]) -> list[str]:
    """Every prompt a run embeds: what the data can produce, plus the family labels the eval suites use."""
    return list(dict.fromkeys([*data_prompts, *CATEGORY_PROMPTS.values()]))


class DatasetCatalogue:
    """The shard set, tasks, prompts and fixed evaluation episodes of one data config (and its suites)."""

    def __init__(self, data: DataConfig, evaluation: EvalConfig | None = None):
        self.cfg, self.eval_cfg = data, evaluation or EvalConfig(suites=[])
        self.layout = data.layout()
        self._shards: ShardSet | None = None
        self._items: dict[str, list[EvalItem]] | None = None

    def shards(self) -> ShardSet:
        """The resolved, scanned and selected shards (read once): index.json, else their json members."""
        if self._shards is None:
            self._shards = load_shard_set(self.cfg, ep.pairs_per_episode(self.layout))
        return self._shards

    def tasks(self, held_out: bool) -> frozenset[str]:
        """The held-out (test) or held-in tasks the shards' index lists."""
        return frozenset(task for task, info in self.shards().index["tasks"].items() if info["held_out"] == held_out)

    def prompts(self) -> list[str]:
        """Every prompt the data can produce under data.prompt (held-out tasks included), "" first."""
        return ep.prompt_set(self.shards().index, self.cfg.prompt)

    def eval_episodes(self, split: str, limit: int, group_of: Callable[[str], str] | None = None) -> list[dict]:
        """Fixed episodes from one plain read: "val" = held-in tasks' val pairs, "test" = held-out tasks'; enough
        per task for ``limit`` episodes round-robin over each group of tasks (see ``episodes.fixed_episodes``)."""
        if split not in ("val", "test"):
            raise ValueError(f"eval_episodes: split {split!r}: expected 'val' or 'test'")
        data, cfg = self.shards(), self.cfg
        keep = ep.PairFilter(frozenset({split}), self.tasks(held_out=split == "test"))
        urls = [url for url in data.urls if any(map(keep, data.metas[url]))]
        if not urls:
            return []
        counter = SkipCounter()
        pairs = wds.DataPipeline(
            wds.SimpleShardList(urls),
            wds.tarfile_to_samples(handler=counter),
            DecodePairs(keep, cfg.panel_size, cfg.resize, counter),
        )
        return ep.fixed_episodes(pairs, limit, cfg.seed, self.layout, cfg.resize, cfg.prompt, group_of)

    def eval_data(self) -> EvalData:
        """Where the evaluation episodes come from; held_in's seen group is the training selection's tasks."""
        cfg, shards = self.cfg, bool(self.cfg.root or self.cfg.shards)
        held_in = shards and "held_in" in self.eval_cfg.suites  # else no need to read the shards here
        return EvalData(
            data_root(cfg.shards, cfg.root),
            self.eval_episodes if shards else None,
            self.shards().keep.tasks if held_in else frozenset(),
            self.eval_cfg.perseg_dir,
        )

    def eval_items(self) -> dict[str, list[EvalItem]]:
        """The fixed evaluation items of ``eval.suites`` (read once): ``held_in`` as its groups ``seen`` and
        ``unseen``; an unknown suite or one without episodes is a UserError."""
        if self._items is None:
            cfg, evaluation = self.cfg, self.eval_cfg
            self._items = collect_items(
                evaluation.suites,
                self.eval_data(),
                self.layout,
                cfg.resize,
                cfg.prompt,
                evaluation.episodes_per_suite,
                evaluation.exemplar_swap,
            )
        return self._items
