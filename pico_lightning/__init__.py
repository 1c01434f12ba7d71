"""PICO: visual in-context learning with a LoRA-tuned FLUX.1-Fill diffusion transformer, on Lightning.

The Python entrances, imported on first use (so `import pico_lightning` and `pico --help` stay fast)::

    from pico_lightning import PicoPipeline
    pipe = PicoPipeline.from_run("outputs/demo/runs/demo")
    out = pipe(exemplar=("a.png", "a_out.png"), query="b.png")  # out.image, out.grid, out.report

    run_dir = pico_lightning.train("experiments/demo.yaml", overrides=["train.max_steps=50"])
"""

__version__ = "0.1.0"
__all__ = ["PicoPipeline", "PicoResult", "train"]

_LAZY = {
    "PicoPipeline": "pico_lightning.pipeline",
    "PicoResult": "pico_lightning.pipeline",
    "train": "pico_lightning.training.entry",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pico_lightning' has no attribute {name!r}")
