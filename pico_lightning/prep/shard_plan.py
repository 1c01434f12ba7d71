"""Which shard each pair of a converted dataset goes to: blocks of an episode's worth, dealt over the shards.

A task's pairs are grouped by (variant, split) and cut into blocks of 2 (3 for an odd rest): two pairs of one
task, variant and split are one episode's worth. The blocks are dealt round-robin, train blocks first, taking
one block of each task in turn, so every shard holds at least one train block and the shards mix the tasks:
any reader given a single shard can form training episodes.

Default shard count: one per reader of the largest job the README plans for (``DEFAULT_SHARDS`` = 4 nodes x 8
GPUs x 4 loader workers), more when shards would exceed ``MAX_SHARD_SAMPLES``, and never more than the train
blocks (a shard without one could feed no reader alone). When there are fewer shards than readers, the readers
share them (``data/datamodule.py``).
"""

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

DEFAULT_SHARDS = 128  # 4 nodes x 8 GPUs x 4 workers
MAX_SHARD_SAMPLES = 1000  # pairs per shard beyond which the default writes more shards
EPISODE_PAIRS = 2  # pairs of one task, variant and split in a block (a 2x2 episode: A, A' and B, B')


@dataclass(frozen=True)
class Block:
    """Positions (in the task's sorted pair order) of one task's pairs that share a variant and split."""

    task: int  # index of the task in the caller's list
    split: str
    positions: tuple[int, ...]


def cut_blocks(keys: Sequence[Hashable]) -> list[list[int]]:
    """Positions grouped by their key (e.g. (variant, split)), in blocks of 2 (3 for an odd rest)."""
    groups: dict[Hashable, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    blocks = []
    for positions in groups.values():
        cuts = [positions[i : i + EPISODE_PAIRS] for i in range(0, len(positions), EPISODE_PAIRS)]
        if len(cuts) > 1 and len(cuts[-1]) < EPISODE_PAIRS:
            rest = cuts.pop()
            cuts[-1] += rest
        blocks.extend(cuts)
    return blocks


def task_blocks(splits: Sequence[Sequence[str]]) -> list[Block]:
    """Every task's blocks (``splits[t]``: the split of task t's pairs, by position), in dealing order: train
    blocks before the others, and within each, round-robin over tasks (block 0 of every task, then block 1...)."""
    per_task = [
        [Block(task, task_splits[cut[0]], tuple(cut)) for cut in cut_blocks(task_splits)]
        for task, task_splits in enumerate(splits)
    ]
    ordered = []
    for train in (True, False):
        chosen = [[block for block in blocks if (block.split == "train") == train] for blocks in per_task]
        depth = max((len(blocks) for blocks in chosen), default=0)
        ordered += [blocks[i] for i in range(depth) for blocks in chosen if i < len(blocks)]
    return ordered


def default_shards(blocks: Sequence[Block]) -> int:
    """The default shard count for ``blocks`` (see the module docstring)."""
    total = sum(len(block.positions) for block in blocks)
    train = sum(block.split == "train" for block in blocks)
    wanted = max(DEFAULT_SHARDS, -(-total // MAX_SHARD_SAMPLES))
    return max(1, min(wanted, train or len(blocks)))


def deal(blocks: Sequence[Block], num_shards: int) -> list[list[Block]]:
    """The blocks of each of ``num_shards`` shards: block k goes to shard k mod ``num_shards``."""
    if not 1 <= num_shards <= len(blocks):
        raise ValueError(f"deal: {num_shards} shards for {len(blocks)} blocks; every shard needs one")
    return [list(blocks[shard::num_shards]) for shard in range(num_shards)]
