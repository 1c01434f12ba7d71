"""``train.gradient_checkpointing: auto``: the fewest DiT blocks recompute, chosen against a stated memory budget."""

from dataclasses import replace

import pytest
import torch
from conftest import embedded

from pico_lightning.model.backbone import dit_blocks
from pico_lightning.model.checkpointing import measure, saved_bytes
from pico_lightning.model.conditioning import TextInputs
from pico_lightning.objective import fill_prediction
from pico_lightning.training.train import build_module


@pytest.fixture
def small_cfg(tiny_cfg):
    """tiny_cfg on the small preset: two double-stream and two single-stream blocks."""
    return embedded(replace(tiny_cfg, model=replace(tiny_cfg.model, preset="small")))


def built(cfg, **train):
    module = build_module(replace(cfg, train=replace(cfg.train, **train)), ["", "Edit"])
    module.configure_model()
    return module


def step_inputs(module, batch=4):
    """A training step's DiT inputs at the module's layout: zero grids, the target mask, the empty prompt."""
    from pico_lightning.panels import target_mask

    layout = module.layout
    grid = torch.zeros(batch, 3, layout.height, layout.width)
    mask = target_mask(layout).expand(batch, 1, -1, -1)
    return grid, mask, TextInputs(*module.prompts.rows(torch.zeros(batch, dtype=torch.long)))


def kept_by_a_step(module) -> tuple[int, dict]:
    """Bytes a real forward keeps for backward (weights aside), and the LoRA gradients of its backward."""
    grid, mask, text = step_inputs(module)
    generator = torch.Generator().manual_seed(0)
    weights = {id(p) for p in module.parameters()}
    with saved_bytes(weights) as kept:
        pred, target = fill_prediction(module.parts, grid, mask, text, generator, module.cfg, 30.0)
    (pred - target).square().mean().backward()
    return kept(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.fixture
def costs(small_cfg):
    """What one block of each kind keeps, measured on the plain (unplanned) module."""
    module = built(small_cfg)
    grid, mask, text = step_inputs(module)
    per_kind, rest = measure(
        module.transformer, lambda: fill_prediction(module.parts, grid, mask, text, None, module.cfg, 30.0)
    )
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return [per_kind[type(b)] for b in dit_blocks(module.transformer)], rest, trainable


def budget_for(costs, checkpointed: int) -> float:
    """The budget (GiB) that leaves room for the blocks' activations with exactly ``checkpointed`` blocks (largest
    saving first) recomputing: the plan's own arithmetic, run backwards."""
    kinds, rest, trainable = costs
    need = sum(c.kept for c in kinds) - sum(sorted((c.saving for c in kinds), reverse=True)[:checkpointed])
    reserve = trainable * 12 + rest + max(c.kept for c in kinds)
    return (need + reserve) / 0.95 / 2**30


def test_every_block_kind_is_measured_and_a_checkpoint_saves_bytes(costs):
    kinds, rest, _ = costs
    assert len(kinds) == 4 and len({c.kept for c in kinds}) == 2  # 2 double + 2 single blocks
    assert all(c.kept > c.inputs > 0 for c in kinds) and rest > 0


@pytest.mark.parametrize("checkpointed", [0, 1, 3, 4])
def test_auto_checkpoints_the_fewest_blocks_that_fit_the_budget(small_cfg, costs, checkpointed, capsys):
    module = built(small_cfg, gradient_checkpointing="auto", memory_budget_gb=budget_for(costs, checkpointed) * 1.001)
    plan = module.checkpoint_plan
    assert f"gradient checkpointing (auto): {checkpointed} of 4 DiT blocks" in capsys.readouterr().out
    assert len(plan.checkpointed) == checkpointed and plan.need <= plan.room
    if checkpointed:  # one block fewer would not fit this budget
        tight = budget_for(costs, checkpointed) * 0.99
        tighter = built(small_cfg, gradient_checkpointing="auto", memory_budget_gb=tight).checkpoint_plan
        assert len(tighter.checkpointed) == min(checkpointed + 1, 4)
        assert (tighter.need > tighter.room) == (checkpointed == 4)  # all recompute, and still too much
    kept, _ = kept_by_a_step(module)
    rest = costs[1]
    assert 0.85 * (plan.need + rest) <= kept <= plan.need + rest  # the plan counts what the step keeps


def test_the_planned_step_keeps_less_and_computes_the_same_gradients(small_cfg, costs):
    plain_kept, plain_grads = kept_by_a_step(built(small_cfg))
    module = built(small_cfg, gradient_checkpointing="auto", memory_budget_gb=budget_for(costs, 2) * 1.001)
    kept, grads = kept_by_a_step(module)
    assert module.checkpoint_plan.checkpointed and kept < plain_kept
    assert grads.keys() == plain_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, plain_grads[name], msg=name)


def test_auto_on_a_cpu_without_a_budget_checkpoints_nothing(small_cfg):
    module = built(small_cfg, gradient_checkpointing="auto")
    assert module.checkpoint_plan is None and not module.transformer.gradient_checkpointing
