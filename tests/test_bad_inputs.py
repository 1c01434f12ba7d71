"""Bad input for every command: one clear line naming the thing, exit 2, no traceback, nothing written lost."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pico_lightning import cli


@pytest.fixture
def pictures(tmp_path):
    paths = []
    for name in ("a", "a_out", "b"):
        Image.fromarray(np.full((16, 16, 3), 100, dtype=np.uint8)).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    (tmp_path / "tiny.yaml").write_text("model:\n  pretrained_dir: ''\n")  # the tiny in-process base
    return paths


def fails(capsys, argv, *needles):
    """The command exits 2 with exactly one stderr line containing every needle, and no traceback."""
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def infer_args(pictures, tmp_path, *extra):
    return [
        "infer",
        "--exemplar",
        *pictures[:2],
        "--query",
        pictures[2],
        "--out",
        str(tmp_path / "o.png"),
        "--steps",
        "2",
        f"model.text_cache_dir={tmp_path / 'text'}",
        *extra,
    ]


def tiny(tmp_path) -> list[str]:
    return ["--config", str(tmp_path / "tiny.yaml")]


def test_infer_missing_and_corrupt_images(capsys, tmp_path, pictures):
    missing = [pictures[0], str(tmp_path / "nope.png"), pictures[2]]
    fails(capsys, infer_args(missing, tmp_path, *tiny(tmp_path)), "nope.png", "not found")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    cut = [str(tmp_path / "cut.png"), *pictures[1:]]
    fails(capsys, infer_args(cut, tmp_path, *tiny(tmp_path)), "cut.png", "not a readable image")


def test_infer_odd_modes_are_accepted(capsys, tmp_path, pictures):
    Image.new("P", (20, 12)).save(tmp_path / "p.png")
    Image.fromarray(np.full((9, 7), 40000, dtype=np.uint16)).save(tmp_path / "i16.png")
    Image.new("LA", (5, 5)).save(tmp_path / "la.png")
    files = [str(tmp_path / n) for n in ("p.png", "i16.png", "la.png")]
    assert cli.main(infer_args(files, tmp_path, *tiny(tmp_path))) == 0
    assert Image.open(tmp_path / "o.png").size == (5, 5)  # B' at the query's own size
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["panel_size"] == 32 and report["output_size"] == [5, 5]


def test_infer_size_that_does_not_pack(capsys, tmp_path, pictures):
    fails(capsys, infer_args(pictures, tmp_path, *tiny(tmp_path), "--panel-size", "20"), "nearest valid panel sizes")


def test_infer_incomplete_model_dir(capsys, tmp_path, pictures, tiny_flux_dir):
    partial = tmp_path / "flux"
    partial.mkdir()
    (partial / "transformer").symlink_to(tiny_flux_dir / "transformer")
    fails(capsys, infer_args(pictures, tmp_path) + ["--model-dir", str(partial)], "incomplete", "vae", "tokenizer_2")
    fails(capsys, infer_args(pictures, tmp_path) + ["--model-dir", str(tmp_path / "none")], "model.pretrained_dir")


def test_infer_lora_for_another_model(capsys, tmp_path, pictures):
    cli.configure_environment()  # as `pico` does before importing the libraries: they stay quiet
    from pico_lightning.config import LoraConfig, ModelConfig
    from pico_lightning.model.backbone import build_parts
    from pico_lightning.model.lora import add_lora, export_lora

    other = build_parts(ModelConfig(preset="small"))
    add_lora(other.transformer, LoraConfig(rank=2))
    export_lora(other.transformer, tmp_path / "lora")
    fails(capsys, infer_args(pictures, tmp_path, *tiny(tmp_path), "--lora", str(tmp_path / "lora")), "does not fit")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.lrr=1", "train.lrr"),
        ("train.max_steps=-2", "train.max_steps"),
        ("train.max_steps=ten", "max_steps"),
        ("data.panel_size=20", "nearest valid panel sizes"),
    ],
)
def test_train_bad_config(capsys, tmp_path, override, needle):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"train:\n  batch_size: 4\nrun:\n  dir: {tmp_path / 'runs'}\n")
    fails(capsys, ["train", str(experiment), override], needle, "exp.yaml")
    assert not (tmp_path / "runs").exists()


def test_train_batch_that_does_not_divide_the_world(capsys, tmp_path):
    """Checked when a world trains (not at load, so `pico embed` and --print-config work for any world)."""
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"train:\n  batch_size: 4\nrun:\n  dir: {tmp_path / 'runs'}\n")
    fails(capsys, ["train", str(experiment), "train.devices=3"], "train.batch_size", "devices*num_nodes=3")
    assert not (tmp_path / "runs").exists()


def test_train_missing_experiment_and_data(capsys, tmp_path):
    fails(capsys, ["train", str(tmp_path / "missing.yaml")], "missing.yaml", "not found")
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"data:\n  root: {tmp_path / 'nodata'}\nrun:\n  dir: {tmp_path / 'runs'}\n")
    fails(capsys, ["train", str(experiment), "eval.suites=[]", "logging.wandb_mode=disabled"], "data.root", "nodata")


def test_train_corrupt_shard_dir(capsys, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "visrel-000000.tar").write_bytes(b"garbage")
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"data:\n  root: {data}\nrun:\n  dir: {tmp_path / 'runs'}\n")
    argv = ["train", str(experiment), "logging.wandb_mode=disabled", "eval.suites=[]"]
    fails(capsys, argv, "without a readable sample")


def test_export_and_eval_missing_or_corrupt_run(capsys, tmp_path):
    fails(capsys, ["export", str(tmp_path / "norun"), "--out", str(tmp_path / "x")], "norun")
    fails(capsys, ["eval", str(tmp_path / "norun")], "not a run directory")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("train:\n  max_steps: 3\n")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04truncated")
    fails(capsys, ["export", str(run), "--out", str(tmp_path / "x")], "last.ckpt", "unreadable checkpoint")
    fails(capsys, ["eval", str(run)], "no lora/", "pico export")  # an unfinished run: its LoRA is not written yet


def test_sweep_and_report_bad_input(capsys, tmp_path):
    fails(capsys, ["sweep", str(tmp_path / "none.yaml"), "--dry-run"], "none.yaml")
    fails(capsys, ["report", str(tmp_path / "nosweep")], "nosweep")


def test_prep_bad_input(capsys, tmp_path):
    fails(capsys, ["prep", "visrel-lite", "--out", str(tmp_path / "d"), "--samples-per-task", "1"], "samples-per-task")
    fails(capsys, ["prep", "folders", str(tmp_path / "raw"), "--out", str(tmp_path / "d")], "raw")


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: argument errors must be caught before it."""
    cli.configure_environment()  # as `pico` does before importing the libraries: they stay quiet
    from pico_lightning.inference import loading

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(loading, "load_inference_model", refuse)


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--panel-size", "-16"], ["--panel-size", "positive"]),
        (["--panel-size", "0"], ["--panel-size"]),
        (["--seeds", "3", "--steps", "1"], ["--steps", "eval.scorer_steps=2"]),
        (["--seeds", "0"], ["--seeds"]),
        (["--guidance", "nan"], ["--guidance", "finite"]),
        (["--guidance", "inf"], ["--guidance", "finite"]),
    ],
)
def test_infer_bad_flags_fail_before_the_model_loads(capsys, tmp_path, pictures, no_model, extra, needles):
    fails(capsys, infer_args(pictures, tmp_path, *tiny(tmp_path), *extra), *needles)
    assert not (tmp_path / "o.png").exists()


