"""Suite metrics: hand-computed IoU, agreement with scikit-image, per-task keys, sync across 2 processes."""

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.utilities.data import dim_zero_sum

from pico_lightning.data.eval_items import EvalItem
from pico_lightning.evaluation.evaluator import EvalMetrics, EvalOutput, evaluation_plan
from pico_lightning.evaluation.metrics import PerTaskMetrics, SuiteMetrics, output_to_mask
from pico_lightning.panels import Layout, compose_grid, target_mask


def _masks_as_panels(masks):
    """(N, S, S) bool -> (N, 3, S, S) in [-1, 1], white on black."""
    return (masks.float() * 2 - 1)[:, None].expand(-1, 3, -1, -1)


def _noisy_images(seed, count=3, size=128):
    """(target, output) pairs (N, 3, S, S) in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(count, 3, size, size, generator=generator) * 2 - 1
    return target, (target + 0.3 * torch.randn(target.shape, generator=generator)).clamp(-1, 1)


def test_output_to_mask_thresholds_at_mid_grey():
    image = torch.tensor([-1.0, 0.0, 0.01, 1.0]).view(1, 1, 4).expand(3, 1, 4)
    assert output_to_mask(image).tolist() == [[False, False, True, True]]


def test_iou_by_hand():
    output = torch.zeros(2, 4, 4, dtype=torch.bool)
    target = torch.zeros(2, 4, 4, dtype=torch.bool)
    output[0, 0, :3] = True  # 3 pixels predicted, 2 of them right: IoU 2/3
    target[0, 0, :2] = True  # episode 1: both empty, IoU 1
    metrics = SuiteMetrics("mask")
    metrics.update(_masks_as_panels(output), _masks_as_panels(target))
    result = metrics.compute()
    assert result["miou"] == pytest.approx((2 / 3 + 1) / 2)  # mean over episodes
    assert result["iou"] == pytest.approx(2 / 3)  # pooled over all pixels
    assert result["episodes"] == 2


def test_image_metrics_match_scikit_image():
    target, output = _noisy_images(0)
    metrics = SuiteMetrics("image")
    metrics.update(output[:2], target[:2])
    metrics.update(output[2:], target[2:])
    result = metrics.compute()
    pairs = [(((t + 1) / 2).numpy(), ((o + 1) / 2).numpy()) for t, o in zip(target, output, strict=True)]
    psnr = np.mean([peak_signal_noise_ratio(t, o, data_range=1.0) for t, o in pairs])
    ssim = np.mean(
        [
            structural_similarity(
                t,
                o,
                data_range=1.0,
                channel_axis=0,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
            )
            for t, o in pairs
        ]
    )
    assert result["psnr"] == pytest.approx(psnr, abs=1e-4)
    # Border handling differs (torchmetrics pads by reflection, scikit-image crops): ~1e-4 at 128 px.
    assert result["ssim"] == pytest.approx(ssim, abs=5e-4)


def test_per_task_keys_and_values():
    target, output = _noisy_images(1, count=4, size=32)
    metrics = PerTaskMetrics("user_tasks", "image", ["a", "b", "never"])
    metrics.update(output, target, ["a", "b", "a", "a"])
    result = metrics.compute()
    alone = SuiteMetrics("image")
    alone.update(output[[0, 2, 3]], target[[0, 2, 3]])
    assert {key: result[f"user_tasks/a/{key}"] for key in ("psnr", "ssim", "episodes")} == alone.compute()
    assert result["user_tasks/episodes"] == 4 and result["user_tasks/b/episodes"] == 1
    assert not any(key.startswith("user_tasks/never/") for key in result)
    assert result["user_tasks/tasks"] == 2
    with pytest.raises(ValueError, match="unknown tasks"):
        metrics.update(output[:1], target[:1], ["c"])


def test_every_state_reduces_by_sum():
    for kind in ("mask", "image"):
        metrics = PerTaskMetrics("s", kind, ["a"])
        collections = [metrics.overall.metrics, metrics.per_task[0].metrics]
        reductions = [fx for c in collections for metric in c.values() for fx in metric._reductions.values()]
        assert reductions and all(fx is dim_zero_sum for fx in reductions)


def _sync_worker(rank, world_size, init_file, results):
    """Rank r sees only its shard of the episodes (uneven: 3 vs 1), then every rank computes."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        target, output = _noisy_images(2, count=4, size=32)
        tasks = ["a", "a", "b", "a"]
        rows = [0, 1, 3] if rank == 0 else [2]  # task "b" lives on rank 1 only
        image_metrics = PerTaskMetrics("t", "image", ["a", "b"])
        image_metrics.update(output[rows], target[rows], [tasks[row] for row in rows])
        mask_metrics = PerTaskMetrics("m", "mask", ["a", "b"])
        mask_metrics.update(output[rows], target[rows], [tasks[row] for row in rows])
        results[rank] = {**image_metrics.compute(), **mask_metrics.compute()}
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_metrics_sync_over_two_gloo_processes(tmp_path):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_sync_worker, args=(2, tmp_path / "pg", results), nprocs=2)
        results = dict(results)
    target, output = _noisy_images(2, count=4, size=32)
    tasks = ["a", "a", "b", "a"]
    expected = PerTaskMetrics("t", "image", ["a", "b"])
    expected.update(output, target, tasks)
    masks = PerTaskMetrics("m", "mask", ["a", "b"])
    masks.update(output, target, tasks)
    expected = {**expected.compute(), **masks.compute()}
    for rank in (0, 1):
        assert results[rank].keys() == expected.keys()
        for key, value in expected.items():
            assert results[rank][key] == pytest.approx(value, rel=1e-5), key


