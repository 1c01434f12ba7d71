import numpy as np
import pytest
import torch
from PIL import Image

from pico_lightning import panels
from pico_lightning.errors import UserError


def _rgb(value, size=8):
    return np.full((size, size, 3), value, dtype=np.uint8)


def test_compose_split_round_trip():
    layout = panels.Layout(2, 2, 8)
    pictures = [_rgb(v) for v in (0, 64, 128, 255)]
    grid = panels.compose_grid(pictures, layout)
    assert grid.shape == (3, 16, 16) and grid.dtype == torch.float32
    assert grid.min() >= -1 and grid.max() <= 1
    for picture, panel in zip(pictures, panels.split_grid(grid, layout)):
        assert np.array_equal(panels.to_uint8(panel), picture)


def test_target_mask_marks_last_cell_only():
    layout = panels.Layout(2, 3, 16)
    mask = panels.target_mask(layout)
    assert mask.shape == (1, 32, 48) and mask.sum() == 16 * 16
    assert mask[0, 16:, 32:].all() and not mask[0, :16].any()


def test_k_shot_layout_target_last():
    layout = panels.Layout(3, 2, 16)
    grid = panels.compose_grid([_rgb(10 * i, 16) for i in range(5)] + [None], layout)
    assert grid.shape == (3, 48, 32)
    assert (panels.split_grid(grid, layout)[-1] == -1).all()  # the target is left black


@pytest.mark.parametrize(
    "picture",
    [
        Image.new("RGB", (10, 6), (255, 0, 0)),
        Image.new("L", (10, 6), 128),
        Image.new("RGBA", (10, 6), (255, 255, 255, 0)),
        Image.new("P", (10, 6)),
        Image.fromarray(np.full((6, 10), 65535, dtype=np.uint16)),
        np.zeros((6, 10), dtype=bool),
        np.ones((6, 10, 4), dtype=np.float32),
        torch.zeros(3, 6, 10),
        torch.zeros(6, 10, dtype=torch.uint8),
    ],
    ids=["rgb", "grey", "rgba", "palette", "16bit", "bool", "float_rgba", "tensor", "tensor_u8"],
)
def test_every_input_kind(picture):
    tensor = panels.to_tensor(picture)
    assert tensor.shape == (3, 6, 10) and tensor.dtype == torch.float32
    assert tensor.min() >= -1 and tensor.max() <= 1


def test_sixteen_bit_white_is_white_and_alpha_composites_black():
    assert panels.to_tensor(Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))).min() == 1
    assert panels.to_tensor(Image.new("RGBA", (2, 2), (255, 255, 255, 0))).max() == -1


def test_letterbox_keeps_aspect():
    wide = np.full((8, 16, 3), 255, dtype=np.uint8)
    panel = panels.fit_panel(panels.to_tensor(wide), 16, "letterbox")
    assert panel.shape == (3, 16, 16)
    assert (panel[:, :4] == -1).all() and (panel[:, 6:10] > 0.9).all()


def test_size_that_does_not_pack_names_valid_sizes():
    with pytest.raises(UserError, match=r"nearest valid panel sizes: \[16, 24\]"):
        panels.Layout(2, 2, 20)


def test_uint8_mapping_matches_diffusers_processor():
    from diffusers.image_processor import VaeImageProcessor

    array = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    ours = panels.to_tensor(array)
    theirs = VaeImageProcessor().preprocess(Image.fromarray(array))[0]
    assert torch.equal(ours, theirs)