def test_infer_out_never_overwrites_an_input_and_must_be_writable(capsys, tmp_path, pictures, no_model):
    def with_out(out: str) -> list[str]:
        argv = infer_args(pictures, tmp_path, *tiny(tmp_path))
        argv[argv.index("--out") + 1] = out
        return argv

    before = [Image.open(p).tobytes() for p in pictures]
    (tmp_path / "link.png").symlink_to(pictures[0])
    fails(capsys, with_out(pictures[2]), "would overwrite --query")
    fails(capsys, with_out(str(tmp_path / "sub" / ".." / "a_out.png")), "would overwrite --exemplar")
    fails(capsys, with_out(str(tmp_path / "link.png")), "would overwrite --exemplar")
    assert [Image.open(p).tobytes() for p in pictures] == before
    fails(capsys, with_out(str(tmp_path / "result")), "--out", ".png")
    fails(capsys, with_out(str(tmp_path)), "--out")  # a directory
    fails(capsys, with_out(str(tmp_path / "a.png" / "o.png")), "--out", "is a file")  # its directory is a file
    fails(capsys, with_out("/proc/self/no/o.png"), "--out", "cannot write")  # cannot be made (root ignores modes)


def test_infer_and_eval_need_a_model_and_a_finished_run(capsys, tmp_path, pictures, no_model):
    fails(capsys, infer_args(pictures, tmp_path), "no model", "--run", "--model-dir", "--config")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("train:\n  max_steps: 3\n")
    fails(capsys, infer_args(pictures, tmp_path, "--run", str(run)), "no lora/", "pico export")
    fails(capsys, ["eval", str(run)], "no lora/", "pico export")


