"""Procedural scenes with exact ground truth: coloured shapes (masks, boxes, centres) and lit spheres on a
floor (depth, surface normals, shading, albedo from the same geometry, orthographic camera).
"""

from dataclasses import dataclass

import numpy as np
from skimage.draw import polygon2mask

from pico_lightning.prep import photos

PALETTE = {"red": (220, 50, 40), "green": (40, 170, 60), "blue": (40, 80, 220)}
KINDS = ("circle", "square", "triangle")
GRID = 3  # shapes sit in distinct cells of a GRID x GRID layout, so masks never overlap


@dataclass(frozen=True)
class Shape:
    """One drawn shape: kind, palette colour name and its exact (H, W) bool mask."""

    kind: str
    colour: str
    mask: np.ndarray

    def box(self) -> tuple[int, int, int, int]:
        """Tight box (top, left, bottom, right) in pixels, inclusive."""
        rows, cols = np.nonzero(self.mask)
        return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())

    def centre(self) -> tuple[float, float]:
        """Mask centroid (row, col) in pixels."""
        rows, cols = np.nonzero(self.mask)
        return float(rows.mean()), float(cols.mean())


@dataclass(frozen=True)
class ShapeScene:
    """Coloured shapes over a background; image and background are (H, W, 3) uint8."""

    image: np.ndarray
    background: np.ndarray
    shapes: tuple[Shape, ...]

    def mask(self, kind: str | None = None, colour: str | None = None) -> np.ndarray:
        """Union (H, W) bool mask of the shapes matching kind and colour (None matches any)."""
        out = np.zeros(self.image.shape[:2], bool)
        for shape in self.shapes:
            if kind in (None, shape.kind) and colour in (None, shape.colour):
                out |= shape.mask
        return out


@dataclass(frozen=True)
class GeometryScene:
    """Spheres on a tilted floor; depth (H, W) in [0, 1] (0 = near), normals (H, W, 3) unit vectors in camera
    axes (x right, y up, z towards the viewer), shading (H, W) in [0, 1], albedo and image (H, W, 3) uint8.
    """

    image: np.ndarray
    albedo: np.ndarray
    shading: np.ndarray
    depth: np.ndarray
    normals: np.ndarray


def shape_scene(rng: np.random.Generator, size: int) -> ShapeScene:
    """Draw 3-6 shapes in distinct grid cells; every palette colour and every kind appears at least once."""
    count = int(rng.integers(3, 7))
    cells = rng.permutation(GRID * GRID)[:count]
    colours, kinds = _covering(rng, tuple(PALETTE), count), _covering(rng, KINDS, count)
    background = _background(rng, size)
    image = background.copy()
    shapes = []
    for cell, kind, colour in zip(cells, kinds, colours, strict=True):
        mask = _shape_mask(rng, kind, int(cell), size)
        image[mask] = PALETTE[colour]
        shapes.append(Shape(kind, colour, mask))
    return ShapeScene(image, background, tuple(shapes))


def _covering(rng: np.random.Generator, options: tuple[str, ...], count: int) -> list[str]:
    """``count`` picks that include every option once (count >= len(options)), in random order."""
    picks = list(options) + [str(x) for x in rng.choice(options, count - len(options))]
    return [picks[i] for i in rng.permutation(count)]


def _shape_mask(rng: np.random.Generator, kind: str, cell: int, size: int) -> np.ndarray:
    """(size, size) bool mask of one shape inside grid cell ``cell``; radius 55-85% of half a cell."""
    half = size / GRID / 2
    radius = half * rng.uniform(0.55, 0.85)
    jitter = rng.uniform(-1, 1, 2) * (half - radius)
    cy, cx = (np.array(divmod(cell, GRID)) * 2 + 1) * half + jitter
    rows, cols = np.mgrid[:size, :size] + 0.5  # pixel centres
    if kind == "circle":
        return (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
    if kind == "square":
        side = radius * 0.8
        return (np.abs(rows - cy) <= side) & (np.abs(cols - cx) <= side)
    angles = np.pi / 2 + np.array([0, 2, 4]) * np.pi / 3  # upward equilateral triangle
    vertices = np.stack([cy - radius * np.sin(angles), cx + radius * np.cos(angles)], axis=1)
    return polygon2mask((size, size), vertices - 0.5)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Light plain, gradient or textured background that contrasts with the palette, (size, size, 3) uint8."""
    tint = rng.uniform(150, 235) + rng.uniform(-20, 20, 3)
    style = rng.integers(3)
    if style == 0:
        return np.broadcast_to(tint, (size, size, 3)).astype(np.uint8)
    if style == 1:
        ramp = np.linspace(0.8, 1.1, size)[:, None, None]
        return np.clip(np.broadcast_to(tint, (size, size, 3)) * ramp, 0, 255).astype(np.uint8)
    grain = photos.texture(rng, size).astype(float) / 255
    return np.clip(tint * (0.75 + 0.35 * grain), 0, 255).astype(np.uint8)


def geometry_scene(rng: np.random.Generator, size: int) -> GeometryScene:
    """Render 1-4 coloured Lambertian spheres on a textured tilted floor with a z-buffer."""
    rows, cols = (np.mgrid[:size, :size] + 0.5) / size  # normalised pixel centres, y down
    tilt = rng.uniform(0.4, 0.7)
    depth = 1 - tilt * rows  # the floor: far at the top, near at the bottom
    normals = np.broadcast_to(np.array([0, tilt, 1]) / np.hypot(tilt, 1), (size, size, 3)).copy()
    floor_tint = rng.uniform(120, 230, 3)
    albedo = floor_tint * (0.6 + 0.4 * photos.texture(rng, size).astype(float) / 255)
    for _ in range(int(rng.integers(1, 5))):
        radius = rng.uniform(0.08, 0.2)
        cy, cx = rng.uniform(radius, 1 - radius, 2)
        centre_z = max(radius, 1 - tilt * cy - 0.3 * radius)  # roughly resting on the floor
        dy, dx = rows - cy, cols - cx
        height = np.sqrt(np.clip(radius**2 - dx**2 - dy**2, 0, None))
        front = (height > 0) & (centre_z - height < depth)
        depth[front] = (centre_z - height)[front]
        normals[front] = np.stack([dx, -dy, height], axis=-1)[front] / radius
        albedo[front] = rng.uniform(30, 255, 3)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(0.3, 0.8), 1.0])
    shading = 0.25 + 0.75 * np.clip(normals @ (light / np.linalg.norm(light)), 0, 1)
    image = np.clip(albedo * shading[..., None], 0, 255).astype(np.uint8)
    return GeometryScene(image, albedo.astype(np.uint8), shading, np.clip(depth, 0, 1), normals)
