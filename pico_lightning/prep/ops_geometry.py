"""Physical / geometric estimation operators: (rng, variant, photo or ``GeometryScene``) -> (input, output),
both (H, W, 3) uint8. Depth is drawn near = bright over the scene's fixed [0, 1] depth range.
"""

import numpy as np
from skimage import feature, filters

from pico_lightning.prep.pixels import grey, grey_rgb, to_uint8
from pico_lightning.prep.scenes import GeometryScene


def edges(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Sobel gradient magnitude (grey, scaled to its 99th percentile) or Canny edges (white on black)."""
    luminance = grey(image)
    if variant == "sobel":
        magnitude = filters.sobel(luminance)
        return image, grey_rgb(magnitude / max(np.percentile(magnitude, 99), 1e-6))
    return image, grey_rgb(feature.canny(luminance, sigma=1.5 * image.shape[0] / 128))


def depth(rng: np.random.Generator, variant: str, scene: GeometryScene):
    """Depth map: grey (near = white) or a jet colour map (near = red, far = blue)."""
    nearness = 1 - scene.depth
    if variant == "grey":
        return scene.image, grey_rgb(nearness)
    jet = [1.5 - np.abs(4 * nearness - offset) for offset in (3, 2, 1)]  # red, green, blue ramps
    return scene.image, to_uint8(np.stack(jet, axis=-1))


def normals(rng: np.random.Generator, variant: str, scene: GeometryScene):
    """Surface normals in camera axes (x right, y up, z to the viewer) encoded as RGB = (n + 1) / 2."""
    return scene.image, to_uint8((scene.normals + 1) / 2)


def intrinsics(rng: np.random.Generator, variant: str, scene: GeometryScene):
    """Intrinsic decomposition: the Lambertian shading (grey) or the albedo (colour) of the rendered image."""
    if variant == "shading":
        return scene.image, grey_rgb(scene.shading)
    return scene.image, scene.albedo


def flip(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Mirror the photo left-right (``horizontal``) or top-bottom (``vertical``)."""
    axis = 1 if variant == "horizontal" else 0
    return image, np.ascontiguousarray(np.flip(image, axis))


def rotate(rng: np.random.Generator, variant: str, image: np.ndarray):
    """Rotate the photo counter-clockwise by 90, 180 or 270 degrees (the variant name)."""
    return image, np.ascontiguousarray(np.rot90(image, int(variant) // 90))
