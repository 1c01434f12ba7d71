"""The three evaluation groups of a run: seen (the tasks it trains on), unseen held-in, held out, each per task and
per group beside its copy baseline; on VisRel-lite with experiments/demo.yaml's eval.suites as shipped."""

from pico_lightning.config import load_config
from pico_lightning.data.catalogue import DatasetCatalogue
from pico_lightning.evaluation.evaluator import EvalMetrics, EvalOutput, evaluation_plan

TRAINED = ["colorize", "contrast_equalise", "denoise", "detection"]


def test_a_demo_run_on_four_tasks_reports_seen_unseen_and_held_out_with_baselines(visrel_tiny, tmp_path):
    cfg = load_config("experiments/demo.yaml", [f"data.root={visrel_tiny}", f"data.tasks=[{','.join(TRAINED)}]"])
    assert cfg.eval.suites == ["held_in", "held_out", "segmentation", "user_tasks"]  # as shipped
    catalogue = DatasetCatalogue(cfg.data, cfg.eval)
    pool, held_out = catalogue.tasks(held_out=False), catalogue.tasks(held_out=True)
    items = catalogue.eval_items()
    plan = evaluation_plan(items)
    assert list(plan) == ["seen", "unseen", "held_out", "segmentation", "user_tasks", "seen_swapped"]
    assert plan["seen"].tasks == TRAINED
    assert set(plan["unseen"].tasks) == pool - set(TRAINED) and len(plan["unseen"].tasks) == 11
    assert set(plan["held_out"].tasks) == held_out and plan["segmentation"].kind == "mask"

    metrics = EvalMetrics(plan, catalogue.layout)
    for suite_items in items.values():
        for item in suite_items:  # a model that fills in the ground truth
            metrics.update(EvalOutput(item, item.target, {"model_evaluations": 1}))
    result = metrics.compute()
    for group in ("seen", "unseen", "held_out"):
        assert result[f"eval/{group}/psnr"] == float("inf") and f"eval/{group}/baseline_psnr" in result
        assert result[f"eval/{group}/tasks"] == len(plan[group].tasks)
        for task in plan[group].tasks:
            assert f"eval/{group}/{task}/baseline_psnr" in result and f"eval/{group}/{task}/psnr" in result
    assert not any(key.startswith("eval/held_in/") for key in result)
    everything = load_config("experiments/demo.yaml", [f"data.root={visrel_tiny}"])  # trains on the whole pool
    assert "unseen" not in DatasetCatalogue(everything.data, everything.eval).eval_items()
