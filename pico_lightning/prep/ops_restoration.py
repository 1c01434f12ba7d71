"""Restoration / enhancement operators: each takes (rng, variant, photo (H, W, 3) uint8) and returns the
degraded input and the clean (or enhanced) output, both (H, W, 3) uint8.
"""

import io

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import draw, exposure

from pico_lightning.prep.photos import resize
from pico_lightning.prep.pixels import to_float, to_uint8

NOISE_SIGMA = {"gaussian_low": 0.05, "gaussian_high": 0.15}  # std in [0, 1] intensity units
JPEG_QUALITY = {"q10": 10, "q25": 25}
SR_FACTOR = {"x2": 2, "x4": 4}


def denoise(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Additive Gaussian noise (low / high sigma) or 3% salt and 3% pepper; output the clean photo."""
    x = to_float(image)
    if variant == "salt_pepper":
        u = rng.random(x.shape[:2])
        noisy = np.where((u < 0.03)[..., None], 0.0, np.where((u > 0.97)[..., None], 1.0, x))
    else:
        noisy = x + rng.normal(0, NOISE_SIGMA[variant], x.shape)
    return to_uint8(noisy), image


def deblur(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Gaussian blur (sigma 1.2-2.5 px at 128 px) or linear motion blur (7-13 px, any angle); output the sharp
    photo."""
    scale = image.shape[0] / 128
    x = to_float(image)
    if variant == "gaussian":
        sigma = rng.uniform(1.2, 2.5) * scale
        return to_uint8(ndimage.gaussian_filter(x, (sigma, sigma, 0))), image
    length = max(3, int(rng.uniform(7, 13) * scale)) | 1  # odd, so the kernel has a centre
    angle = rng.uniform(0, np.pi)
    end = (length // 2) * np.array([np.sin(angle), np.cos(angle)])
    kernel = np.zeros((length, length))
    rr, cc = draw.line(*np.round(length // 2 - end).astype(int), *np.round(length // 2 + end).astype(int))
    kernel[rr, cc] = 1
    blurred = ndimage.convolve(x, kernel[..., None] / kernel.sum(), mode="reflect")
    return to_uint8(blurred), image


def inpaint(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Cover parts with a black square, white stripes or red blobs; output the uncovered photo."""
    size = image.shape[0]
    holed = image.copy()
    if variant == "black_square":
        side = int(size * rng.uniform(0.2, 0.4))
        top, left = rng.integers(0, size - side, 2)
        holed[top : top + side, left : left + side] = 0
    elif variant == "white_stripes":
        for _ in range(int(rng.integers(2, 5))):
            height = max(1, int(size * rng.uniform(0.03, 0.07)))
            top = rng.integers(0, size - height)
            holed[top : top + height] = 255
    else:  # red_blobs
        for _ in range(int(rng.integers(3, 7))):
            rr, cc = draw.disk(rng.uniform(0, size, 2), size * rng.uniform(0.04, 0.1), shape=(size, size))
            holed[rr, cc] = (255, 0, 0)
    return holed, image


def low_light(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Darken (gamma 1.5-2.5, gain 0.25-0.5), with sensor noise for ``dim_noisy``; output the normal photo."""
    dark = to_float(image) ** rng.uniform(1.5, 2.5) * rng.uniform(0.25, 0.5)
    if variant == "dim_noisy":
        dark = dark + rng.normal(0, 0.02, dark.shape)
    return to_uint8(dark), image


def contrast_equalise(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Squash contrast (to 30-60%, random mid-level); output its global or adaptive (CLAHE) equalisation."""
    x = to_float(image)
    flat = to_uint8(rng.uniform(0.3, 0.7) + (x - x.mean()) * rng.uniform(0.3, 0.6))
    if variant == "global":  # one histogram over all channels keeps the colour balance
        cdf = np.cumsum(np.bincount(flat.ravel(), minlength=256))
        return flat, to_uint8(((cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1))[flat])
    return flat, to_uint8(exposure.equalize_adapthist(flat, clip_limit=0.02))


def jpeg_artifacts(rng: np.random.Generator, variant: str, image: np.ndarray):
    """JPEG-compress at quality 10 or 25; output the uncompressed photo."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY[variant])
    return np.asarray(Image.open(buffer).convert("RGB")), image


def super_resolution(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Box-downsample by 2 or 4, bicubic-upsample back; output the full-resolution photo."""
    size = image.shape[0]
    small = resize(image, max(1, size // SR_FACTOR[variant]), Image.Resampling.BOX)
    return resize(small, size), image
