"""Attention routing of the grid's panels, captured inside the DiT and reduced on the fly.

A :class:`RoutingCapture` processor replaces FluxAttnProcessor on chosen blocks. It computes the same attention
output (the library's own projection, norm, rotary and dispatch calls, in the same order) and, from the same
queries and keys, the share of each output-panel query's attention (A' and B' for 2x2: what the scores read)
that lands on each key group: the text, and each panel (A, A', B, B'). Queries are processed in chunks, so
memory is O(chunk x tokens) per head and the tokens x tokens map is never kept. What is kept per call:
(S, P, P+1) attention mass and (S, P) entropy, summed over heads and the panel's query tokens.

Scores (higher is better), from the mass averaged over captured blocks, steps and heads:
- ``query_mass``: the target's (B') attention mass on its query panel B, the picture it must transform.
- ``exemplar_mass``: the target's mass on the exemplar outputs A', what the result should look like.
- ``agreement``: 1 - total variation between the target's role-aligned routing
  [text, own input, itself, other inputs, other outputs] and the same vector of each exemplar output
  (B' should route to B the way A' routes to A).
- ``concentration``: minus the mean entropy of the target's attention rows (sharper routing).
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor, apply_rotary_emb, dispatch_attention_fn

from pico_lightning.compat import flux_dispatch_settings, flux_qkv_projections
from pico_lightning.panels import Layout

SCORES = ("query_mass", "exemplar_mass", "agreement", "concentration")


def token_panels(layout: Layout, scale_factor: int) -> torch.Tensor:
    """(L,) panel index of each packed image token (by its top-left pixel), row-major like the packing."""
    pixel_panel = torch.zeros(layout.height, layout.width, dtype=torch.long)
    for index in range(layout.num_panels):
        pixel_panel[layout.cell(index)] = index
    step = 2 * scale_factor  # pixels per packed token side
    return pixel_panel[::step, ::step].reshape(-1)


class RoutingCapture(FluxAttnProcessor):
    """FluxAttnProcessor that also accumulates per-panel attention mass and entropy of the image queries."""

    def __init__(self, panels_of_tokens: torch.Tensor, num_panels: int, text_len: int, chunk: int = 256):
        super().__init__()
        self.num_panels = num_panels
        self.text_len = text_len
        self.chunk = chunk
        self.query_panels = panels_of_tokens  # (L,)
        self.mass = None  # (S, P, P+1) sum over heads and query tokens
        self.entropy = None  # (S, P)
        self.calls = 0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None):
        query, key, value, encoder_query, encoder_key, encoder_value = flux_qkv_projections(
            attn, hidden_states, encoder_hidden_states
        )
        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))
        if attn.added_kv_proj_dim is not None:
            query = torch.cat([attn.norm_added_q(encoder_query.unflatten(-1, (-1, attn.head_dim))), query], dim=1)
            key = torch.cat([attn.norm_added_k(encoder_key.unflatten(-1, (-1, attn.head_dim))), key], dim=1)
            value = torch.cat([encoder_value.unflatten(-1, (-1, attn.head_dim)), value], dim=1)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        self.record(query, key)
        hidden_states = dispatch_attention_fn(
            query, key, value, attn_mask=attention_mask, **flux_dispatch_settings(self)
        )
        hidden_states = hidden_states.flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return hidden_states
        encoder_hidden_states, hidden_states = hidden_states.split_with_sizes(
            [encoder_hidden_states.shape[1], hidden_states.shape[1] - encoder_hidden_states.shape[1]], dim=1
        )
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.contiguous()))
        return hidden_states, attn.to_add_out(encoder_hidden_states.contiguous())

    @torch.no_grad()
    def record(self, query: torch.Tensor, key: torch.Tensor) -> None:
        """Reduce softmax(q k^T / sqrt(d)) of the output panels' image queries (A', B': all the scores use),
        chunk by chunk: q, k (S, T, H, D), text first. Input panels' rows stay zero.

        Per chunk of Q query rows, five kernels over the (S, H, Q, T) map: the logits (one matmul, the scale folded
        into q beforehand), log-softmax, exp, then both reductions as matmuls: mass per key group
        (weights @ one-hot keys) and entropy (-sum_t w_t log w_t as one batched dot product).
        """
        device = query.device
        key_groups = torch.cat([torch.zeros(self.text_len, dtype=torch.long), 1 + self.query_panels]).to(device)
        key_onehot = torch.nn.functional.one_hot(key_groups, self.num_panels + 1).to(torch.float32)  # (T, P+1)
        rows = torch.nonzero(self.query_panels % 2 == 1).squeeze(1)  # tokens of output panels (odd indices)
        query_onehot = torch.nn.functional.one_hot(self.query_panels[rows], self.num_panels).to(device, torch.float32)
        rows = rows.to(device) + self.text_len
        q = query[:, rows].transpose(1, 2).float() * query.shape[-1] ** -0.5  # (S, H, R, D), output rows only
        k_t = key.permute(0, 2, 3, 1).float()  # (S, H, D, T)
        mass = torch.zeros(q.shape[0], self.num_panels, self.num_panels + 1, device=device)
        entropy = torch.zeros(q.shape[0], self.num_panels, device=device)
        for start in range(0, rows.shape[0], self.chunk):
            log_weights = (q[:, :, start : start + self.chunk] @ k_t).log_softmax(dim=-1)  # (S, H, Q, T)
            weights = log_weights.exp()
            owner = query_onehot[start : start + self.chunk]  # (Q, P)
            group_mass = (weights @ key_onehot).sum(1)  # (S, Q, P+1), summed over heads
            row_entropy = -(weights.unsqueeze(-2) @ log_weights.unsqueeze(-1)).sum(1).flatten(1)  # (S, Q)
            mass += owner.T @ group_mass
            entropy += row_entropy @ owner
        self.mass = mass if self.mass is None else self.mass + mass
        self.entropy = entropy if self.entropy is None else self.entropy + entropy
        self.calls += q.shape[1]  # heads


def mean_routing(captures: list[RoutingCapture]) -> tuple[torch.Tensor, torch.Tensor]:
    """Average over captures, calls, heads and each panel's query tokens: (S, P, P+1) mass, (S, P) entropy."""
    tokens = torch.bincount(captures[0].query_panels, minlength=captures[0].num_panels).clamp_min(1)
    tokens = tokens.to(captures[0].mass.device, torch.float32)
    calls = sum(c.calls for c in captures)
    mass = sum(c.mass for c in captures) / (calls * tokens[None, :, None])
    entropy = sum(c.entropy for c in captures) / (calls * tokens[None, :])
    return mass, entropy