def _output(suite, task, query, target, prediction, kind="image"):
    """An evaluated episode of ``suite``: query and target panels (3, 16, 16), the model's prediction."""
    layout = Layout(2, 2, 16)
    grid = compose_grid([query, target, query, None], layout)
    item = EvalItem(suite, task, kind, "", grid, target_mask(layout), target)
    return EvalOutput(item, prediction, {"model_evaluations": 3})


def test_groups_and_tasks_each_have_their_copy_baseline_and_the_score_skips_unseen():
    target, noisy = _noisy_images(3, count=4, size=16)
    mask = torch.zeros(3, 16, 16) - 1
    mask[:, 4:12, 4:12] = 1
    outputs = [
        _output("seen", "denoise", noisy[0], target[0], target[0]),  # a perfect fill
        _output("seen", "deblur", noisy[1], target[1], noisy[1]),  # copies the query
        _output("unseen", "edges", noisy[2], target[2], noisy[2]),
        _output("seen_swapped", "denoise", noisy[0], target[0], noisy[0]),
        _output("segmentation", "colour", -mask, mask, mask, kind="mask"),
    ]
    items = {}
    for output in outputs:
        items.setdefault(output.item.suite, []).append(output.item)
    plan = evaluation_plan(items)
    assert plan["seen"].tasks == ["deblur", "denoise"] and plan["segmentation"].kind == "mask"
    metrics = EvalMetrics(plan, Layout(2, 2, 16))
    for output in outputs:
        metrics.update(output)
    result = metrics.compute()
    copy = SuiteMetrics("image")
    copy.update(noisy[1:2], target[1:2])
    assert result["eval/seen/deblur/psnr"] == result["eval/seen/deblur/baseline_psnr"] == copy.compute()["psnr"]
    assert result["eval/seen/denoise/psnr"] == float("inf") and result["eval/seen/tasks"] == 2
    assert "eval/seen/denoise/baseline_psnr" in result and "eval/unseen/edges/baseline_ssim" in result
    assert result["eval/seen/swapped_psnr"] == result["eval/seen/denoise/swapped_baseline_psnr"]
    assert result["eval/segmentation/miou"] == 1.0 and result["eval/segmentation/baseline_miou"] == 0.0
    assert not any(key.endswith(("baseline_episodes", "baseline_tasks")) for key in result)
    assert result["eval/model_evaluations"] == 15
    assert result["eval/score"] == pytest.approx((result["eval/seen/ssim"] + 1.0) / 2)  # seen and segmentation
