"""Procedural evaluation suites with exact ground truth, written as ``OUT/suites/<suite>.tar``.

- ``segmentation`` (kind "mask"): shape scenes; the exemplar mask A' picks a concept (a ``colour``, a
  ``shape`` kind, or one ``instance`` = the only object of its colour and kind, with look-alike distractors in
  the query). Episodes come in pairs ``q<n>-0`` / ``q<n>-1`` sharing A and B but selecting different concepts,
  so only the visual prompt tells the two ground-truth masks apart.
- ``user_tasks`` (kind "image"): the paper's composite / spatially constrained tasks — ``watermark_style``,
  ``background_stylise``, ``contour_edges``, ``sticker_insert``. An episode draws the task's parameters once
  and applies them to two different base pictures (scikit-image photos or procedural scenes) for A and B.

Each suite and task draws from its own generator seeded by (seed, name): the same seed gives the same pixels.
``write_suites`` also writes the suites of a lab's task folders (``folder_suites.py``).
"""

import json
import os
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import webdataset as wds
from scipy import ndimage
from skimage import draw

from pico_lightning.data.schema import encode_png
from pico_lightning.data.suites import PANEL_KEYS, SuiteEpisode, suite_path
from pico_lightning.files import atomic_path
from pico_lightning.prep import photos
from pico_lightning.prep.ops_generative import posterize, sepia, watermark_remove
from pico_lightning.prep.pixels import grey, grey_rgb
from pico_lightning.prep.scenes import KINDS, PALETTE, ShapeScene, geometry_scene, shape_scene

CONCEPTS = ("colour", "shape", "instance")
USER_TASKS = ("watermark_style", "background_stylise", "contour_edges", "sticker_insert")
BASES = photos.COLOUR_PHOTOS + ("shapes", "spheres")  # colour only, so every style visibly changes them
STYLES = ("sepia", "posterise", "grey")
STICKERS = ("disc", "diamond", "star5", "star6")
OBJECT_COLOURS = ((230, 40, 40), (40, 190, 70), (40, 90, 230), (250, 200, 20), (200, 60, 220), (20, 200, 210))
MARKER = (255, 0, 255)  # magenta spot marking where the sticker goes

Concept = tuple[str | None, str | None]  # (kind, colour) for ShapeScene.mask; None matches any


def build_suites(seed: int = 0, episodes_per_suite: int = 32, size: int = 128) -> dict[str, list[SuiteEpisode]]:
    """Both procedural suites, ``episodes_per_suite`` episodes each, panels (size, size, 3) uint8."""
    if episodes_per_suite < 1 or size < 16:
        raise ValueError(f"need episodes_per_suite >= 1 and size >= 16 px, got {episodes_per_suite}, {size}")
    return {
        "segmentation": segmentation_suite(seed, episodes_per_suite, size),
        "user_tasks": user_task_suite(seed, episodes_per_suite, size),
    }


def write_suites(out_dir: str | os.PathLike, suites: Mapping[str, Iterable[SuiteEpisode]]) -> dict[str, dict]:
    """Write each suite to ``out_dir/suites/<name>.tar`` atomically, its episodes as they come (lazily built ones
    are never all in memory); return the summary ``index.json`` keeps under "suites" (see ``data/schema.py``)."""
    summary = {}
    for name, episodes in suites.items():
        path, tasks, kinds = suite_path(out_dir, name), Counter(), set()
        with atomic_path(path) as tmp, wds.TarWriter(str(tmp), mtime=0) as sink:  # mtime=0: same bytes per seed
            for episode in episodes:
                sink.write(_sample(episode))
                tasks[episode.task] += 1
                kinds.add(episode.kind)
            if len(kinds) != 1:  # inside the block: nothing is written
                raise ValueError(f"write_suites: suite {name!r} has episodes of kinds {sorted(kinds)}; expected one")
        summary[name] = {
            "file": str(path.relative_to(out_dir)),
            "kind": kinds.pop(),
            "num_episodes": sum(tasks.values()),
            "tasks": dict(tasks),
        }
    return summary


def _sample(episode: SuiteEpisode) -> dict:
    """One episode as a WebDataset sample: four PNG panels and the json meta."""
    meta = {key: getattr(episode, key) for key in ("suite", "task", "episode_id", "kind", "prompt")}
    sample = {"__key__": episode.episode_id, "json": json.dumps(meta, sort_keys=True).encode()}
    sample.update({key: encode_png(panel) for key, panel in zip(PANEL_KEYS, episode.panels, strict=True)})
    return sample


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


