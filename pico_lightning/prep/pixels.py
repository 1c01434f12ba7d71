"""Small pixel conversions shared by the operators: uint8 RGB <-> float [0, 1], grey, masks (and telling one)."""

import numpy as np


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 image -> float64 in [0, 1], same shape."""
    return image.astype(np.float64) / 255


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (clipped) -> uint8 in [0, 255], same shape."""
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def grey(image: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> luminance (H, W) float in [0, 1] (Rec. 601 weights)."""
    return to_float(image) @ np.array([0.299, 0.587, 0.114])


def grey_rgb(values: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] or bool mask -> (H, W, 3) uint8 grey (a mask becomes white on black)."""
    return np.repeat(to_uint8(np.asarray(values, np.float64))[..., None], 3, axis=2)


def is_mask(image: np.ndarray) -> bool:
    """Whether an RGB uint8 (H, W, 3) picture is a mask as the mask metrics read one: at most two colours, one
    darker and one brighter than mid-grey (RGB mean, their threshold), e.g. white on black; one colour counts."""
    codes = image[..., 0].astype(np.uint32) << 16 | image[..., 1].astype(np.uint32) << 8 | image[..., 2]
    first = codes.flat[0]
    rest = codes[codes != first]
    if rest.size and (rest != rest[0]).any():
        return False
    colours = [first] + ([rest[0]] if rest.size else [])
    bright = [int(c >> 16) + int(c >> 8 & 255) + int(c & 255) > 3 * 127.5 for c in colours]
    return len(set(bright)) == len(bright)
