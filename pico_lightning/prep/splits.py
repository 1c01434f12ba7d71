"""Deterministic per-task split and variant assignment shared by the VisRel builders."""

VAL_FRACTION = 6  # about 1/VAL_FRACTION of a held-in task's pairs go to "val"


def num_val(count: int) -> int:
    """Val pairs of a held-in task with ``count`` pairs: ~1/6, >= 2 (one episode); 0 if < 2 train remain."""
    wanted = max(2, round(count / VAL_FRACTION))
    return wanted if count - wanted >= 2 else 0


def split_for(position: int, count: int, held_out: bool) -> str:
    """Split of a task's ``position``-th of ``count`` pairs: held out -> test, the last ones -> val."""
    if held_out:
        return "test"
    return "val" if position >= count - num_val(count) else "train"


def variant_for(position: int, count: int, variants: tuple[str, ...], held_out: bool) -> str:
    """Variant of the ``position``-th of ``count`` pairs: equal blocks over the train (or test) pairs.

    Every block holds at least two pairs (an episode): with few pairs only the first ``train // 2`` variants
    are used. Every val pair gets the last variant, so val pairs form an episode too.
    """
    train = count - (0 if held_out else num_val(count))
    used = max(1, min(len(variants), train // 2))
    return variants[-1] if position >= train else variants[position * used // train]
