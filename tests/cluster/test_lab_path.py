"""A lab's path on a real two-node SLURM (`make test-cluster`): its own photographs -> data_prep -> `pico prep
folders` with held-out tasks and suites -> the README's SLURM line for experiments/flux_fill.yaml on 2 nodes x 1 CPU
rank, with a miniature FLUX.1-Fill-dev in the real layout -> every suite evaluated, the LoRA loads in stock diffusers.

What differs from the README's line (`sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 --cpus-per-task=8
--time=1-00:00:00 experiments/launch/slurm.sbatch experiments/flux_fill.yaml run.name=flux32`): the allocation (2
nodes x 1 task, 2 CPUs each, no GPUs, 20 minutes), the model and data paths, run.dir and the text cache (in tmp),
data.panel_size (32), train.compile (off), train.max_steps (4), train.checkpoint_every (2) and the evaluation's size
(2 episodes a group, 2 sampling steps, 2 seeds). Everything else is flux_fill.yaml as shipped: bf16-mixed, DDP, 4
loader workers per rank, 1 episode per rank with the square-root learning rate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_slurm import REPO, SCRIPT, clean_log, sbatch, wait_for

pytestmark = pytest.mark.slurm
FLUX = REPO / "experiments" / "flux_fill.yaml"
PHOTOS = 24  # pairs per task: 6 tasks, 144 pairs


def pico(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pico_lightning.cli", *args], cwd=cwd, capture_output=True, text=True)


def write_photos(out: Path) -> Path:
    """24 real photographs: crops of scikit-image's bundled colour pictures, as a lab's folder of JPEGs."""
    from pico_lightning.prep.photos import colour_photo

    out.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(PHOTOS):
        Image.fromarray(colour_photo(rng, 96)).save(out / f"photo_{i:02d}.jpg", quality=95)
    return out


def write_lab_tasks(photos: Path, raw: Path) -> None:
    """Four tasks from data_prep's photo recipe, and two the lab made itself: a mask task and an edit."""
    recipe = [sys.executable, "-m", "data_prep.photos", str(photos), "--out", str(raw), "--tasks", "flip,sepia"]
    subprocess.run([*recipe, "--size", "64"], cwd=REPO, check=True, capture_output=True)
    for category, task in (("perception", "bright_mask"), ("manipulation", "invert")):
        for side in ("input", "output"):
            (raw / category / task / side).mkdir(parents=True)
        for path in sorted(photos.glob("*.jpg")):
            image = np.asarray(Image.open(path).convert("RGB").resize((64, 64)))
            grey = image.mean(axis=-1)
            output = np.where(grey > np.median(grey), 255, 0).astype(np.uint8) if task == "bright_mask" else 255 - image
            Image.fromarray(image).save(raw / category / task / "input" / f"{path.stem}.png")
            Image.fromarray(output).save(raw / category / task / "output" / f"{path.stem}.png")


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict[str, Path]:
    """The lab's data (6 tasks, 144 pairs; held out: sepia_vintage and invert; suites segmentation and user_tasks)
    and a miniature FLUX.1-Fill-dev directory."""
    from support import save_tiny_flux_fill

    root = tmp_path_factory.mktemp("lab")
    write_lab_tasks(write_photos(root / "photos"), root / "raw")
    prepared = pico(
        "prep",
        "folders",
        str(root / "raw"),
        "--out",
        str(root / "data"),
        "--held-out",
        "sepia_vintage,invert",
        "--suite",
        "segmentation=bright_mask",
        "--suite",
        "user_tasks=invert",
        cwd=root,
    )
    assert prepared.returncode == 0, prepared.stderr
    assert "wrote 144 pairs of 6 tasks" in prepared.stdout, prepared.stdout
    return {"root": root, "data": root / "data", "model": save_tiny_flux_fill(root / "FLUX.1-Fill-dev")}


def paths(lab: dict[str, Path], out: Path) -> list[str]:
    return [
        f"model.pretrained_dir={lab['model']}",
        f"data.root={lab['data']}",
        f"model.text_cache_dir={out / 'text'}",
        f"run.dir={out / 'runs'}",
    ]


def test_the_readme_lines_pass_the_dry_run_on_the_labs_data(lab, tmp_path):
    for devices, nodes in ((1, 1), (8, 1), (8, 4)):
        world = [f"train.devices={devices}", f"train.num_nodes={nodes}"]
        done = pico("train", str(FLUX), *paths(lab, tmp_path), *world, "--dry-run", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"global batch {devices * nodes} = 1 per device" in done.stdout
        for group in ("seen", "held_out", "segmentation", "user_tasks"):
            assert f"eval {group}: " in done.stdout, done.stdout


def test_the_readme_slurm_line_trains_flux_fill_on_two_nodes(lab, tmp_path):
    from diffusers import FluxFillPipeline

    sizes = [
        "data.panel_size=32",
        "train.compile=false",
        "train.max_steps=4",
        "train.checkpoint_every=2",
        "eval.episodes_per_suite=2",
        "eval.num_steps=2",
        "eval.num_seeds=2",
        "eval.scorer_steps=1",
    ]
    args = [str(FLUX), "run.name=flux_2x1", *paths(lab, tmp_path), *sizes]
    job = sbatch("--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=2", "--time=20", str(SCRIPT), *args, cwd=tmp_path)
    states = wait_for(job, 1200)
    log = clean_log(tmp_path / f"pico-train-{job}.out")
    assert states[job][0] == "COMPLETED", (states, log[-3000:])
    assert "on 2 node(s) x 1 cpu rank(s)" in log and "global batch 2 = 1 per device x 2" in log
    summary = json.loads((tmp_path / "runs" / "flux_2x1" / "summary.json").read_text())
    evaluation = summary["eval"]
    assert summary["status"] == "finished" and summary["step"] == 4
    for group, metric in (("seen", "psnr"), ("held_out", "psnr"), ("segmentation", "iou"), ("user_tasks", "psnr")):
        assert f"eval/{group}/{metric}" in evaluation, sorted(evaluation)
        assert evaluation[f"eval/{group}/episodes"] > 0
    pipeline = FluxFillPipeline.from_pretrained(lab["model"], local_files_only=True)
    pipeline.load_lora_weights(tmp_path / "runs" / "flux_2x1" / "lora")
    assert pipeline.get_active_adapters()