def test_a_truncated_lora_is_unreadable_said_once_and_exports_are_world_readable(capsys, tmp_path, pictures):
    import os

    cli.configure_environment()  # as `pico` does before importing the libraries: they stay quiet
    from pico_lightning.config import LoraConfig, ModelConfig
    from pico_lightning.model.backbone import build_parts
    from pico_lightning.model.lora import add_lora, export_lora

    parts = build_parts(ModelConfig())
    add_lora(parts.transformer, LoraConfig(rank=2))
    file = export_lora(parts.transformer, tmp_path / "lora")
    umask = os.umask(0)
    os.umask(umask)
    assert file.stat().st_mode & 0o777 == 0o666 & ~umask  # 0644 under the usual umask 022, not 0600
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    err = fails(capsys, infer_args(pictures, tmp_path, *tiny(tmp_path), "--lora", str(file)), "unreadable LoRA")
    assert err.count(str(file)) == 1 and "does not fit" not in err


def test_debug_is_accepted_anywhere_on_the_line(capsys, tmp_path):
    from pico_lightning.errors import UserError

    with pytest.raises(UserError, match="nosweep"):
        cli.main(["report", str(tmp_path / "nosweep"), "--debug"])
    with pytest.raises(UserError, match="nosweep"):
        cli.main(["--debug", "report", str(tmp_path / "nosweep")])


@pytest.mark.parametrize(
    ("error", "needles"),
    [
        (OSError(28, "No space left on device", "/data/x.tar"), ["/data/x.tar", "No space left"]),
        (json.JSONDecodeError("Expecting value", "{", 0), ["JSONDecodeError", "Expecting value"]),
        (KeyError("shards"), ["KeyError", "shards"]),
        (ValueError("bad\nsecond line"), ["ValueError: bad", "--debug"]),
    ],
)
def test_library_errors_at_the_cli_boundary_are_one_line(capsys, monkeypatch, tmp_path, error, needles):
    from pico_lightning.commands import report

    def raise_it(args):
        raise error

    monkeypatch.setattr(report, "run", raise_it)
    fails(capsys, ["report", str(tmp_path)], *needles)


def test_overrides_must_be_key_value_and_lists_look_like_lists(capsys, tmp_path):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"run:\n  dir: {tmp_path / 'runs'}\n")
    fails(capsys, ["train", str(experiment), "train.max_steps", "5"], "key=value", "did you mean train.max_steps=5")
    fails(capsys, ["train", str(experiment), "eval.suites=held_in"], "eval.suites: expected a list like [held_in]")
    fails(capsys, ["train", str(experiment), "eval.suites=[held_in"], "eval.suites", "cannot parse")
    assert not (tmp_path / "runs").exists()


def test_out_naming_a_file_is_refused_before_any_work(capsys, tmp_path):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    run = tmp_path / "run"
    (run / "lora").mkdir(parents=True)
    (run / "config.yaml").write_text("train:\n  max_steps: 3\n")
    fails(capsys, ["export", str(run), "--out", str(taken)], "--out", "is a file")
    fails(capsys, ["eval", str(run), "--out", str(taken)], "--out", "is a file")
    fails(capsys, ["sweep", "experiments/ablations/text.yaml", "--dry-run", "--out", str(taken)], "--out", "is a file")
    fails(capsys, ["report", str(tmp_path), "--out", str(taken)], "--out", "is a file")
    assert taken.read_text() == "mine"


@pytest.mark.parametrize(
    "argv", [["infer", "--exemplar", "a.png"], ["nosuchcommand"], ["prep", "visrel-lite", "--out", "d", "--size", "x"]]
)
def test_usage_errors_are_one_line_too(capsys, argv):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and len(err.splitlines()) == 1 and "--help" in err, err


def test_an_experiment_that_is_not_a_mapping_and_a_missing_lora(capsys, tmp_path, pictures, no_model):
    experiment = tmp_path / "list.yaml"
    experiment.write_text("- train\n- data\n")
    fails(capsys, ["train", str(experiment)], "list.yaml", "expected a mapping of sections")
    fails(capsys, infer_args(pictures, tmp_path, *tiny(tmp_path), "--lora", str(tmp_path / "gone")), "--lora", "gone")


@pytest.mark.parametrize("plan", ["{not json", "[]", '{"runs": [{"params": {}}]}'])
def test_report_on_a_garbage_sweep_plan(capsys, tmp_path, plan):
    (tmp_path / "sweep.json").write_text(plan)
    fails(capsys, ["report", str(tmp_path)], "sweep.json")


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("train:\n\tmax_steps: 5\n", ["line 2, column 1", "found character '\\t' that cannot start any token"]),
        ("train:\n  max_steps: 5\n  max_steps: 6\n", ["line 3, column 3", "duplicate key 'max_steps'"]),
        ("train: [unclosed\n", ["line 2, column 1", "expected ',' or ']'"]),
    ],
)
def test_yaml_syntax_errors_name_file_line_column_and_cause(capsys, tmp_path, text, needles):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(text)
    fails(capsys, ["train", str(experiment), "--print-config"], "exp.yaml: line", *needles)
    ablation = tmp_path / "ablation.yaml"
    ablation.write_text(text.replace("train", "sweep"))
    fails(capsys, ["sweep", str(ablation), "--dry-run"], "ablation.yaml: line", needles[0])


