"""Generative manipulation operators: (rng, variant, photo or ``ShapeScene``) -> (input, edited output),
both (H, W, 3) uint8.
"""

from functools import lru_cache

import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage
from skimage import draw, segmentation

from pico_lightning.prep.pixels import grey, grey_rgb, to_float, to_uint8
from pico_lightning.prep.scenes import ShapeScene

SEPIA = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])  # rows: out R, G, B
POSTER_LEVELS = {"levels_2": 2, "levels_4": 4}


def colorize(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Colour photo from its ``grey`` version or a ``faded`` one (25% saturation)."""
    luminance = grey(image)[..., None]
    keep = 0.0 if variant == "grey" else 0.25
    return to_uint8(luminance + keep * (to_float(image) - luminance)), image


def posterize(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Quantise each channel to 2 or 4 evenly spaced levels."""
    levels = POSTER_LEVELS[variant]
    steps = np.minimum(image.astype(np.int32) * levels // 256, levels - 1)
    return image, (steps * 255 // (levels - 1)).astype(np.uint8)


def sketch(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Grey ``pencil`` drawing (colour dodge of the blurred negative) or black ``ink`` lines on white, where a
    difference of Gaussians (sigma 1 and 1.6 px at 128 px) falls below -0.02."""
    luminance = grey(image)
    scale = image.shape[0] / 128
    if variant == "pencil":
        blurred = ndimage.gaussian_filter(1 - luminance, 2.0 * scale)
        return image, grey_rgb(luminance / np.maximum(1 - blurred, 1e-3))
    dog = ndimage.gaussian_filter(luminance, scale) - ndimage.gaussian_filter(luminance, 1.6 * scale)
    return image, grey_rgb(dog > -0.02)


def sepia(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Classic sepia tone matrix; ``vintage`` adds a radial vignette (edges 35% darker)."""
    toned = to_float(image) @ SEPIA.T
    if variant == "vintage":
        size = image.shape[0]
        rows, cols = (np.mgrid[:size, :size] + 0.5) / size - 0.5
        toned = toned * (1 - 0.7 * (rows**2 + cols**2))[..., None]
    return image, to_uint8(toned)


def cartoon(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Flat colours from SLIC superpixels (~1 per 12 x 12 px); ``flat_edges`` adds black borders."""
    size = image.shape[0]
    labels = segmentation.slic(image, n_segments=max(4, size * size // 144), compactness=10, start_label=0)
    counts = np.bincount(labels.ravel())[:, None]
    means = np.stack([np.bincount(labels.ravel(), image[..., c].ravel()) for c in range(3)], axis=1) / counts
    flat = means[labels].round().astype(np.uint8)
    if variant == "flat_edges":
        flat[segmentation.find_boundaries(labels, mode="inner")] = 0
    return image, flat


def background_replace(rng: np.random.Generator, variant: str, scene: ShapeScene):
    """Keep the shapes, replace the background with plain ``white`` or a grey ``checker`` (8 x 8 squares)."""
    size = scene.image.shape[0]
    if variant == "white":
        backdrop = np.full_like(scene.image, 255)
    else:
        index = np.arange(size) * 8 // size
        squares = np.add.outer(index, index) % 2
        backdrop = grey_rgb(0.55 + 0.3 * squares)
    return scene.image, np.where(scene.mask()[..., None], scene.image, backdrop).astype(np.uint8)


def sticker_insert(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Paste a fixed sticker: a yellow star at the top-left or an orange black-ringed disc at the centre."""
    size = image.shape[0]
    out = image.copy()
    if variant == "star_corner":
        angles = np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, size / 8, size / 20)
        rows, cols = size / 6 - radii * np.sin(angles), size / 6 + radii * np.cos(angles)
        rr, cc = draw.polygon(rows, cols, (size, size))
        out[rr, cc] = (255, 220, 0)
        return image, out
    rr, cc = draw.disk((size / 2, size / 2), size / 6, shape=(size, size))
    out[rr, cc] = 0
    rr, cc = draw.disk((size / 2, size / 2), size / 6 - max(1, size / 64), shape=(size, size))
    out[rr, cc] = (255, 140, 0)
    return image, out


def watermark_remove(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Blend a translucent white ``text`` stamp or the scikit-image ``logo`` at a random place; output the
    clean photo."""
    size = image.shape[0]
    overlay = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    if variant == "text":
        font = ImageFont.load_default(size=max(6, size // 5))
        position = tuple(int(v) for v in rng.integers(0, size // 2, 2))
        ImageDraw.Draw(overlay).text(position, "PICO", font=font, fill=(255, 255, 255, 150))
    else:
        side = int(size * rng.uniform(0.35, 0.6))
        logo = Image.fromarray(_translucent_logo()).resize((side, side), Image.Resampling.BICUBIC)
        overlay.paste(logo, tuple(int(v) for v in rng.integers(0, size - side + 1, 2)))
    marked = Image.alpha_composite(Image.fromarray(image).convert("RGBA"), overlay).convert("RGB")
    return np.asarray(marked), image


@lru_cache(maxsize=1)
def _translucent_logo() -> np.ndarray:
    """The scikit-image logo (500, 500, 4) uint8 RGBA with its alpha scaled to 60%."""
    logo = skimage.data.logo().copy()
    logo[..., 3] = (logo[..., 3].astype(np.uint16) * 6 // 10).astype(np.uint8)
    return logo