def _role_vector(mass: torch.Tensor, output: int, num_panels: int) -> torch.Tensor:
    """(S, P+1) mass of output panel ``output`` -> (S, 5): [text, own input, itself, other inputs, other outputs]."""
    row = mass[:, output]
    inputs = [p for p in range(0, num_panels, 2) if p != output - 1]
    outputs = [p for p in range(1, num_panels, 2) if p != output]
    return torch.stack(
        [
            row[:, 0],
            row[:, output],
            row[:, 1 + output],
            row[:, [1 + p for p in inputs]].sum(-1),
            row[:, [1 + p for p in outputs]].sum(-1),
        ],
        dim=-1,
    )


def score_routing(mass: torch.Tensor, entropy: torch.Tensor, name: str) -> torch.Tensor:
    """(S,) score per seed; panels pair up in reading order (input, output) and the target is the last panel."""
    num_panels = mass.shape[1]
    target = num_panels - 1
    if name == "query_mass":
        return mass[:, target, target]  # key group 1 + (target - 1): the query panel B
    if name == "exemplar_mass":
        return mass[:, target, [1 + p for p in range(1, target, 2)]].sum(-1)
    if name == "agreement":
        mine = _role_vector(mass, target, num_panels)
        theirs = torch.stack([_role_vector(mass, p, num_panels) for p in range(1, target, 2)]).mean(0)
        return 1.0 - 0.5 * (mine - theirs).abs().sum(-1)
    if name == "concentration":
        return -entropy[:, target]
    raise ValueError(f"score {name!r}: expected one of {SCORES}")
