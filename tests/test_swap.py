"""The exemplar swap: exemplar panels from another task, everything else kept, deterministic."""

import pytest
import torch

from pico_lightning.data.eval_items import EvalItem, swap_exemplars
from pico_lightning.panels import Layout, split_grid

LAYOUT = Layout(2, 2, 16)


def _item(task: str, value: float) -> EvalItem:
    """An item whose four panels are filled with value, value + 0.1, ... so every panel can be traced back."""
    grid = torch.zeros(3, LAYOUT.height, LAYOUT.width)
    for index in range(LAYOUT.num_panels):
        rows, cols = LAYOUT.cell(index)
        grid[:, rows, cols] = value + 0.1 * index
    mask = torch.zeros(1, LAYOUT.height, LAYOUT.width)
    return EvalItem("held_in", task, "image", f"prompt {task}", grid, mask, torch.full((3, 16, 16), value))


def test_exemplars_come_from_another_task_and_the_rest_is_kept():
    items = [_item("a", -0.9), _item("a", -0.5), _item("b", 0.0), _item("c", 0.4)]
    swapped = swap_exemplars(items, LAYOUT)
    donors = [2, 2, 3, 0]  # the first later item (cyclically) of a different task
    for item, out, donor in zip(items, swapped, donors, strict=True):
        panels, source = split_grid(out.grid, LAYOUT), split_grid(items[donor].grid, LAYOUT)
        assert torch.equal(panels[0], source[0]) and torch.equal(panels[1], source[1])
        assert torch.equal(panels[2], split_grid(item.grid, LAYOUT)[2])
        assert (out.task, out.prompt, out.suite) == (item.task, item.prompt, item.suite)
        assert out.target is item.target and out.mask is item.mask
    assert torch.equal(split_grid(items[0].grid, LAYOUT)[0], torch.full((3, 16, 16), -0.9))  # inputs untouched
    again = swap_exemplars(items, LAYOUT)
    assert all(torch.equal(x.grid, y.grid) for x, y in zip(swapped, again, strict=True))


def test_one_task_cannot_be_swapped():
    with pytest.raises(ValueError, match="two tasks"):
        swap_exemplars([_item("a", 0.0), _item("a", 0.5)], LAYOUT)
