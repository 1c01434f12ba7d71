"""Model parts: the FLUX.1-Fill DiT, autoencoders, Fill conditioning, text embeddings and LoRA."""
