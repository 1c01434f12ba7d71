"""The LoRA card's front matter names the base and the licence the LoRA inherits from it."""

from __future__ import annotations

import json

import yaml

from pico_lightning.training.lora_card import metadata


def front_matter(text: str) -> dict:
    assert text.startswith("---\n") and text.endswith("\n---")
    return yaml.safe_load(text.strip("-\n"))


def base_dir(tmp_path, **shape) -> str:
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(shape))
    return str(tmp_path)


def test_flux_fill_dev_names_the_hub_model_and_its_non_commercial_licence(tmp_path):
    model_dir = base_dir(tmp_path, num_layers=19, num_single_layers=38, in_channels=384, guidance_embeds=True)
    meta = front_matter(metadata(model_dir, "tiny"))
    assert meta["base_model"] == "black-forest-labs/FLUX.1-Fill-dev" and meta["base_model_relation"] == "adapter"
    assert (meta["license"], meta["license_name"]) == ("other", "flux-1-dev-non-commercial-license")
    assert meta["library_name"] == "diffusers" and "lora" in meta["tags"]


def test_in_process_preset_is_pico_lightnings_random_init_under_apache(tmp_path):
    meta = front_matter(metadata("", "tiny-kl"))
    assert meta["base_model"] == "pico_lightning in-process preset tiny-kl (random init)"
    assert meta["license"] == "apache-2.0"


def test_other_directory_is_named_by_its_path_with_an_unknown_licence(tmp_path):
    model_dir = base_dir(tmp_path, num_layers=1, num_single_layers=1, in_channels=384, guidance_embeds=True)
    meta = front_matter(metadata(model_dir, "tiny"))
    assert meta["base_model"] == f"local directory {model_dir}"
    assert meta["license"] == "other" and meta["license_name"].startswith("unknown")