def test_an_empty_sweep_grid_is_refused(capsys, tmp_path):
    ablation = tmp_path / "ablation.yaml"
    ablation.write_text("sweep:\n  name: x\n  base: experiments/demo.yaml\n  grid: {}\n")
    fails(capsys, ["sweep", str(ablation), "--dry-run"], "ablation.yaml", "sweep.grid: expected at least one key")


def test_export_and_eval_of_something_that_is_not_a_run_directory(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "nocfg" / "checkpoints").mkdir(parents=True)
    for name, needle in [("missing", "no such directory"), ("empty", "no config.yaml"), ("nocfg", "no config.yaml")]:
        run = str(tmp_path / name)
        fails(capsys, ["export", run, "--out", str(tmp_path / "x")], f"{run}: ", needle, "`pico train` writes")
        fails(capsys, ["eval", run], f"{run}: ", needle, "`pico train` writes")
    assert not (tmp_path / "x").exists()


def test_a_prompt_longer_than_the_token_length_warns_once_with_the_tokens_kept(caplog):
    from pico_lightning.config import ModelConfig
    from pico_lightning.model.backbone import build_text_encoders
    from pico_lightning.model.text import encode_prompts

    encoders = build_text_encoders(ModelConfig())
    long = " ".join(["edit the image"] * 40)  # > 77 CLIP and > 32 T5 tokens
    with caplog.at_level("WARNING", logger="pico_lightning.model.text"):
        encode_prompts(encoders, ["short", long, long + " again"], max_sequence_length=32)
    ours = [record for record in caplog.records if record.name == "pico_lightning.model.text"]  # not the tokenizers'
    messages = [record.getMessage() for record in ours]
    assert len(messages) == 2, messages  # one per encoder, not one per prompt
    assert "2 prompt(s) longer than CLIP's 77 tokens: only the first 77 tokens are kept" in messages[0]
    assert "T5's 32 tokens (model.max_sequence_length): only the first 32 tokens are kept" in messages[1]
    caplog.clear()
    encode_prompts(encoders, ["short"], max_sequence_length=32)
    assert not [record for record in caplog.records if record.name == "pico_lightning.model.text"]


def test_a_refused_train_leaves_no_run_directory_behind(capsys, tmp_path):
    a_file = tmp_path / "data.txt"
    a_file.write_text("not a dataset")
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(f"data:\n  root: {a_file}\nrun:\n  dir: {tmp_path / 'runs' / 'mine'}\n  name: r\n")
    argv = ["train", str(experiment), "logging.wandb_mode=disabled", "eval.suites=[]"]
    fails(capsys, argv, "data.root")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt", "exp.yaml"]  # runs/mine/r made, then removed
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "other").mkdir()
    fails(capsys, argv, "data.root")
    assert [p.name for p in (tmp_path / "runs" / "mine").iterdir()] == ["other"]  # what existed stays


def test_a_panel_size_past_the_schedulers_shift_is_refused_naming_the_limit(capsys, tmp_path, pictures):
    base = Path(__file__).resolve().parents[1] / "assets" / "tiny-fill-base"  # the demo's base: scale-2 autoencoder
    (tmp_path / "demo.yaml").write_text(f"model:\n  pretrained_dir: {base}\n")
    demo = ["--config", str(tmp_path / "demo.yaml")]
    fails(
        capsys, infer_args(pictures, tmp_path, *demo, "--panel-size", "4096"), "--panel-size: 4096", "at most 1440 px"
    )
    import torch  # diffusers after the command: its import reads the verbosity the command sets
    from diffusers import FlowMatchEulerDiscreteScheduler

    from pico_lightning.inference.sampler import largest_panel_size, make_scheduler

    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(base, subfolder="scheduler")
    largest = largest_panel_size(2, 2, 2, scheduler.config)
    assert largest == 1440
    edge = make_scheduler(scheduler, 2, (largest, largest), torch.device("cpu"))  # latent side 2P/2 = P
    assert torch.isfinite(edge.sigmas).all()
    past = make_scheduler(scheduler, 2, (largest + 8, largest + 8), torch.device("cpu"))  # the next packable size
    assert not torch.isfinite(past.sigmas).all()  # NaN sigmas: a silent garbage image, without the check
    with pytest.raises(OverflowError):  # the demo's 4096 px: math.exp itself overflows
        make_scheduler(scheduler, 2, (4096, 4096), torch.device("cpu"))
