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

`SUBSTITUTIONS` (tests/readme_workspace.py, with the Workspace that makes the fixtures) replaces the README's paths
by fixtures, `RECIPE_CPU_SIZE` adds arguments to a recipe, and `CPU_SIZE` adds overrides to every `pico train` and
`pico embed` line: 32 px panels (flux_fill.yaml's 512 px panels would compose every evaluation grid at 1024 px), and
the text cache and run directories in tmp.
`experiments/demo.yaml` lines read `visrel_tiny` (`make demo` writes the demo's own data).
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import pytest
from readme_workspace import COMMANDS, REPO, Command, Workspace, classify, readme_commands

from pico_lightning import cli

FLUX_LR, FLUX_REFERENCE_BATCH = 1.0e-4, 4  # experiments/flux_fill.yaml: lr at the reference batch, sqrt scaling


def test_every_readme_command_is_classified():
    unclassified = [f"README.md:{c.line}: {c.text}" for c in COMMANDS if not classify(c)]
    assert not unclassified, "add a class or an ALLOWED entry for:\n" + "\n".join(unclassified)
    assert any(classify(c) == "sbatch" for c in COMMANDS) and any(classify(c) == "torchrun" for c in COMMANDS)


def test_the_parser_joins_continuations_and_drops_comments():
    text = "x\n```bash\na b \\\n    c  # note\n\n# only a comment\nd 'e f'\n```\n```yaml\nnot: run\n```\n"
    assert readme_commands(text) == [Command(3, "a b c"), Command(7, "d 'e f'")]


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