# --- segmentation: concept control ----------------------------------------------------------------------


def segmentation_suite(seed: int, count: int, size: int) -> list[SuiteEpisode]:
    """``count`` mask episodes in concept-control pairs; pair n uses concept types n and n+1 (mod 3)."""
    rng = _rng(seed, "segmentation")
    episodes = []
    for pair in range(-(-count // 2)):
        tasks = (CONCEPTS[pair % 3], CONCEPTS[(pair + 1) % 3])
        scene_a, scene_b, concepts = _concept_pair(rng, size, tasks)
        for index, (task, concept) in enumerate(zip(tasks, concepts, strict=True)):
            panels = [
                scene_a.image,
                grey_rgb(scene_a.mask(*concept)),
                scene_b.image,
                grey_rgb(scene_b.mask(*concept)),
            ]
            episodes.append(SuiteEpisode("segmentation", task, f"q{pair:04d}-{index}", panels, "mask", "Segment"))
    return episodes[:count]


def _concept_pair(
    rng: np.random.Generator, size: int, tasks: tuple[str, str], tries: int = 200
) -> tuple[ShapeScene, ShapeScene, tuple[Concept, Concept]]:
    """Draw scenes A, B and one concept per task type whose masks differ from each other in A and in B."""
    for _ in range(tries):
        scene_a, scene_b = shape_scene(rng, size), shape_scene(rng, size)
        first = _candidates(scene_a, scene_b, tasks[0])
        if not first:
            continue
        concept = first[rng.integers(len(first))]
        second = [
            other
            for other in _candidates(scene_a, scene_b, tasks[1])
            if all((scene.mask(*other) != scene.mask(*concept)).any() for scene in (scene_a, scene_b))
        ]
        if second:
            return scene_a, scene_b, (concept, second[rng.integers(len(second))])
    raise RuntimeError(f"no scene pair with concepts {tasks} in {tries} tries")


def _candidates(scene_a: ShapeScene, scene_b: ShapeScene, task: str) -> list[Concept]:
    """Concepts of one type present in both scenes; an instance must also have a look-alike in B."""
    if task == "colour":
        return [(None, colour) for colour in PALETTE]
    if task == "shape":
        return [(kind, None) for kind in KINDS]
    in_a = Counter((shape.kind, shape.colour) for shape in scene_a.shapes)
    in_b = Counter((shape.kind, shape.colour) for shape in scene_b.shapes)
    return [
        (kind, colour)
        for (kind, colour), n in sorted(in_a.items())
        if n == 1
        and in_b[(kind, colour)] == 1
        and sum(shape.kind == kind or shape.colour == colour for shape in scene_b.shapes) > 1
    ]


# --- user-defined tasks --------------------------------------------------------------------------------


def user_task_suite(seed: int, count: int, size: int) -> list[SuiteEpisode]:
    """``count`` image episodes, round-robin over ``USER_TASKS`` (so any prefix mixes the tasks)."""
    rngs = {task: _rng(seed, task) for task in USER_TASKS}
    makers = {
        "watermark_style": watermark_style,
        "background_stylise": background_stylise,
        "contour_edges": contour_edges,
        "sticker_insert": sticker_insert,
    }
    episodes = []
    for index in range(count):
        task = USER_TASKS[index % len(USER_TASKS)]
        rng = rngs[task]
        panels = makers[task](rng, _two_bases(rng, size))
        episodes.append(
            SuiteEpisode("user_tasks", task, f"{task}-{index // len(USER_TASKS):04d}", panels, "image", "Edit")
        )
    return episodes


def _two_bases(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Two (size, size, 3) uint8 pictures from two different sources in ``BASES``."""
    return tuple(_base(rng, str(name), size) for name in rng.choice(BASES, 2, replace=False))


def _base(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    if name == "shapes":
        return shape_scene(rng, size).image
    if name == "spheres":
        return geometry_scene(rng, size).image
    return photos.random_crop(rng, photos.load_picture(name), size)


def stylise(image: np.ndarray, style: str) -> np.ndarray:
    """Whole-picture style: ``sepia``, ``posterise`` (4 levels per channel) or ``grey``; (H, W, 3) uint8."""
    if style == "sepia":
        return sepia(None, "plain", image)[1]
    if style == "posterise":
        return posterize(None, "levels_4", image)[1]
    return grey_rgb(grey(image))


def watermark_style(rng: np.random.Generator, bases: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Input: base + a translucent text or logo stamp; output: the clean base in one style (same for A, B)."""
    style = STYLES[rng.integers(len(STYLES))]
    mark = ("text", "logo")[rng.integers(2)]
    panels = []
    for base in bases:
        marked, clean = watermark_remove(rng, mark, base)
        panels += [marked, stylise(clean, style)]
    return panels


def background_stylise(rng: np.random.Generator, bases: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Input: base with one object pasted; output: the background in one style, the object untouched."""
    style = STYLES[rng.integers(len(STYLES))]
    panels = []
    for base in bases:
        image, mask = paste_object(rng, base, radius=rng.uniform(0.22, 0.32))
        panels += [image, np.where(mask[..., None], image, stylise(image, style))]
    return panels


def contour_edges(rng: np.random.Generator, bases: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Input: base with small distractors and one main object; output: only the main object's outline,
    white on black, ``size // 64`` px wide (inside the object)."""
    panels = []
    for base in bases:
        image = base
        for _ in range(int(rng.integers(1, 3))):
            image, _ = paste_object(rng, image, radius=rng.uniform(0.08, 0.12))
        image, mask = paste_object(rng, image, radius=rng.uniform(0.25, 0.33))
        width = max(1, image.shape[0] // 64)
        panels += [image, grey_rgb(mask & ~ndimage.binary_erosion(mask, iterations=width))]
    return panels


def sticker_insert(rng: np.random.Generator, bases: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Input: base with a magenta spot; output: the base with the episode's sticker centred on the spot."""
    sticker = STICKERS[rng.integers(len(STICKERS))]
    colour = OBJECT_COLOURS[rng.integers(len(OBJECT_COLOURS))]
    panels = []
    for base in bases:
        size = base.shape[0]
        spot = max(1.0, size / 32)  # marker radius; with its black ring it stays inside 0.4 x the sticker's
        radius = max(size / 7, 3 * (spot + 1))
        centre = rng.uniform(radius + 1, size - radius - 1, 2)
        marked = base.copy()
        marked[draw.disk(centre, spot + 1, shape=(size, size))] = 0
        marked[draw.disk(centre, spot, shape=(size, size))] = MARKER
        stickered = base.copy()
        stickered[sticker_mask(sticker, centre, radius, size)] = colour
        panels += [marked, stickered]
    return panels


def sticker_mask(sticker: str, centre: np.ndarray, radius: float, size: int) -> np.ndarray:
    """(size, size) bool mask of one of ``STICKERS`` centred at (row, col) ``centre``, ``radius`` px.

    Every sticker covers a disc of radius 0.4 x ``radius`` (the stars' inner corners are at half the radius),
    which hides the marker spot.
    """
    if sticker == "disc":
        points = draw.disk(centre, radius, shape=(size, size))
    else:
        count = 4 if sticker == "diamond" else 2 * int(sticker[-1])
        radii = np.full(count, radius) if count == 4 else np.where(np.arange(count) % 2, radius / 2, radius)
        angles = np.pi / 2 + np.arange(count) * 2 * np.pi / count
        points = draw.polygon(centre[0] - radii * np.sin(angles), centre[1] + radii * np.cos(angles), (size, size))
    mask = np.zeros((size, size), bool)
    mask[points] = True
    return mask


def paste_object(rng: np.random.Generator, image: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Paste a shaded disc or regular polygon (``radius`` as a fraction of the side) at a random spot.

    Returns the new (H, W, 3) uint8 image and the object's exact (H, W) bool mask.
    """
    size = image.shape[0]
    radius_px = radius * size
    centre = rng.uniform(radius_px, size - radius_px, 2)
    sides = int(rng.choice([0, 3, 4, 5, 6]))
    if sides == 0:
        points = draw.disk(centre, radius_px, shape=(size, size))
    else:
        angles = rng.uniform(0, 2 * np.pi) + np.arange(sides) * 2 * np.pi / sides
        points = draw.polygon(
            centre[0] + radius_px * np.sin(angles), centre[1] + radius_px * np.cos(angles), (size, size)
        )
    mask = np.zeros((size, size), bool)
    mask[points] = True
    # Lit from the top-left (brightness 1.25 there, 0.75 at the bottom-right) so it reads as a solid.
    rows, cols = np.mgrid[:size, :size]
    light = 1 - 0.25 * (rows - centre[0] + cols - centre[1]) / (np.sqrt(2) * radius_px)
    colour = np.array(OBJECT_COLOURS[rng.integers(len(OBJECT_COLOURS))], float)
    out = image.copy()
    out[mask] = np.clip(colour * light[mask, None], 0, 255).astype(np.uint8)
    return out, mask
