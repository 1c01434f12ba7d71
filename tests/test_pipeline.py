"""The Python surface: `pico_lightning.train`, `PicoPipeline` (its docstring example equals `pico infer`), and the
LoRA card's stock-diffusers snippet (equals `pico infer` too), on one tiny finished run over a saved FLUX.1-Fill
directory."""

import json
import re
import textwrap

import numpy as np
import pytest
from PIL import Image

import pico_lightning
from pico_lightning import cli, pipeline


@pytest.fixture(scope="module")
def finished_run(visrel_tiny, tiny_flux_dir, tmp_path_factory):
    """`pico_lightning.train` on experiments/demo.yaml over the tiny FLUX.1-Fill directory: 2 steps, nothing
    embedded beforehand, one final evaluation."""
    tmp = tmp_path_factory.mktemp("pipeline")
    run_dir = pico_lightning.train(
        "experiments/demo.yaml",
        overrides=[
            f"data.root={visrel_tiny}",
            f"model.pretrained_dir={tiny_flux_dir}",
            "data.panel_size=16",
            "data.num_workers=0",
            "data.epoch_batches=4",
            "train.accelerator=cpu",
            "train.batch_size=2",
            "train.max_steps=2",
            "train.checkpoint_every=2",
            "eval.every_n_steps=0",
            "eval.suites=[segmentation]",
            "eval.episodes_per_suite=2",
            "eval.num_steps=3",
            "eval.num_seeds=2",
            "eval.scorer_steps=1",
            "logging.wandb_mode=disabled",
            f"model.text_cache_dir={tmp / 'text'}",
            f"run.dir={tmp / 'runs'}",
            "run.name=py",
        ],
    )
    return run_dir, tmp


@pytest.fixture(scope="module")
def pictures(finished_run):
    """A, A', B at the panel size (16 px), so the stock snippet's PIL resizing is the identity."""
    _, tmp = finished_run
    rng = np.random.default_rng(3)
    paths = []
    for name in ("a", "a_out", "b"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp / f"{name}.png")
        paths.append(str(tmp / f"{name}.png"))
    return paths


def pico_infer(run_dir, pictures, out, *flags) -> np.ndarray:
    argv = ["infer", "--run", str(run_dir), "--exemplar", *pictures[:2], "--query", pictures[2], "--out", str(out)]
    assert cli.main([*argv, *flags]) == 0
    return np.asarray(Image.open(out))


def test_train_from_python_embeds_then_fits(finished_run):
    run_dir, _ = finished_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == 2 and "eval/segmentation/miou" in summary["eval"]
    assert (run_dir / "lora" / "pytorch_lora_weights.safetensors").is_file()


def test_docstring_example_equals_pico_infer(finished_run, pictures):
    run_dir, tmp = finished_run
    example = re.search(r"::\n\n((?:    .*\n)+)", pipeline.__doc__).group(1)
    code = textwrap.dedent(example)
    assert code.count("\n") == 3  # import, from_run, call
    code = code.replace('"outputs/demo/runs/demo"', repr(str(run_dir)))
    code = code.replace('("a.png", "a_out.png")', repr(tuple(pictures[:2]))).replace('"b.png"', repr(pictures[2]))
    scope: dict = {}
    exec(code, scope)
    out = scope["out"]
    expected = pico_infer(run_dir, pictures, tmp / "cli" / "b.png", "--seeds", "4")
    assert np.array_equal(np.asarray(out.image), expected)
    assert np.array_equal(np.asarray(out.grid), np.asarray(Image.open(tmp / "cli" / "b.grid.png")))
    written = json.loads((tmp / "cli" / "b.json").read_text())
    assert {k: v for k, v in out.report.items() if k != "seconds"} == {
        k: v for k, v in written.items() if k != "seconds"
    }
    assert out.report["seeds"] == [0, 1, 2, 3] and out.report["model_evaluations"] == 4 * 1 + (3 - 1)


def test_queries_in_one_call_share_the_model_and_match_single_calls(finished_run, pictures):
    run_dir, tmp = finished_run
    pipe = pico_lightning.PicoPipeline.from_run(run_dir)
    exemplar = [Image.open(p) for p in pictures[:2]]
    queries = [np.asarray(Image.open(pictures[2])), np.asarray(Image.open(pictures[0]))[::-1]]
    batched = pipe(exemplar=exemplar, query=queries, seed=5)
    single = [pipe(exemplar=exemplar, query=q, seed=5) for q in queries]
    for together, alone in zip(batched, single, strict=True):
        # a batch of 2 may sum in another order than a batch of 1 on several threads: one level of 255 at most
        difference = np.abs(np.asarray(together.image, dtype=int) - np.asarray(alone.image, dtype=int))
        assert difference.max() <= 1
        assert together.report["chosen_seed"] == 5 and together.report["model_evaluations"] == 3
    metrics = pipe.evaluate(tmp / "ev", suites=["segmentation"])  # `pico eval` on the loaded model
    assert metrics["eval/segmentation/episodes"] == 2 and (tmp / "ev" / "gallery.png").is_file()


def test_lora_card_snippet_reproduces_pico_infer(finished_run, pictures, tiny_flux_dir, monkeypatch):
    run_dir, tmp = finished_run
    card = (run_dir / "lora" / "README.md").read_text()
    assert "## Final evaluation (step 2)" in card and "eval/segmentation/miou" in card
    assert "rank 16, alpha 16.0" in card and "3 steps" in card and "2 candidate seeds" in card
    snippet = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    assert f'MODEL_DIR = "{tiny_flux_dir}"' in snippet  # the run's base: no substitution needed here
    inputs = 'A, A_OUT, B = "a.png", "a_out.png", "b.png"'
    assert inputs in snippet
    monkeypatch.chdir(tmp)  # the snippet writes b_out.png into the working directory
    exec(snippet.replace(inputs, f"A, A_OUT, B = {pictures[0]!r}, {pictures[1]!r}, {pictures[2]!r}"), {})
    expected = pico_infer(run_dir, pictures, tmp / "one" / "b.png", "--seeds", "1", "--seed", "0")
    assert np.array_equal(np.asarray(Image.open(tmp / "b_out.png")), expected)
