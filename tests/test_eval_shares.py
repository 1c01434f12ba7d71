"""Every rank evaluates as many episodes as the others (under FSDP each forward is a collective); the repeats that
even the shares out are uncounted, so the metrics see each episode once."""

import torch

from pico_lightning.data.eval_items import EvalItem, eval_loader


def item(suite: str, episode: int) -> EvalItem:
    return EvalItem(
        suite, "task", "image", "", torch.zeros(3, 4, 4), torch.zeros(1, 4, 4), torch.zeros(3, 2, 2), episode
    )


def test_shares_are_even_and_count_each_episode_once():
    items = {
        "held_in": [item("held_in", k) for k in range(5)],
        "segmentation": [item("segmentation", k) for k in range(2)],
    }
    shares = [list(eval_loader(items, rank, 3)) for rank in range(3)]
    assert [len(share) for share in shares] == [3, 3, 3]  # rank 0: 2 + 1 items; rank 2: 1 item and 2 repeats
    counted = sorted((i.suite, i.episode) for share in shares for i in share if i.counted)
    assert counted == sorted((suite, i.episode) for suite, group in items.items() for i in group)
    assert all(i.counted for i in shares[0]) and [i.counted for i in shares[2]] == [True, False, False]


def test_a_rank_without_items_repeats_rank_zeros_first():
    items = {"held_in": [item("held_in", 0)]}
    share = list(eval_loader(items, 1, 2))
    assert len(share) == 1 and not share[0].counted and share[0].episode == 0
    assert list(eval_loader({"held_in": []}, 1, 2)) == []
