"""Semantic perception operators over a ``ShapeScene``: (rng, variant, scene) -> (scene image, annotation),
both (H, W, 3) uint8. Masks are white on black; markers are yellow, a colour no shape uses.
"""

import numpy as np
from skimage import draw

from pico_lightning.prep.pixels import grey_rgb
from pico_lightning.prep.scenes import GRID, ShapeScene

MARKER = (255, 230, 0)
# Instance colours in reading order of the shapes' grid cells (top-left first).
INSTANCE_COLOURS = (
    (255, 255, 255),
    (255, 230, 0),
    (0, 230, 230),
    (230, 0, 230),
    (255, 140, 0),
    (140, 90, 255),
)


def foreground_segmentation(rng: np.random.Generator, variant: str, scene: ShapeScene):
    """All shapes as a white-on-black ``mask``, or as a ``cutout`` (shape pixels kept, background black)."""
    mask = scene.mask()
    if variant == "mask":
        return scene.image, grey_rgb(mask)
    return scene.image, np.where(mask[..., None], scene.image, 0).astype(np.uint8)


def colour_segmentation(rng: np.random.Generator, variant: str, scene: ShapeScene):
    """Mask of the shapes of one palette colour (the variant: red, green, blue)."""
    return scene.image, grey_rgb(scene.mask(colour=variant))


def shape_segmentation(rng: np.random.Generator, variant: str, scene: ShapeScene):
    """Mask of the shapes of one kind (the variant: circle, square, triangle)."""
    return scene.image, grey_rgb(scene.mask(kind=variant))


def instance_segmentation(rng: np.random.Generator, variant: str, scene: ShapeScene):
    """Each shape filled with its own colour, assigned in reading order (row of grid cells, then column)."""
    size = scene.image.shape[0]
    cell = size / GRID

    def reading_order(shape):
        row, col = shape.centre()
        return int(row // cell), col

    out = np.zeros_like(scene.image)
    for shape, colour in zip(sorted(scene.shapes, key=reading_order), INSTANCE_COLOURS, strict=False):
        out[shape.mask] = colour
    return scene.image, out


def detection(rng: np.random.Generator, variant: str, scene: ShapeScene):
    """Tight boxes around every shape: yellow ``outline`` on the image, or ``filled`` white on black."""
    size = scene.image.shape[0]
    out = scene.image.copy() if variant == "outline" else np.zeros_like(scene.image)
    for shape in scene.shapes:
        top, left, bottom, right = shape.box()
        if variant == "filled":
            out[top : bottom + 1, left : right + 1] = 255
            continue
        for inset in range(max(1, size // 64)):  # 1 px line at 64 px, 2 px at 128 px
            rr, cc = draw.rectangle_perimeter(
                (top - inset, left - inset), (bottom + inset, right + inset), shape=(size, size), clip=True
            )
            out[rr, cc] = MARKER
    return scene.image, out


def keypoints(rng: np.random.Generator, variant: str, scene: ShapeScene):
    """A dot at each shape's centroid: yellow ``on_image`` or white ``on_black``."""
    size = scene.image.shape[0]
    out = scene.image.copy() if variant == "on_image" else np.zeros_like(scene.image)
    colour = MARKER if variant == "on_image" else (255, 255, 255)
    for shape in scene.shapes:
        rr, cc = draw.disk(shape.centre(), max(1.0, size / 40), shape=(size, size))
        out[rr, cc] = colour
    return scene.image, out
