"""The shard plan of `pico prep folders`: blocks of an episode's worth, train blocks dealt first, round-robin."""

import pytest

from pico_lightning.prep.shard_plan import DEFAULT_SHARDS, Block, cut_blocks, deal, default_shards, task_blocks


def test_blocks_keep_a_key_together_and_fold_an_odd_rest_in():
    assert cut_blocks(["a", "a", "a", "b", "b", "a"]) == [[0, 1], [2, 5], [3, 4]]
    assert cut_blocks(["a", "a", "a"]) == [[0, 1, 2]]
    assert cut_blocks(["a"]) == [[0]]  # a lone pair stays a block: the caller decides what it feeds


def test_train_blocks_come_first_taking_one_of_each_task_in_turn():
    blocks = task_blocks([["train"] * 4 + ["val"] * 2, ["train"] * 2, ["test"] * 2])
    assert [(b.task, b.split, b.positions) for b in blocks] == [
        (0, "train", (0, 1)),
        (1, "train", (0, 1)),
        (0, "train", (2, 3)),
        (0, "val", (4, 5)),
        (2, "test", (0, 1)),
    ]
    shards = deal(blocks, 2)
    assert [[(b.task, b.split) for b in shard] for shard in shards] == [
        [(0, "train"), (0, "train"), (2, "test")],
        [(1, "train"), (0, "val")],
    ]
    with pytest.raises(ValueError, match="every shard needs one"):
        deal(blocks, 6)


def test_the_default_count_serves_128_readers_bounded_by_train_blocks_and_shard_size():
    def blocks(train: int, other: int = 0) -> list[Block]:
        return [Block(0, "train", (0, 1))] * train + [Block(0, "val", (0, 1))] * other

    assert default_shards(blocks(60, 12)) == 60  # 144 pairs: one shard per train block
    assert default_shards(blocks(4000)) == DEFAULT_SHARDS  # 8,000 pairs: 63 a shard
    assert default_shards(blocks(150_000)) == 300  # 300,000 pairs: at most 1,000 a shard
    assert default_shards(blocks(0, 3)) == 3  # nothing to train on: still every block written
