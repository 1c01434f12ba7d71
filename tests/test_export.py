"""LoRA export round-trips through stock diffusers; `pico infer --lora` equals the stock pipeline with it."""

import numpy as np
import pytest
import torch
from conftest import embedded, quiet_trainer
from diffusers import FluxFillPipeline
from PIL import Image
from support import fixed_loader

from pico_lightning import cli, panels
from pico_lightning.config import load_config
from pico_lightning.model.lora import export_lora, load_lora
from pico_lightning.training.train import build_module


@pytest.fixture(scope="module")
def trained(tiny_flux_dir, tmp_path_factory):
    """A module on the tiny FLUX.1-Fill directory, LoRA rank 4 / alpha 8 (alpha != rank), after 3 steps."""
    tmp = tmp_path_factory.mktemp("export")
    cfg = load_config(
        None,
        [
            f"model.pretrained_dir={tiny_flux_dir}",
            "lora.rank=4",
            "lora.alpha=8",
            "data.panel_size=16",
            "train.lr=1e-2",
            f"model.text_cache_dir={tmp / 'text'}",
        ],
    )
    module = build_module(embedded(cfg), ["", "Edit"])
    quiet_trainer(max_steps=3).fit(module, fixed_loader(panel_size=16))
    assert any(p.abs().sum() > 0 for n, p in module.named_parameters() if "lora_B" in n)  # the LoRA is not a no-op
    return module, export_lora(module.transformer, tmp / "lora").parent, tmp


def _inputs(transformer):
    generator = torch.Generator().manual_seed(0)
    tokens, text = 16, 5
    return dict(
        hidden_states=torch.randn(1, tokens, transformer.config.in_channels, generator=generator),
        timestep=torch.tensor([0.7]),
        guidance=torch.tensor([30.0]),
        pooled_projections=torch.randn(1, transformer.config.pooled_projection_dim, generator=generator),
        encoder_hidden_states=torch.randn(1, text, transformer.config.joint_attention_dim, generator=generator),
        txt_ids=torch.zeros(text, 3),
        img_ids=torch.rand(tokens, 3, generator=generator) * 4,
        return_dict=False,
    )


def test_stock_load_lora_weights_reproduces_module(trained, tiny_flux_dir):
    module, lora_dir, _ = trained
    pipe = FluxFillPipeline.from_pretrained(tiny_flux_dir, local_files_only=True)
    pipe.load_lora_weights(lora_dir)
    with torch.no_grad():
        ours = module.transformer(**_inputs(module.transformer))[0]
        theirs = pipe.transformer(**_inputs(pipe.transformer))[0]
        base = FluxFillPipeline.from_pretrained(tiny_flux_dir, local_files_only=True).transformer(
            **_inputs(pipe.transformer)
        )[0]
    assert (ours - theirs).abs().max() <= 1e-6
    assert (ours - base).abs().max() > 1e-4  # and the LoRA changes the output


def test_pico_infer_with_lora_equals_stock_pipeline(trained, tiny_flux_dir):
    _, lora_dir, tmp = trained
    rng = np.random.default_rng(1)
    files = []
    for name in ("a", "a_out", "b"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp / f"{name}.png")
        files.append(str(tmp / f"{name}.png"))
    out = tmp / "out" / "b_out.png"
    code = cli.main(
        [
            "infer",
            "--model-dir",
            str(tiny_flux_dir),
            "--lora",
            str(lora_dir),
            "--exemplar",
            *files[:2],
            "--query",
            files[2],
            "--out",
            str(out),
            "--steps",
            "3",
            "--seed",
            "7",
            "--prompt",
            "Edit",
            "--panel-size",
            "16",
            f"model.text_cache_dir={tmp / 'text'}",
        ]
    )
    assert code == 0 and out.with_suffix(".json").is_file() and out.with_suffix(".grid.png").is_file()
    layout = panels.Layout(2, 2, 16)
    grid = panels.compose_grid([Image.open(f) for f in files] + [None], layout)
    pipe = FluxFillPipeline.from_pretrained(tiny_flux_dir, local_files_only=True)
    pipe.load_lora_weights(lora_dir)
    pipe.set_progress_bar_config(disable=True)
    mask = Image.fromarray((panels.target_mask(layout)[0].numpy() * 255).astype(np.uint8))
    image = pipe(
        prompt="Edit",
        image=panels.to_pil(grid),
        mask_image=mask,
        height=32,
        width=32,
        num_inference_steps=3,
        guidance_scale=30.0,
        generator=torch.Generator().manual_seed(7),
    ).images[0]
    expected = np.asarray(image)[16:, 16:]
    assert np.abs(np.asarray(Image.open(out)).astype(int) - expected.astype(int)).max() <= 1


def test_inference_fuses_the_lora_into_the_base(trained, tiny_flux_dir):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from pico_lightning.config import ModelConfig
    from pico_lightning.inference.loading import load_inference_model

    module, lora_dir, _ = trained
    model = load_inference_model(ModelConfig(pretrained_dir=str(tiny_flux_dir)), lora_dir, device="cpu")
    layers = [m for m in model.parts.transformer.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and all(layer.merged for layer in layers)
    with torch.no_grad():
        fused = model.parts.transformer(**_inputs(model.parts.transformer))[0]
        unfused = module.transformer(**_inputs(module.transformer))[0]
    torch.testing.assert_close(fused, unfused, atol=1e-5, rtol=1e-5)


def test_lora_for_another_model_is_refused(trained, tmp_path):
    from pico_lightning.config import ModelConfig
    from pico_lightning.errors import UserError
    from pico_lightning.model.backbone import build_parts

    _, lora_dir, _ = trained
    other = build_parts(ModelConfig(preset="small"))  # another width
    with pytest.raises(UserError, match="does not fit"):
        load_lora(other.transformer, lora_dir)
