"""VisRelDataModule on tiny shards in tmp_path: the batch contract (B' = the sample), balanced tasks, disjoint
ranks with equal batch counts, deterministic epochs, eval episodes, errors (corrupt data: test_corrupt_data.py)."""

from collections import Counter

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import quiet_trainer
from mixed_shards import TASKS, TRAIN, placed_loader, set_up_module

from pico_lightning.config import DataConfig, EvalConfig
from pico_lightning.data import stream as stream_module
from pico_lightning.data.datamodule import VisRelDataModule
from pico_lightning.data.schema import CATEGORY_PROMPTS, INDEX_NAME, SampleMeta
from pico_lightning.data.stream import build_train_stages
from pico_lightning.errors import UserError
from pico_lightning.evaluation.evaluator import episode_seeds
from pico_lightning.panels import Layout, split_grid


def _to_uint8(panel: torch.Tensor) -> np.ndarray:
    return ((panel + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _identify(grid: torch.Tensor, task: str, lookup: dict) -> list[SampleMeta]:
    """The samples whose (input, output) are the grid's pairs, in reading order (asserts each is found)."""
    panels = [_to_uint8(p) for p in split_grid(grid, Layout(2, 2, 32))]
    found = []
    for x, y in zip(panels[0::2], panels[1::2], strict=True):
        metas = [
            m for (t, _), (i, o, m) in lookup.items() if t == task and np.array_equal(i, x) and np.array_equal(o, y)
        ]
        assert len(metas) == 1
        found.append(metas[0])
    return found


def test_batches_have_the_contract_and_the_target_cell_holds_the_ground_truth(shards):
    path, lookup = shards
    batches = list(set_up_module(path).train_dataloader())
    assert len(batches) == 5
    batch = batches[-1]
    assert set(batch) == {"grid", "mask", "prompt", "task", "category", "skipped"}
    assert batch["grid"].shape == (4, 3, 64, 64) and batch["grid"].dtype == torch.float32
    assert batch["mask"].shape == (4, 1, 64, 64) and batch["mask"].dtype == torch.float32
    assert batch["grid"].min() >= -1 and batch["grid"].max() <= 1
    assert batch["mask"][:, :, 32:, 32:].all() and batch["mask"].sum() == 4 * 32 * 32
    assert batch["skipped"].dtype == torch.long and batch["skipped"].dim() == 0 and batch["skipped"] == 0
    for b in batches:
        for grid, task, category, prompt in zip(b["grid"], b["task"], b["category"], b["prompt"], strict=True):
            a, query = _identify(grid, task, lookup)  # B' is the real output of the query sample B
            assert a.pair_id != query.pair_id and a.variant == query.variant and query.split == "train"
            assert category == TASKS[task][0] and prompt == CATEGORY_PROMPTS[category]


@pytest.mark.parametrize("policy", ["task_balanced", "uniform"])
def test_task_frequencies_follow_the_policy(shards, policy):
    episodes = set_up_module(shards[0], batch=16, epoch_batches=75, sampling=policy).train_dataloader()
    seen = Counter(task for batch in episodes for task in batch["task"])
    total, draws = sum(TRAIN.values()), sum(seen.values())
    expected = {t: 1 / len(TRAIN) if policy == "task_balanced" else n / total for t, n in TRAIN.items()}
    assert set(seen) == set(TRAIN)
    # 1200 draws: the standard error of a frequency is <= 0.015; a fixed seed keeps this exact
    assert max(abs(seen[t] / draws - p) for t, p in expected.items()) < 0.035, seen


def test_two_ranks_read_disjoint_shards_and_yield_equal_batch_counts(shards, monkeypatch):
    path, read, counts = shards[0], {}, {}
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        module = set_up_module(path, batch=4, num_workers=2, epoch_batches=7)
        loader = module.train_dataloader()
        batches = list(loader)
        counts[rank] = len(batches)
        assert len(loader) == 7 and all(b["grid"].shape[0] == 2 for b in batches)  # 4 global / 2 ranks
        shard_stage = dict(
            build_train_stages(module.data.urls, module.cfg, loader.state, module.data.keep, 2, {}, [0, 0])
        )["shards"]
        for worker in (0, 1):  # the shard stage as worker `worker` of 2 sees it
            monkeypatch.setattr(stream_module, "_worker", lambda worker=worker: (worker, 2))
            stream = iter(shard_stage)
            read[rank, worker] = {next(stream)["url"] for _ in range(100)}
    assert sum(len(urls) for urls in read.values()) == len(set().union(*read.values())) == 8  # disjoint, all
    assert counts[0] == counts[1] == 7


@pytest.mark.filterwarnings("ignore:This DataLoader will create 5 worker processes")
def test_readers_share_every_shard_when_too_few_for_each_its_own_and_resume_exactly(shards, monkeypatch, caplog):
    path = shards[0]
    monkeypatch.setenv("WORLD_SIZE", "2")
    module = set_up_module(path, batch=4, num_workers=5)  # 8 shards, 2 ranks x 5 workers = 10 readers
    with caplog.at_level("INFO", logger="pico_lightning.data.datamodule"):
        loader = module.train_dataloader()
    assert loader.state.shared and "every reader draws from all shards" in caplog.text
    stages = build_train_stages(module.data.urls, module.cfg, loader.state, module.data.keep, 2, {}, [0] * 5)
    with monkeypatch.context() as patch:
        patch.setattr(stream_module, "_worker", lambda: (4, 5))
        stream = iter(dict(stages)["shards"])
        assert len({next(stream)["url"] for _ in range(200)}) == 8  # the last reader draws from all of them

    def batches(done: int) -> list[dict]:
        module = set_up_module(path, batch=4, num_workers=5, augment=True, epoch_batches=6)
        return list(placed_loader(module, done))

    whole = batches(0)
    resumed = batches(4)
    assert len(resumed) == 2 and all(torch.equal(x["grid"], y["grid"]) for x, y in zip(resumed, whole[4:], strict=True))


def test_same_seed_and_epoch_give_the_same_batches(shards):
    for workers in (0, 2):
        runs = []
        for epoch in (3, 3, 4):
            module = set_up_module(shards[0], num_workers=workers, augment=True, prompt_dropout=0.5, epoch_batches=4)
            runs.append(list(placed_loader(module, epoch * 4)))  # the first batch of data epoch `epoch`
        same, other = runs[0], runs[1]
        assert len(same) == len(other) == 4
        assert all(
            torch.equal(x["grid"], y["grid"]) and x["prompt"] == y["prompt"] for x, y in zip(same, other, strict=True)
        )
        assert any(not torch.equal(x["grid"], y["grid"]) for x, y in zip(same, runs[2], strict=True))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_stream_placed_mid_epoch_yields_the_uninterrupted_stream_from_there(shards, workers):
    def batches(done: int) -> list[dict]:
        module = set_up_module(shards[0], num_workers=workers, augment=True, prompt_dropout=0.5, epoch_batches=6)
        return list(placed_loader(module, done))

    whole = batches(0) + batches(6)  # data epochs 0 and 1
    for done in (1, 3, 5, 9):
        resumed = batches(done)
        assert len(resumed) == 6 - done % 6  # the rest of its data epoch
        for got, expected in zip(resumed, whole[done:], strict=False):
            assert torch.equal(got["grid"], expected["grid"]) and got["prompt"] == expected["prompt"]


def test_the_loader_saves_its_position_and_a_restored_one_continues_the_stream(shards):
    def loader():
        return set_up_module(shards[0], augment=True, prompt_dropout=0.5, epoch_batches=4).train_dataloader()

    whole = list(placed_loader(set_up_module(shards[0], augment=True, prompt_dropout=0.5, epoch_batches=4), 0))
    running = loader()
    batches = iter(running)
    next(batches), next(batches)
    assert running.state_dict() == {"batches": 2}  # what Lightning stores in a checkpoint after two steps
    restored = loader()
    restored.load_state_dict(running.state_dict())
    rest = list(restored)
    assert len(rest) == 2 and all(torch.equal(x["grid"], y["grid"]) for x, y in zip(rest, whole[2:], strict=True))
    assert restored.state_dict() == {"batches": 4}
    assert len(list(restored)) == 4 and restored.state_dict() == {"batches": 8}  # the next data epoch, whole


def test_shots_and_num_tasks_restrict_what_is_drawn(shards):
    path, lookup = shards
    module = set_up_module(path, shots_per_task=2, epoch_batches=10)
    assert {task: len(ids) for task, ids in module.data.keep.shots.items()} == {t: 2 for t in TRAIN}
    for batch in module.train_dataloader():
        for grid, task in zip(batch["grid"], batch["task"], strict=True):
            assert {m.pair_id for m in _identify(grid, task, lookup)} == module.data.keep.shots[task]
    module = set_up_module(path, num_tasks=4, seed=1, epoch_batches=10)
    chosen = sorted(module.data.keep.tasks)
    assert len(chosen) == 4 and {TASKS[t][0] for t in chosen} == {
        "restoration",
        "estimation",
        "perception",
        "manipulation",
    }
    assert {task for batch in module.train_dataloader() for task in batch["task"]} <= set(chosen)


def test_user_errors_name_the_key(shards, monkeypatch, tmp_path):
    path = shards[0]
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(UserError, match=r"train.batch_size: expected a multiple of devices\*num_nodes=3 .*, got 4"):
        set_up_module(path, batch=4)
    monkeypatch.delenv("WORLD_SIZE")
    with pytest.raises(UserError, match="data.tasks: unknown task"):
        set_up_module(path, tasks=["nope"])
    with pytest.raises(UserError, match="data.task_weights: unknown task"):
        set_up_module(path, sampling="weighted", task_weights={"nope": 2.0})
    with pytest.raises(UserError, match="not found"):
        set_up_module(tmp_path / "missing-{000..001}.tar")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "visrel-000000.tar").write_bytes(b"not a tar")
    with pytest.raises(UserError, match="without a readable sample"):
        set_up_module(tmp_path / "empty")


def test_eval_episodes_are_fixed_and_come_from_the_right_split(shards):
    path, lookup = shards
    module = set_up_module(path)
    val, test = module.catalogue.eval_episodes("val", 9), module.catalogue.eval_episodes("test", 2)
    assert [e["task"] for e in val] == ["denoise"] * 3 + ["edges"] * 3 + ["segment"] * 3
    assert [e["task"] for e in test] == ["sketch"] * 2
    for episode, split in [(e, "val") for e in val] + [(e, "test") for e in test]:
        metas = _identify(episode["grid"], episode["task"], lookup)
        assert {m.split for m in metas} == {split} and tuple(m.pair_id for m in metas) == episode["pair_ids"]
    again = set_up_module(path).catalogue.eval_episodes("val", 9)
    assert all(torch.equal(x["grid"], y["grid"]) for x, y in zip(val, again, strict=True))


def test_each_eval_episode_draws_its_own_seeds_and_its_swapped_copy_the_same_ones(shards):
    path, _ = shards
    items = VisRelDataModule(
        DataConfig(shards=str(path), num_workers=0),
        4,
        EvalConfig(suites=["held_in", "held_out"], episodes_per_suite=5, exemplar_swap=True),
    ).eval_items()
    assert list(items) == ["seen", "held_out", "seen_swapped"]  # trains on every held-in task: no unseen group
    for suite in items:
        assert [item.episode for item in items[suite]] == list(range(len(items[suite])))
    seeds = [episode_seeds(0, item.episode, 4) for item in items["seen"]]
    assert len({s for block in seeds for s in block}) == 4 * len(seeds)  # no draw shared by two episodes
    assert episode_seeds(7, 3, 8)[:4] == episode_seeds(7, 3, 4)  # |S| = 4 is a prefix of |S| = 8


def test_held_in_is_grouped_by_the_training_selection(shards):
    path, _ = shards
    suites = EvalConfig(suites=["held_in", "held_out"], episodes_per_suite=4, exemplar_swap=True)
    module = VisRelDataModule(DataConfig(shards=str(path), num_workers=0, tasks=["denoise"]), 4, suites)
    items = module.eval_items()
    assert {suite: {i.task for i in chosen} for suite, chosen in items.items()} == {
        "seen": {"denoise"},
        "unseen": {"edges", "segment"},  # the pool's held-in tasks with val pairs that this run leaves out
        "held_out": {"sketch"},
        "seen_swapped": {"denoise"},  # one seen task: its swapped exemplars come from the unseen ones
    }
    assert len(items["seen"]) == len(items["unseen"]) == 4  # each group gets eval.episodes_per_suite
    donors = {(i.task, i.grid[:, :32].sum().item()) for i in items["unseen"]}
    assert all((d.task, d.grid[:, :32].sum().item()) not in donors for d in items["seen"])
    assert all(any(s.grid[:, :32].sum().item() == v for _, v in donors) for s in items["seen_swapped"])


def test_an_unknown_suite_is_one_line_listing_the_suites_of_the_data(shards):
    path, _ = shards
    module = VisRelDataModule(DataConfig(shards=str(path), num_workers=0), 4, EvalConfig(suites=["held_in", "lab"]))
    with pytest.raises(UserError, match=r"^eval.suites: 'lab' is not a suite of .*; it has held_in, held_out \(and"):
        module.eval_items()


def test_prompts_cover_the_prompt_mode(shards):
    path = shards[0]
    assert set_up_module(path, prompt="none").prompts() == [""]
    assert set_up_module(path, prompt="category").prompts() == ["", "Edit", "Estimate", "Restore", "Segment"]
    assert set_up_module(path, prompt="task").prompts() == [""] + sorted(f"do {t}" for t in TASKS)


def test_brace_patterns_and_pipes_work_without_an_index(shards):
    path = shards[0]
    (path / INDEX_NAME).unlink()
    pattern = set_up_module(f"{path}/visrel-{{000000..000007}}.tar")
    assert pattern.data.index["tasks"]["sketch"]["held_out"] and len(pattern.data.urls) == 8
    urls = "::".join(f"pipe:cat {p}" for p in sorted(path.glob("*.tar")))
    assert len(list(set_up_module(urls).train_dataloader())) == 5


class _CountingModule(pl.LightningModule):
    """Counts the batches of each epoch (the loader itself moves on to the next data epoch)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[int, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch["grid"]))
        return (self.weight - batch["grid"].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_trainer_runs_reseeded_epochs_of_equal_length(shards, tmp_path):
    module = _CountingModule()
    trainer = quiet_trainer(max_epochs=2, use_distributed_sampler=False, default_root_dir=tmp_path)
    trainer.fit(
        module,
        datamodule=VisRelDataModule(DataConfig(shards=str(shards[0]), num_workers=0, epoch_batches=6), 4),
    )
    assert Counter(epoch for epoch, _ in module.seen) == {0: 6, 1: 6}
    assert not torch.equal(module.seen[0][1], module.seen[6][1])  # the loader's position reseeded the second epoch
