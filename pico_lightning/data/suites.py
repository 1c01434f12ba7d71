"""Evaluation suites: the in-memory ``SuiteEpisode`` and the loaders that produce lists of them.

An episode is the four panels A, A', B, B' (HxWx3 uint8; B' is the ground truth) plus how it is scored:
``kind="mask"`` (B' is a white-on-black mask, scored by IoU) or ``kind="image"`` (scored by PSNR / SSIM).
Suites on disk live next to the VisRel shards as ``ROOT/suites/<name>.tar``, any name, one WebDataset sample per
episode (written by ``pico_lightning/prep/suites.py``: ``pico prep visrel-lite`` and ``pico prep folders --suite``);
a suite's kind is its episodes' "kind", one for the whole suite::

    <episode_id>.a.png  <episode_id>.a_out.png  <episode_id>.b.png  <episode_id>.b_out.png
    <episode_id>.json   {"suite", "task", "episode_id", "kind", "prompt"}

PerSeg-style folders (``ROOT/Images/<object>/<stem>.jpg`` + ``ROOT/Annotations/<object>/<stem>.png``) load
with :func:`load_perseg` (suite ``perseg``). ``held_in`` / ``held_out`` episodes come from the shards
(data/eval_items.py).
"""

from __future__ import annotations

import json
import tarfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from webdataset.tariterators import base_plus_ext

from pico_lightning.errors import UserError
from pico_lightning.panels import Layout, compose_grid, fit_panel, target_mask, to_tensor
from pico_lightning.pictures import PICTURE_SUFFIXES, ImageInputError, read_mask, read_picture

KINDS = ("mask", "image")
PANEL_KEYS = ("a.png", "a_out.png", "b.png", "b_out.png")  # tar members in panel order A, A', B, B'
PERSEG = "perseg"  # the suite read from a PerSeg folder (eval.perseg_dir), not from the data
REWRITE = "write the data again with `pico prep`"

PictureAndMask = tuple[np.ndarray, np.ndarray]  # a PerSeg shot: its picture and its mask


@dataclass(frozen=True, eq=False)
class SuiteEpisode:
    """One scored episode: panels A, A', B, B' (each (H, W, 3) uint8, B' the ground truth)."""

    suite: str
    task: str
    episode_id: str
    panels: list[np.ndarray]
    kind: str
    prompt: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"episode {self.episode_id}: kind {self.kind!r}, expected one of {KINDS}")
        if len(self.panels) < 4 or len(self.panels) % 2:
            raise ValueError(f"episode {self.episode_id}: {len(self.panels)} panels, expected A, A', B, B'")
        for panel in self.panels:
            if panel.dtype != np.uint8 or panel.ndim != 3 or panel.shape[2] != 3:
                raise ValueError(
                    f"episode {self.episode_id}: panel {panel.shape} {panel.dtype}, expected (H, W, 3) uint8"
                )

    def grid(self, layout: Layout, mode: str = "resize") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (grid (3, H, W) in [-1, 1] with the target cell black, mask (1, H, W), target (3, S, S)).

        H, W are the layout's pixel sizes and S its panel size; the target is B' resized like the others.
        """
        grid = compose_grid([*self.panels[:-1], None], layout, mode)
        target = fit_panel(to_tensor(self.panels[-1]), layout.panel_size, mode)
        return grid, target_mask(layout), target


def mask_to_rgb(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool mask -> (H, W, 3) uint8, white on black."""
    return np.repeat(np.where(mask, 255, 0).astype(np.uint8)[..., None], 3, axis=2)


def suite_path(root: str | Path, name: str) -> Path:
    """Where suite ``name`` lives under a prepared data root."""
    return Path(root) / "suites" / f"{name}.tar"


def suite_names(root: str | Path) -> list[str]:
    """The suites a prepared data root holds (``ROOT/suites/<name>.tar``), sorted; none when ``root`` is empty."""
    return sorted(path.name.removesuffix(".tar") for path in Path(root).glob("suites/*.tar")) if root else []


def load_suite(root: str | Path, name: str) -> list[SuiteEpisode]:
    """Read every episode of ``ROOT/suites/<name>.tar`` in file order; a missing file is a UserError."""
    path = suite_path(root, name)
    if not path.is_file():
        raise UserError(
            f"{path}: suite {name!r} not found; the suites there: {suite_names(root) or 'none'}; drop it from "
            f"eval.suites, or write data that has it into a new directory: `pico prep folders RAW --out NEW_DIR "
            f"--suite {name}=TASK[,TASK...]`"
        )
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                key, extension = base_plus_ext(member.name)  # sample key, then all its extensions
                if member.isfile() and key is not None:
                    samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    except tarfile.TarError as err:
        raise UserError(f"{path}: not a readable suite tar ({err}); {REWRITE}") from None
    return [_episode_from_sample(path, key, members) for key, members in samples.items()]


