"""Random square crops of the pictures scikit-image ships (all bundled: no download, no pooch)."""

from functools import cache

import numpy as np
import skimage.data
from PIL import Image

# Bundled with scikit-image (checked on 0.26: these load offline; eagle, kidney, lily, ... need pooch).
COLOUR_PHOTOS = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
    "colorwheel",
    "stereo_motorcycle",
)
GREY_PHOTOS = ("camera", "coins", "moon", "page", "text", "clock", "cell")
TEXTURES = ("brick", "grass", "gravel")


@cache
def load_picture(name: str) -> np.ndarray:
    """Return a bundled scikit-image picture as RGB (H, W, 3) uint8."""
    image = getattr(skimage.data, name)()
    image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle -> (left, right, disparity)
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def random_crop(rng: np.random.Generator, image: np.ndarray, size: int, min_frac: float = 0.3) -> np.ndarray:
    """Cut a random square (``min_frac``..1 of the short side), mirrored half the time; (size, size, 3)."""
    height, width = image.shape[:2]
    side = int(min(height, width) * rng.uniform(min_frac, 1.0))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    crop = image[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return resize(crop, size)


def resize(image: np.ndarray, size: int, resample: int = Image.Resampling.BICUBIC) -> np.ndarray:
    """Resize an RGB uint8 image to (size, size, 3)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size, size), resample))


def photo(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop of any bundled photo (colour or grey), (size, size, 3) uint8."""
    return random_crop(rng, load_picture(str(rng.choice(COLOUR_PHOTOS + GREY_PHOTOS))), size)


def colour_photo(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop of a bundled colour photo, (size, size, 3) uint8."""
    return random_crop(rng, load_picture(str(rng.choice(COLOUR_PHOTOS))), size)


def texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random crop of a bundled grey texture (brick, grass, gravel), (size, size, 3) uint8."""
    return random_crop(rng, load_picture(str(rng.choice(TEXTURES))), size, min_frac=0.2)
