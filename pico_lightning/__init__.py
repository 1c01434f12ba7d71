"""PICO: visual in-context learning with a LoRA-tuned FLUX.1-Fill diffusion transformer, on Lightning."""

__version__ = "0.1.0"
