"""Named architectures of the in-process (random-init) base, chosen by ``model.preset`` when no directory is given.

``tiny``: the smallest FLUX.1-Fill DiT (tests: milliseconds on CPU) over the lossless PixelShuffle autoencoder;
``tiny-kl``: the same over a small AutoencoderKL with FLUX's scale 8 (a stand-in for real weights in tests);
``small``: two double-stream and two single-stream blocks, 4 heads of 32 (1.86 M parameters; tests that need
several blocks of a kind; the demo's shipped base has this architecture);
``flux-fill-dev``: FLUX.1-Fill-dev's exact geometry (11.97 B parameters; FLUX's VAE), for GPU benchmarks and
smoke runs without the real weights. No import of torch here: the config validates names against ``PRESETS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    """A Fill DiT (FluxTransformer2DModel arguments besides its in/out channels) and its autoencoder."""

    transformer: dict = field(default_factory=dict)
    autoencoder: str = "pixel_shuffle"  # pixel_shuffle | small_kl | flux_kl
    pixel_shuffle_scale: int = 2
    max_sequence_length: int = 32  # T5 tokens per prompt when model.max_sequence_length is 0


def _dit(layers: int, singles: int, head_dim: int, heads: int, text: int, pooled: int, rope: tuple) -> dict:
    return dict(
        num_layers=layers,
        num_single_layers=singles,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=text,
        pooled_projection_dim=pooled,
        axes_dims_rope=rope,
    )


PRESETS = {
    "tiny": Preset(_dit(1, 1, 16, 2, 32, 32, (4, 4, 8))),
    "tiny-kl": Preset(_dit(1, 1, 16, 2, 32, 32, (4, 4, 8)), autoencoder="small_kl"),
    "small": Preset(_dit(2, 2, 32, 4, 32, 32, (8, 12, 12)), max_sequence_length=16),
    "flux-fill-dev": Preset(_dit(19, 38, 128, 24, 4096, 768, (16, 56, 56)), "flux_kl", max_sequence_length=512),
}
PIPELINE_MAX_SEQUENCE_LENGTH = 512  # FluxFillPipeline's default, for a pretrained directory