def suite_kind(name: str, episodes: list[SuiteEpisode]) -> str:
    """The one kind of a suite's episodes ("mask" or "image"); a suite mixing kinds is a UserError."""
    kinds = sorted({episode.kind for episode in episodes})
    if len(kinds) > 1:
        raise UserError(f"suite {name!r}: episodes of kinds {kinds}; a suite is scored one way, {REWRITE}")
    return kinds[0] if kinds else "image"


def _episode_from_sample(path: Path, key: str, members: Mapping[str, bytes]) -> SuiteEpisode:
    """Decode one tar sample (member extension -> bytes) into a SuiteEpisode; a broken sample is a UserError."""
    missing = [name for name in (*PANEL_KEYS, "json") if name not in members]
    if missing:
        raise UserError(f"{path}: sample {key!r} lacks {missing}; {REWRITE}")
    try:
        meta = json.loads(members["json"])
        panels = [read_picture(members[name], name) for name in PANEL_KEYS]
        return SuiteEpisode(meta["suite"], meta["task"], meta["episode_id"], panels, meta["kind"], meta["prompt"])
    except (ValueError, KeyError, TypeError) as err:  # bad json, meta or picture (ImageInputError)
        raise UserError(f"{path}: sample {key!r} is corrupt ({err!r}); {REWRITE}") from None


def load_perseg(root: str | Path, seed: int = 0, max_episodes: int | None = None) -> list[SuiteEpisode]:
    """One-shot episodes from PerSeg-style folders: per object, its first annotated image is the exemplar.

    Every other annotated image of that object is a query (the PerSAM protocol). Unreadable or mismatched
    files are skipped with one warning; objects with < 2 usable images are skipped. ``max_episodes`` keeps a
    seeded random subset, in the original order.
    """
    root = Path(root)
    episodes, skipped = [], []
    for folder in sorted(p for p in (root / "Images").glob("*") if p.is_dir()):
        shots = _perseg_shots(folder, root / "Annotations" / folder.name, skipped)
        if len(shots) < 2:
            skipped.append(f"{folder}: {len(shots)} usable image(s), an episode needs 2")
        for stem, (query, query_mask) in shots[1:]:
            exemplar, exemplar_mask = shots[0][1]
            panels = [exemplar, mask_to_rgb(exemplar_mask), query, mask_to_rgb(query_mask)]
            episodes.append(SuiteEpisode(PERSEG, folder.name, f"{folder.name}-{stem}", panels, "mask", "Segment"))
    if skipped:
        warnings.warn(f"load_perseg: skipped {len(skipped)}: {'; '.join(skipped)}", stacklevel=2)
    if not episodes:
        raise UserError(
            f"{root}: no PerSeg episodes found; expected {root}/Images/<object>/<name>.jpg with masks "
            f"{root}/Annotations/<object>/<name>.png, at least 2 readable pairs per object"
        )
    if max_episodes is not None and max_episodes < len(episodes):
        keep = np.sort(np.random.default_rng(seed).permutation(len(episodes))[:max_episodes])
        episodes = [episodes[i] for i in keep]
    return episodes


def _perseg_shots(image_dir: Path, mask_dir: Path, skipped: list[str]) -> list[tuple[str, PictureAndMask]]:
    """Usable (stem, (image (H, W, 3) uint8, mask (H, W) bool)) of one object; appends skip reasons."""
    shots = []
    for path in sorted(p for p in image_dir.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES):
        mask_path = mask_dir / f"{path.stem}.png"
        try:
            image = read_picture(path)
            # PerSAM reads masks as "any channel > 0": white, (128, 0, 0) palette and 0/1 label maps all work.
            mask = read_mask(mask_path)
        except ImageInputError as err:
            skipped.append(str(err))
            continue
        if mask.shape != image.shape[:2] or not mask.any():
            skipped.append(f"{mask_path}: mask {mask.shape} empty or not the image's size {image.shape[:2]}")
            continue
        shots.append((path.stem, (image, mask)))
    return shots


def load_named_suite(name: str, root: str | Path) -> list[SuiteEpisode]:
    """Episodes of suite ``name`` under ``root`` (the prepared data dir; the PerSeg folder for ``perseg``)."""
    return load_perseg(root) if name == PERSEG else load_suite(root, name)
