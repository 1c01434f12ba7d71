"""Gallery rows: the five panels in order, small panels enlarged by a whole factor with every pixel kept."""

import torch

from pico_lightning.evaluation.gallery import GAP, episode_row, gallery_image
from pico_lightning.panels import Layout, split_grid, to_uint8


def test_a_small_panel_row_is_enlarged_pixel_for_pixel():
    layout = Layout(2, 2, 32)
    grid = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    prediction, target = -split_grid(grid, layout)[-1], split_grid(grid, layout)[-1]
    row = episode_row(grid, prediction, target, layout)
    assert row.shape == (96, 5 * 96 + 4 * GAP, 3)  # 32 px panels shown 3x
    panels = [row[:, i * (96 + GAP) : i * (96 + GAP) + 96] for i in range(5)]
    expected = [*split_grid(grid, layout)[:-1], prediction, target]
    for shown, panel in zip(panels, expected, strict=True):
        assert (shown[::3, ::3] == to_uint8(panel)).all() and (shown[2::3, 1::3] == to_uint8(panel)).all()
    assert (row[:, 96 : 96 + GAP] == 255).all()  # white gaps between panels
    assert gallery_image([row, row]).shape == (2 * 96 + GAP, row.shape[1], 3)


def test_a_large_panel_row_keeps_its_size():
    layout = Layout(2, 2, 128)
    grid = torch.zeros(3, 256, 256)
    row = episode_row(grid, grid[:, 128:, 128:], grid[:, 128:, 128:], layout)
    assert row.shape == (128, 5 * 128 + 4 * GAP, 3)
