"""Inference: the Fill sampler and the attention-guided seed scorer."""
