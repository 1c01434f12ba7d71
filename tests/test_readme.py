"""Every command line in README.md's ```bash blocks is run at CPU size, checked with `--dry-run`, or allowed by name.

A line no class claims fails `test_every_readme_command_is_classified`, so a new README line cannot slip in
unchecked. README line -> what the test does:

- `pico train ...`: run in-process with `--dry-run` and the substitutions below; exit 0. On `flux_fill.yaml` lines
  without a batch_size the plan's first line must be the world's batch and learning rate (1 episode per GPU, 1e-4
  at batch 4, square-root scaled).
- `sbatch ... slurm.sbatch ...`: the script runs with fake `srun` / `scontrol` / `pico` on PATH and the `sbatch`
  options as the allocation's variables; the `pico train` argv it makes is dry-run as above (the 4 x 8 lines must
  plan 32 ranks and batch 32), and `pico embed` must get the same arguments.
- `... torchrun.sh ...`: the script runs with fake `torchrun` / `python` on PATH and the line's variables; the
  captured `pico train` argv is dry-run as above.
- `pico embed ...`: run in-process (a tiny model's text encoders, a few prompts).
- `pico infer ...`: run in-process on the tiny model and three 24 px pictures, seeds and steps as written.
- `python -m data_prep...`, `pico prep folders ...`: run in README order on small fixtures in the recipes' own
  formats (photographs, COCO instances, depth maps); the dataset they make is the worked example's `/shared/data`.
- `pico sweep ...`: run with `--dry-run` added and `--out` in tmp (local: the plan; slurm: sweep.sbatch written,
  not submitted).
- `pico report ...`: run on the fake sweep of tests/test_sweeps.py. `pico config keys ...`: run.
- anything in `ALLOWED`: not run, for the reason it gives.

`SUBSTITUTIONS` replaces the README's paths by fixtures, `RECIPE_CPU_SIZE` adds arguments to a recipe, and
`CPU_SIZE` adds overrides to every `pico train` and `pico embed` line: 32 px panels (flux_fill.yaml's 512 px
panels would compose every evaluation grid at 1024 px), and the text cache and run directories in tmp.
`experiments/demo.yaml` lines read `visrel_tiny` (`make demo` writes the demo's own data).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pytest
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

FLUX_LR, FLUX_REFERENCE_BATCH = 1.0e-4, 4  # experiments/flux_fill.yaml: lr at the reference batch, sqrt scaling


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


def test_every_readme_command_is_classified():
    unclassified = [f"README.md:{c.line}: {c.text}" for c in COMMANDS if not classify(c)]
    assert not unclassified, "add a class or an ALLOWED entry for:\n" + "\n".join(unclassified)
    assert any(classify(c) == "sbatch" for c in COMMANDS) and any(classify(c) == "torchrun" for c in COMMANDS)


def test_the_parser_joins_continuations_and_drops_comments():
    text = "x\n```bash\na b \\\n    c  # note\n\n# only a comment\nd 'e f'\n```\n```yaml\nnot: run\n```\n"
    assert readme_commands(text) == [Command(3, "a b c"), Command(7, "d 'e f'")]


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
        import json

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


@pytest.fixture(scope="module")
def ws(tmp_path_factory, tiny_flux_dir, visrel_tiny, monkeypatch_module):
    monkeypatch_module.chdir(REPO)  # the README's relative paths start at the repository root
    return Workspace(tmp_path_factory.mktemp("readme"), tiny_flux_dir, visrel_tiny)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def commands_of(*classes: str) -> list:
    chosen = [c for c in COMMANDS if classify(c) in classes]
    return [pytest.param(c, id=f"L{c.line}") for c in chosen]


def experiment_args(ws: Workspace, argv: list[str]) -> list[str]:
    """A `pico train`/`embed` argv (after the subcommand), its paths substituted, at CPU size; demo lines read
    visrel_tiny."""
    args = ws.substitute(argv)
    if any(word.endswith("experiments/demo.yaml") for word in args) and not any(
        word.startswith("data.root=") for word in args
    ):
        args.append(f"data.root={ws.visrel}")
    return [*args, *ws.cpu_size]


def dry_run(ws: Workspace, train_args: list[str], capsys) -> str:
    """`pico train ARGS --dry-run`: exit 0, and on flux_fill.yaml lines the world's batch and learning rate."""
    args = [word for word in experiment_args(ws, train_args) if word != "--dry-run"]
    capsys.readouterr()
    code = cli.main(["train", *args, "--dry-run"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    plan = out.out.splitlines()[0]
    if any(word.endswith("experiments/flux_fill.yaml") for word in args) and not any(
        word.startswith("train.batch_size=") for word in args
    ):
        world = int(re.match(r"world (\d+) ", plan).group(1))
        lr = FLUX_LR * math.sqrt(world / FLUX_REFERENCE_BATCH)
        assert f"global batch {world} = 1 per device x {world}" in plan, plan
        assert f"; lr {lr:.3g} (= 0.0001 x sqrt scaling from batch 4)" in plan, plan
    return plan


@pytest.mark.parametrize("command", commands_of("train"))
def test_pico_train_lines_dry_run(command, ws, capsys):
    dry_run(ws, command.argv[2:], capsys)


def fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
    os.chmod(bin_dir / name, 0o755)


def run_launch_script(ws: Workspace, command: Command, tmp_path: Path) -> list[list[str]]:
    """The launch script of ``command`` with fakes on PATH; every `pico` / `python -m pico_lightning.cli` call it
    makes, as argv lists in order. srun and torchrun pass through to what they start."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    calls.mkdir()
    record = 'n=$(ls "$CALLS" | wc -l); printf "%s\\n" "$@" > "$CALLS/$(printf %03d "$n")"'
    fake(bin_dir, "pico", record)
    fake(bin_dir, "python", "shift 2\n" + record)  # `python -m pico_lightning.cli ARGS`: record ARGS
    fake(bin_dir, "srun", 'while [[ $1 == --* ]]; do shift; done\nexec "$@"')
    fake(bin_dir, "torchrun", 'while [[ $1 != -m ]]; do shift; done\nexec python "$@"')
    fake(bin_dir, "scontrol", "true")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls), "PYTHONPATH": str(REPO)}
    argv = command.argv
    while re.fullmatch(r"[A-Z_]+=\S*", argv[0]):  # NNODES=4 GPUS=8 ... bash torchrun.sh
        key, _, value = argv.pop(0).partition("=")
        env[key] = value
    if argv[0] == "sbatch":
        script_at = next(i for i, word in enumerate(argv) if word.endswith("slurm.sbatch"))
        options = dict(word[2:].partition("=")[::2] for word in argv[1:script_at])
        env.update(
            SLURM_JOB_NUM_NODES=options.get("nodes", "1"),
            SLURM_NTASKS_PER_NODE=options.get("ntasks-per-node", "1"),
            SLURM_GPUS_ON_NODE=options.get("gpus-per-node", "0"),
            SLURM_CPUS_PER_TASK=options.get("cpus-per-task", "1"),
        )
        argv = ["bash", *argv[script_at:]]
    job = subprocess.run(ws.substitute(argv), cwd=REPO, env=env, capture_output=True, text=True)
    assert job.returncode == 0, job.stdout + job.stderr
    return [path.read_text().splitlines() for path in sorted(calls.iterdir())]


@pytest.mark.parametrize("command", commands_of("sbatch", "torchrun"))
def test_launch_lines_make_a_train_line_that_dry_runs(command, ws, tmp_path, capsys):
    embed, train = run_launch_script(ws, command, tmp_path)
    assert embed[0] == "embed" and train[0] == "train" and embed[1:] == train[1:]
    plan = dry_run(ws, train[1:], capsys)
    if "--nodes=4" in command.text or "NNODES=4" in command.text:
        assert plan.startswith("world 32 (4 node(s) x 8 device(s)): global batch 32 = 1 per device x 32"), plan


@pytest.mark.parametrize("command", commands_of("embed"))
def test_pico_embed_lines_run(command, ws, capsys):
    assert cli.main(["embed", *experiment_args(ws, command.argv[2:])]) == 0
    assert "prompts embedded" in capsys.readouterr().out


@pytest.mark.parametrize("command", commands_of("infer"))
def test_pico_infer_lines_run(command, ws):
    assert cli.main(ws.substitute(command.argv[1:])) == 0
    assert ws.infer_out.is_file() and ws.infer_out.with_suffix(".json").is_file()


@pytest.mark.parametrize("command", commands_of("prep"))
def test_data_prep_and_prep_folders_lines_run(command, ws):
    assert ws.data.joinpath("index.json").is_file()
    assert ws.prep_codes[command.line] == 0


@pytest.mark.parametrize("command", commands_of("sweep"))
def test_pico_sweep_lines_dry_run(command, ws, capsys):
    """The dry run checks every run against its data: a line that names none (the demo's, outputs/demo/data, which
    `make demo` writes) gets the VisRel-lite fixture's."""
    args = [word for word in ws.substitute(command.argv[1:]) if word != "--dry-run"]
    if not any(word.startswith("data.root=") for word in args):
        args.append(f"data.root={ws.visrel}")
    out = ws.path(f"sweeps/L{command.line}")
    assert cli.main([*args, "--dry-run", "--out", str(out)]) == 0, capsys.readouterr().err
    if "slurm" in args:
        assert (out / "sweep.sbatch").is_file()
    else:
        assert "pico train " in capsys.readouterr().out


@pytest.mark.parametrize("command", commands_of("report", "config"))
def test_pico_report_and_config_lines_run(command, ws):
    assert cli.main(ws.substitute(command.argv[1:])) == 0
