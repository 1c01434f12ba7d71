"""The routing capture against a dense reference, and the scorer's exactness and cost accounting."""

from dataclasses import replace

import pytest
import torch
from support import sample

from pico_lightning import panels
from pico_lightning.config import EvalConfig, ModelConfig
from pico_lightning.config.presets import PRESETS
from pico_lightning.inference import routing
from pico_lightning.inference.loading import load_inference_model
from pico_lightning.inference.seed_scorer import attention_modules, capture_routing, fill_episode
from pico_lightning.model.backbone import fill_transformer

LAYOUT = panels.Layout(2, 2, 16)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cfg = ModelConfig(preset="small", text_cache_dir=str(tmp_path_factory.mktemp("text")))
    return load_inference_model(cfg, device="cpu")


@pytest.fixture(scope="module")
def episode():
    grid = torch.rand(1, 3, LAYOUT.height, LAYOUT.width, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return grid, panels.target_mask(LAYOUT)[None]


def test_token_panels_2x2():
    ids = routing.token_panels(LAYOUT, scale_factor=2)  # 4x4 tokens per panel, 8x8 tokens in all
    assert ids.shape == (64,) and torch.bincount(ids).tolist() == [16, 16, 16, 16]
    assert ids.view(8, 8)[0, :4].eq(0).all() and ids.view(8, 8)[7, 7] == 3


class DenseReference(routing.RoutingCapture):
    """Also keeps the full attention map, to check the chunked reduction against."""

    maps: list

    def record(self, query, key):
        super().record(query, key)
        q, k = query.transpose(1, 2).float(), key.transpose(1, 2).float()
        self.maps = [*getattr(self, "maps", []), (q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5).softmax(-1)]


def test_capture_equals_dense_reference(model, episode):
    grid, mask = episode
    text = model.text("Segment")
    panels_of_tokens = routing.token_panels(LAYOUT, 2)
    capture = DenseReference(panels_of_tokens, LAYOUT.num_panels, text.prompt_embeds.shape[1], chunk=5)
    module = model.parts.transformer.transformer_blocks[0].attn
    original = module.processor
    module.set_processor(capture)
    try:
        fill_episode(model, grid, mask, text, 2, 30.0, [0, 1], LAYOUT, None)
    finally:
        module.set_processor(original)
    assert len(capture.maps) == 2  # one call per step
    text_len = text.prompt_embeds.shape[1]
    groups = torch.cat([torch.zeros(text_len, dtype=torch.long), 1 + panels_of_tokens])
    mass, entropy = routing.mean_routing([capture])
    for p in (1, 3):  # the output panels A', B' (the input panels' rows are not computed)
        rows = [m[:, :, text_len:][:, :, panels_of_tokens == p] for m in capture.maps]  # (S, H, n, T) per call
        for g in range(5):
            expected = torch.stack([r[..., groups == g].sum(-1).mean(dim=(1, 2)) for r in rows]).mean(0)
            assert torch.allclose(mass[:, p, g], expected, atol=1e-5)
        dense_entropy = torch.stack([-(r * r.log()).sum(-1).mean(dim=(1, 2)) for r in rows]).mean(0)
        assert torch.allclose(entropy[:, p], dense_entropy, atol=1e-4)
    assert torch.allclose(mass[:, 1::2].sum(-1), torch.ones(1, 2), atol=1e-5)


def test_single_seed_scorer_reproduces_plain_sampler(model, episode):
    grid, mask = episode
    text = model.text("Edit")
    parts = model.parts
    plain, _ = sample(parts.transformer, parts.autoencoder, parts.scheduler, grid, mask, text, 6, 30.0, 5)
    scored, report = fill_episode(model, grid, mask, text, 6, 30.0, [5], LAYOUT, EvalConfig(num_steps=6))
    assert torch.equal(plain, scored)
    assert report["chosen_seed"] == 5 and report["model_evaluations"] == 6


@pytest.mark.parametrize("score", routing.SCORES)
def test_scorer_cost_and_choice(model, episode, score):
    grid, mask = episode
    cfg = EvalConfig(num_steps=8, scorer_steps=2, num_seeds=4, routing_score=score, score_blocks=[0, 2])
    image, report = fill_episode(model, grid, mask, model.text(""), 8, 30.0, [0, 1, 2, 3], LAYOUT, cfg)
    assert image.shape == (1, 3, LAYOUT.height, LAYOUT.width)
    assert report["model_evaluations"] == 4 * 2 + (8 - 2)
    scores = torch.tensor(report["scores"])
    assert torch.isfinite(scores).all() and report["chosen_seed"] == int(scores.argmax())


def test_processors_restored_and_bad_blocks(model):
    transformer = model.parts.transformer
    before = [b.attn.processor for b in transformer.transformer_blocks]
    with capture_routing(transformer, [], LAYOUT, 2, 4) as captures:
        assert len(captures) == len(before)
    assert [b.attn.processor for b in transformer.transformer_blocks] == before
    with pytest.raises(ValueError, match="score_blocks"), capture_routing(transformer, [9], LAYOUT, 2, 4):
        pass


def test_default_blocks_are_the_last_four_double_blocks():
    preset = PRESETS["tiny"]
    six_double = replace(preset, transformer={**preset.transformer, "num_layers": 6})
    transformer = fill_transformer(six_double, latent_channels=12, scale_factor=2)
    expected = [b.attn for b in transformer.transformer_blocks[2:]]
    assert attention_modules(transformer, []) == expected
    assert attention_modules(transformer, [6]) == [transformer.single_transformer_blocks[0].attn]


def test_compiled_blocks_score_and_sample_as_eager(model, episode, tmp_path, monkeypatch):
    """eval.compile: the seed scorer's capture processors and the finishing steps run inside compiled blocks (Dynamo's
    eager backend here, to stay fast; inductor on a GPU) and pick and paint what the eager model does."""
    from functools import partial

    from pico_lightning.inference import loading
    from pico_lightning.model import compilation

    monkeypatch.setattr(compilation, "compile_blocks", partial(compilation.compile_blocks, backend="eager"))
    cfg = ModelConfig(preset="small", text_cache_dir=str(tmp_path / "text"))
    compiled = loading.load_inference_model(cfg, device="cpu", compile=True)
    assert all(block._compiled_call_impl is not None for block in compiled.parts.transformer.transformer_blocks)
    grid, mask = episode
    scorer = EvalConfig(num_steps=6, scorer_steps=2, num_seeds=3, score_blocks=[0, 2])
    runs = [fill_episode(m, grid, mask, m.text("Edit"), 6, 30.0, [0, 1, 2], LAYOUT, scorer) for m in (model, compiled)]
    (eager_image, eager_report), (image, report) = runs
    assert report["chosen_seed"] == eager_report["chosen_seed"]
    assert torch.allclose(torch.tensor(report["scores"]), torch.tensor(eager_report["scores"]), atol=1e-5)
    assert torch.allclose(image, eager_image, atol=1e-5)
