"""What README.md's ```bash lines stand for, for tests/test_readme.py: the lines themselves (parsed and classified) and
the Workspace of fixtures that the README's paths are replaced by."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from pico_lightning import cli

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# README path -> (what stands in for it, the Workspace attribute that makes it)
SUBSTITUTIONS = {
    "/ckpt/FLUX.1-Fill-dev": ("a tiny random-init FLUX.1-Fill directory (tiny_flux_dir)", "flux"),
    "/data/visrel": ("VisRel-lite, 6 pairs a task, 32 px, small suites (visrel_tiny)", "visrel"),
    "/shared/photos": ("8 smooth random photographs, 48 x 40 px", "photos"),
    "/shared/coco/instances.json": ("COCO instances of 8 pictures: two polygons each", "coco_json"),
    "/shared/coco/images": ("the 8 pictures of those instances", "coco_images"),
    "/shared/depth": ("8 photographs, each with a 16-bit <name>_depth.png", "depth"),
    "/shared/raw": ("RAW in tmp (the recipes write it)", "raw"),
    "/shared/data": ("the dataset the README's prep lines make from RAW, in README order", "data"),
    "/shared/runs": ("run.dir in tmp", "runs"),
    "/shared/text-cache": ("the text cache in tmp", "text_cache"),
    "lab.yaml": ("the README's lab.yaml block, its paths substituted, written to tmp", "lab_yaml"),
    "runs/sweeps/task_diversity": ("the fake sweep of tests/test_sweeps.py", "sweep"),
    "a.png": ("a 24 px picture", "picture_a"),
    "a_edit.png": ("a 24 px picture", "picture_a_edit"),
    "b.png": ("a 24 px picture", "picture_b"),
    "out/b_edit.png": ("an output in tmp", "infer_out"),
}
CPU_SIZE = ["data.panel_size=32"]  # + model.text_cache_dir and run.dir in tmp (Workspace.cpu_size)
RECIPE_CPU_SIZE = {"data_prep.photos": ["--size", "32"]}  # 32 px crops, not 512: 37 operators per photograph

# Lines never run here, and why (a command that is one of these or starts with one and a space).
ALLOWED = {
    "make demo": "the 8-minute demo itself; its steps are the library's, tested on their own",
    "make test": "what CI runs (.ci/run); this test is part of it",
    "make bench-gpu": "one CUDA GPU and full-size weights",
    "make bench": "the CPU benchmark harness (tests/test_bench.py covers it)",
    "hf auth login": "needs the network and a Hugging Face account",
    "huggingface-cli login": "needs the network and a Hugging Face account",
    "hf download": "needs the network and the accepted FLUX.1 [dev] licence (~35 GB)",
}


@dataclass(frozen=True)
class Command:
    line: int  # README line where the command starts
    text: str  # continuation lines joined, the comment dropped

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)


def readme_commands(text: str) -> list[Command]:
    """Every command of every ```bash block: continuation lines joined, comments and blank lines dropped."""
    commands, in_block, pending, start = [], False, "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("```"):
            in_block = raw.strip() == "```bash" if not in_block else False
            continue
        if not in_block:
            continue
        line = raw.strip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined = shlex.join(shlex.split(pending + line, comments=True))
        pending = ""
        if joined:
            commands.append(Command(start, joined))
    return commands


def classify(command: Command) -> str:
    """The class that checks ``command`` (see the module table), or "" when none claims it."""
    argv = [word for word in command.argv if not re.fullmatch(r"[A-Z_]+=\S*", word)]  # env prefixes
    if any(command.text == allowed or command.text.startswith(allowed + " ") for allowed in ALLOWED):
        return "allowed"
    if argv[:1] == ["sbatch"] and any(word.endswith("slurm.sbatch") for word in argv):
        return "sbatch"
    if argv[:1] == ["bash"] and argv[1:2] and argv[1].endswith("torchrun.sh"):
        return "torchrun"
    if argv[:2] == ["python", "-m"] and argv[2:3] and argv[2].startswith("data_prep."):
        return "prep"
    if argv[:3] == ["pico", "prep", "folders"]:
        return "prep"
    if argv[:1] == ["pico"] and argv[1:2] and argv[1] in ("train", "embed", "infer", "sweep", "report"):
        return argv[1]
    if argv[:3] == ["pico", "config", "keys"]:
        return "config"
    return ""


COMMANDS = readme_commands(README.read_text())


def smooth_picture(seed: int, height: int = 40, width: int = 48) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR))


