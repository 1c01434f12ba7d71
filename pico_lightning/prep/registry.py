"""The VisRel-lite task registry: 27 tasks in four families, three held out per family for unseen-task tests.

Held out (split "test" only), each with a related held-in task so "unseen" stays meaningful:
- restoration: low_light, jpeg_artifacts, super_resolution (held in: denoise, deblur, inpaint,
  contrast_equalise);
- estimation: normals, intrinsics, rotate (held in: depth, edges, flip);
- perception: shape_segmentation, instance_segmentation, keypoints (held in: colour_segmentation,
  foreground_segmentation, detection);
- manipulation: cartoon, sticker_insert, watermark_remove (held in: posterize, background_replace, colorize,
  sketch, sepia).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from pico_lightning.data.schema import CATEGORIES
from pico_lightning.prep import ops_generative as gen
from pico_lightning.prep import ops_geometry as geo
from pico_lightning.prep import ops_restoration as res
from pico_lightning.prep import ops_semantic as sem
from pico_lightning.prep.photos import colour_photo, photo
from pico_lightning.prep.scenes import geometry_scene, shape_scene

Operator = Callable[[np.random.Generator, str, Any], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TaskSpec:
    """One task: ``fn(rng, variant, source(rng, size))`` returns its (input, output) (H, W, 3) uint8 pair."""

    name: str
    category: str
    variants: tuple[str, ...]
    fn: Operator
    held_out: bool = False
    source: Callable[[np.random.Generator, int], Any] = photo
    """Draws what ``fn`` transforms: a photo crop (default), a colour photo, a shape or a geometry scene."""

    def __post_init__(self):
        if self.category not in CATEGORIES:
            raise ValueError(f"TaskSpec {self.name!r}: category {self.category!r} is not one of {CATEGORIES}")
        if not self.variants:
            raise ValueError(f"TaskSpec {self.name!r}: needs at least one variant")


TASKS = (
    TaskSpec("denoise", "restoration", ("gaussian_low", "gaussian_high", "salt_pepper"), res.denoise),
    TaskSpec("deblur", "restoration", ("gaussian", "motion"), res.deblur),
    TaskSpec("inpaint", "restoration", ("black_square", "white_stripes", "red_blobs"), res.inpaint),
    TaskSpec("contrast_equalise", "restoration", ("global", "adaptive"), res.contrast_equalise),
    TaskSpec("low_light", "restoration", ("dim", "dim_noisy"), res.low_light, held_out=True),
    TaskSpec("jpeg_artifacts", "restoration", ("q10", "q25"), res.jpeg_artifacts, held_out=True),
    TaskSpec("super_resolution", "restoration", ("x2", "x4"), res.super_resolution, held_out=True),
    TaskSpec("edges", "estimation", ("sobel", "canny"), geo.edges),
    TaskSpec("depth", "estimation", ("grey", "jet"), geo.depth, source=geometry_scene),
    TaskSpec("flip", "estimation", ("horizontal", "vertical"), geo.flip),
    TaskSpec("normals", "estimation", ("rgb",), geo.normals, held_out=True, source=geometry_scene),
    TaskSpec(
        "intrinsics",
        "estimation",
        ("shading", "albedo"),
        geo.intrinsics,
        held_out=True,
        source=geometry_scene,
    ),
    TaskSpec("rotate", "estimation", ("90", "180", "270"), geo.rotate, held_out=True),
    TaskSpec(
        "foreground_segmentation",
        "perception",
        ("mask", "cutout"),
        sem.foreground_segmentation,
        source=shape_scene,
    ),
    TaskSpec(
        "colour_segmentation",
        "perception",
        ("red", "green", "blue"),
        sem.colour_segmentation,
        source=shape_scene,
    ),
    TaskSpec("detection", "perception", ("outline", "filled"), sem.detection, source=shape_scene),
    TaskSpec(
        "shape_segmentation",
        "perception",
        ("circle", "square", "triangle"),
        sem.shape_segmentation,
        held_out=True,
        source=shape_scene,
    ),
    TaskSpec(
        "instance_segmentation",
        "perception",
        ("reading_order",),
        sem.instance_segmentation,
        held_out=True,
        source=shape_scene,
    ),
    TaskSpec("keypoints", "perception", ("on_image", "on_black"), sem.keypoints, held_out=True, source=shape_scene),
    TaskSpec("colorize", "manipulation", ("grey", "faded"), gen.colorize, source=colour_photo),
    TaskSpec("posterize", "manipulation", ("levels_2", "levels_4"), gen.posterize),
    TaskSpec("sketch", "manipulation", ("pencil", "ink"), gen.sketch),
    TaskSpec("sepia", "manipulation", ("classic", "vintage"), gen.sepia),
    TaskSpec("background_replace", "manipulation", ("white", "checker"), gen.background_replace, source=shape_scene),
    TaskSpec("cartoon", "manipulation", ("flat", "flat_edges"), gen.cartoon, held_out=True),
    TaskSpec("sticker_insert", "manipulation", ("star_corner", "disc_centre"), gen.sticker_insert, held_out=True),
    TaskSpec("watermark_remove", "manipulation", ("text", "logo"), gen.watermark_remove, held_out=True),
)
