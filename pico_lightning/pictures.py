"""The one picture reader: a file or encoded bytes -> RGB (H, W, 3) uint8, the same way at every entrance.

``pico prep folders``, the training stream's shard decoder, the evaluation suites (suite tars and PerSeg
folders) and ``pico infer`` all read pictures here, so one file gives the same pixels wherever it comes in:

    orientation   the EXIF Orientation tag is applied (the picture as a viewer shows it)
    16-bit        modes I;16*, I and F: value / 257, rounded and clipped (the full 16-bit range onto 8 bits)
    transparency  RGBA, LA, PA, palette or grey with a transparent colour: composited over opaque black
    the rest      RGB, grey, bilevel, palette, CMYK, YCbCr, ...: Pillow's conversion to RGB

A stored 8-bit RGB PNG (what the shard writers store) decodes exactly as Pillow decodes it. A file that is
missing, not a picture or truncated is an :class:`ImageInputError` naming it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pico_lightning.errors import UserError

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # lower case, with the dot
WIDE_MODES = ("I", "F")  # plus every "I;16..." mode
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageInputError(UserError):
    """A picture that cannot be read or used; the message names the file and the expectation."""


def read_picture(source: str | Path | bytes, name: str = "picture bytes") -> np.ndarray:
    """A picture file (path) or its encoded bytes -> (H, W, 3) uint8, decoded fully so truncation fails here.

    ``name`` names encoded bytes in the error message; a path names itself.
    """
    return to_rgb(open_picture(source, name))


def read_mask(source: str | Path | bytes, name: str = "mask bytes") -> np.ndarray:
    """A mask picture -> (H, W) bool, True where any RGB channel is > 0 (white, a palette colour or label 1).

    16-bit label maps count their raw values (label 1 is kept, not scaled to 0); alpha is ignored.
    """
    return np.asarray(open_picture(source, name).convert("RGB")).max(axis=2) > 0


def open_picture(source: str | Path | bytes, name: str = "picture bytes") -> Image.Image:
    """Decode a picture fully and apply its EXIF orientation; ImageInputError naming the file on failure."""
    label = name if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
        return image
    except FileNotFoundError:
        raise ImageInputError(f"{label}: file not found") from None
    except Exception as err:  # a decoder fails on corrupt data in many types: OSError, SyntaxError, ValueError, ...
        raise ImageInputError(f"{label}: not a readable image ({err})") from None


def check_picture(data: bytes, name: str = "picture bytes") -> None:
    """The cheap check of encoded bytes (headers, PNG chunk CRCs, truncation) without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except Exception as err:  # as in open_picture
        raise ImageInputError(f"{name}: not a readable image ({err})") from None


def to_rgb(image: Image.Image) -> np.ndarray:
    """A decoded picture in any Pillow mode -> (H, W, 3) uint8 (the rules in the module docstring)."""
    if image.mode in WIDE_MODES or image.mode.startswith("I;16"):
        wide = np.asarray(image, dtype=np.float64)
        grey = np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