class Workspace:
    """The fixtures the README's paths stand for, made on first use under one tmp directory."""

    def __init__(self, root: Path, flux: Path, visrel: Path):
        self.root, self.flux, self.visrel = root, flux, visrel
        self.prep_codes: dict[int, int] = {}  # README line -> exit status of the recipe or prep line
        self.building = False

    def path(self, name: str) -> Path:
        return self.root / name

    @property
    def raw(self) -> Path:
        return self.path("raw")

    @property
    def runs(self) -> Path:
        return self.path("runs")

    @property
    def text_cache(self) -> Path:
        return self.path("text")

    @property
    def infer_out(self) -> Path:
        return self.path("infer") / "b_edit.png"

    @property
    def cpu_size(self) -> list[str]:
        return [*CPU_SIZE, f"model.text_cache_dir={self.text_cache}", f"run.dir={self.runs}"]

    def picture(self, name: str, seed: int) -> Path:
        path = self.path(f"pictures/{name}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_picture(seed, 24, 24)).save(path)
        return path

    @cached_property
    def picture_a(self) -> Path:
        return self.picture("a", 0)

    @cached_property
    def picture_a_edit(self) -> Path:
        return self.picture("a_edit", 1)

    @cached_property
    def picture_b(self) -> Path:
        return self.picture("b", 2)

    @cached_property
    def photos(self) -> Path:
        folder = self.path("photos")
        folder.mkdir()
        for i in range(8):
            Image.fromarray(smooth_picture(i)).save(folder / f"p{i}.png")
        return folder

    @cached_property
    def depth(self) -> Path:
        folder = self.path("depth")
        folder.mkdir()
        for i in range(8):
            Image.fromarray(smooth_picture(10 + i)).save(folder / f"d{i}.png")
            ramp = np.linspace(500, 5000 + 100 * i, 48 * 40).reshape(40, 48).astype(np.uint16)
            Image.fromarray(ramp).save(folder / f"d{i}_depth.png")
        return folder

    @cached_property
    def coco_images(self) -> Path:
        folder = self.path("coco/images")
        folder.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(smooth_picture(20 + i, 20, 24)).save(folder / f"c{i}.png")
        return folder

    @cached_property
    def coco_json(self) -> Path:
        images = [{"id": i, "file_name": f"c{i}.png", "height": 20, "width": 24} for i in range(8)]
        annotations = []
        for i in range(8):
            cat = [[2, 2, 9 + i % 3, 2, 9 + i % 3, 9, 2, 9]]  # polygons: x, y pairs
            dog = [[12, 10, 20, 10, 20, 17, 12, 17]]
            annotations.append({"image_id": i, "category_id": 1, "bbox": [2, 2, 8, 7], "segmentation": cat})
            annotations.append({"image_id": i, "category_id": 2, "bbox": [12, 10, 8, 7], "segmentation": dog})
        path = self.coco_images.parent / "instances.json"
        categories = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
        path.write_text(json.dumps({"images": images, "categories": categories, "annotations": annotations}))
        return path

    @property
    def data(self) -> Path:
        """The worked example's dataset, made on first use by the README's recipe and prep lines, in README order."""
        if not self.prep_codes and not self.building:
            self.building = True
            for command in COMMANDS:
                if classify(command) == "prep":
                    self.prep_codes[command.line] = run_prep(self.substitute(command.argv))
            self.building = False
        return self.path("data")

    @cached_property
    def lab_yaml(self) -> Path:
        block = re.search(r"```yaml\n# lab\.yaml\n(.*?)```", README.read_text(), re.S)
        assert block, "README.md: the lab.yaml block (```yaml starting with '# lab.yaml') is gone"
        path = self.path("lab.yaml")
        path.write_text(self.substitute_text(block.group(1)))
        return path

    @cached_property
    def sweep(self) -> Path:
        from test_sweeps import fake_sweep

        return fake_sweep(self.path("sweep"))

    def replacement(self, readme_path: str) -> str:
        return str(getattr(self, SUBSTITUTIONS[readme_path][1]))

    def substitute_text(self, text: str) -> str:
        """Every README path in ``text`` replaced, longest first (/shared/coco/images before /shared/...)."""
        for readme_path in sorted(SUBSTITUTIONS, key=len, reverse=True):
            pattern = rf"(?<![\w./-]){re.escape(readme_path)}(?![\w./-])"
            if re.search(pattern, text):
                text = re.sub(pattern, self.replacement(readme_path), text)
        return text

    def substitute(self, argv: list[str]) -> list[str]:
        return [self.substitute_text(word) for word in argv]


def run_prep(argv: list[str]) -> int:
    """A recipe (`python -m data_prep.X ...`, in a subprocess as written) or `pico prep folders ...` (in-process)."""
    if argv[0] == "pico":
        return cli.main(argv[1:])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    recipe = [sys.executable, *argv[1:], *RECIPE_CPU_SIZE.get(argv[2], [])]
    return subprocess.run(recipe, cwd=REPO, env=env, capture_output=True).returncode
