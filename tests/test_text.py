"""The prompt-embedding cache: exact FluxFillPipeline encodings, keyed by encoder, prompt, length and dtype."""

import torch

from pico_lightning.config import ModelConfig
from pico_lightning.model.backbone import build_text_encoders
from pico_lightning.model.text import TextCache, encode_prompts


def test_cache_hits_need_no_encoder_and_return_the_encoding(tmp_path):
    encoders = build_text_encoders(ModelConfig())
    builds = []

    def load():
        builds.append(1)
        return encoders

    cache = TextCache(tmp_path, "tiny:x", 32, torch.float32)
    first = cache.get(["Segment", "Edit", "Segment"], load)
    assert list(first) == ["Segment", "Edit"] and len(builds) == 1  # one build for all misses
    again = TextCache(tmp_path, "tiny:x", 32, torch.float32).get(["Edit", "Segment"], load)
    assert len(builds) == 1  # hits only: the encoders are never built
    ((embeds, pooled),) = encode_prompts(encoders, ["Edit"], 32)
    assert torch.allclose(again["Edit"][0], embeds, atol=1e-6) and torch.allclose(again["Edit"][1], pooled, atol=1e-6)
    assert again["Edit"][0].shape == (32, 32) and again["Edit"][1].shape == (32,)


def test_cache_key_separates_encoder_length_and_dtype(tmp_path):
    paths = {
        TextCache(tmp_path, identity, length, dtype).path("Edit")
        for identity, length, dtype in [
            ("a", 32, torch.float32),
            ("b", 32, torch.float32),
            ("a", 64, torch.float32),
            ("a", 32, torch.bfloat16),
        ]
    }
    assert len(paths) == 4
