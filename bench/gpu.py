"""The one benchmark harness: training and inference speed, side by side in one run; prints a table, writes JSON.

    python -m bench.gpu [--out bench/gpu_results.json]      # `make bench-gpu`: one CUDA GPU, full-size FLUX.1-Fill
    python -m bench.gpu --tiny --out bench/results.json     # `make bench`: the same code on the CPU, demo sizes
    python -m bench.gpu --tiny --only text_cache            # one section (or row), e.g. a smoke run

Rows: the old shipped config (batch 1, every block checkpointed, eager), flux_fill.yaml as shipped at per-device batch 1
and 4 (``gradient_checkpointing: auto``, compiled; ``checkpointed_blocks``: what auto chose), compiling with every block
checkpointed, and levers at batch 1 with checkpointing, compiled as shipped (``variant``, VARIANTS; by default the 24 GB
base: float8 = ``model.base_quantization=float8`` where the device multiplies float8, else int8 where torchao is
installed; named only: lora-no-cast = LoRA layers fed bf16 inputs, no-autocast = ``train.precision=32-true``, fa3 / fa4
= ``train.attention_backend=fa3`` / ``fa4``, e.g. ``--only b1-ckpt1-compile1 b1-ckpt1-compile1-fa3``; each row keeps its
losses, to hold against the shipped row's). Each row is a PicoModule step under Lightning vs a bare loop on the same
module, batch, optimizer and clipping (median of 3 steps after 2 warm-ups), with peak memory (GiB,
``torch.cuda.max_memory_allocated``; null on the CPU), samples/s and MFU = 2 x forward FLOPs x batch / step / the card's
dense bf16 peak (``torch.utils.flop_counter``; null where the peak is unknown). Also: the seconds of a step's batched
VAE encode vs the two separate encodes it replaced, the wait for data with the real VisRelDataModule, a kernel-time
profile of one step, eager and compiled, our sampler vs the stock FluxFillPipeline, the seed scorer at |S| = 4 and 8,
and a cached prompt embedding vs encoding it; named only, ``cli``: the shipped command end to end (bench/gpu_cli.py),
and ``quantized_loss``: the default 24 GB base's losses against the bf16 base's over 50 steps. After the table come the
ratios with their goals (``GOALS``). The JSON is rewritten atomically after every finished measurement, so a crash or a
time limit still leaves everything finished; an error in one row (e.g. out of memory) is recorded in that row. ``--all``
adds the rest of the grid: batch 1 and 4 x checkpointing on/off x ``train.compile`` off/on.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
import traceback
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench.gpu_model import (
    SECTIONS,
    VARIANTS,
    BenchSetup,
    default_setup,
    device_name,
    forward_flops,
    peak_flops,
    release_memory,
)
from pico_lightning.files import write_json

GOALS = {  # ratio -> the most it should be (the tiny model's goals; bench/RESULTS.md)
    "overhead_ratio": 1.03,
    "loader_wait_fraction": 0.02,
    "sampler_vs_diffusers_ratio": 1.02,
    "fused_vs_diffusers_ratio": 0.9,
    "fused_compiled_vs_diffusers_ratio": 0.9,
    "seed_scorer_8_evaluations_ratio": 1.6,
    "seed_scorer_8_seconds_ratio": 1.6,
}
ROW_KEYS = (
    "variant",
    "batch",
    "gradient_checkpointing",
    "compile",
    "checkpointed_blocks",
    "step_s",
    "bare_step_s",
    "overhead_ratio",
    "peak_gb",
    "mfu",
)


def guarded(fn, *args) -> dict:
    """``fn(*args)`` with ``wall_s`` (its seconds, set-up included: for planning time limits) added, or {"error": ...}
    if it raised (out of memory included); device memory is released either way."""
    start = time.perf_counter()
    try:
        return {**fn(*args), "wall_s": time.perf_counter() - start}
    except Exception as err:  # one failed measurement must not lose the others
        traceback.print_exc()
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"}
    finally:
        release_memory()


def row_order(setup: BenchSetup) -> list[tuple[int, bool | str, bool, str]]:
    """(batch, checkpointing, compile, variant) rows, most wanted first: the old shipped config (checkpointing,
    uncompiled) at batch 1, flux_fill.yaml as shipped (auto, compiled) at every batch, the levers (variants at batch
    1, then compiling with every block checkpointed); with ``setup.all_rows`` then the rest of the grid (batch x
    checkpointing on/off x compile off/on)."""
    compiled = True in setup.compile_modes
    first = [(setup.batches[0], True, False, "")]
    levers = [(b, "auto", True, "") for b in setup.batches] if compiled else []
    levers += [(setup.batches[0], True, compiled, v) for v in setup.variants]
    levers += [(setup.batches[0], True, True, "")] if compiled else []
    grid = [(b, ckpt, comp, "") for comp in setup.compile_modes for ckpt in (True, False) for b in setup.batches]
    if setup.only:  # the rows named, in the order given
        return [parse_row(name) for name in setup.only if name not in SECTIONS]
    rest = [spec for spec in grid if spec not in first + levers] if setup.all_rows else []
    return first + levers + rest


def parse_row(name: str) -> tuple[int, bool | str, bool, str]:
    """``b1-ckpt1-compile0[-variant]`` -> (1, True, False, variant), ``ckptauto`` -> "auto"; SystemExit with the
    expected form otherwise."""
    match = re.fullmatch(r"b(\d+)-ckpt([01]|auto)-compile([01])(?:-(.+))?", name)
    if not match or (match.group(4) or "") not in ("", *VARIANTS):
        raise SystemExit(
            f"bench.gpu --only: expected b<batch>-ckpt<0|1|auto>-compile<0|1>[-{'|'.join(VARIANTS)}] or one "
            f"of {', '.join(SECTIONS)}; got {name!r}"
        )
    ckpt = "auto" if match.group(2) == "auto" else match.group(2) == "1"
    return int(match.group(1)), ckpt, match.group(3) == "1", match.group(4) or ""


def wanted(setup: BenchSetup, section: str) -> bool:
    return not setup.only or section in setup.only


def mfu(row: dict, flops_per_sample: float | None, peak: float | None) -> float | None:
    if flops_per_sample is None or peak is None or "step_s" not in row:
        return None
    return 2 * flops_per_sample * row["batch"] / row["step_s"] / peak  # forward + input-gradient backward


def reference_sections(setup: BenchSetup, tmp: Path, data_root: Path, results: dict, out: Path) -> None:
    """FLOPs and the wanted sections on one module of the shipped config (batch 1, checkpointing), built once and
    freed before the rows build theirs; each section's result is streamed to ``out`` as it finishes."""
    from bench.gpu_model import build_lightning, row_config
    from bench.gpu_train import step_profile

    cfg = row_config(setup, tmp, 1, True, False, data_root)
    module, _ = build_lightning(cfg, setup, ["", "Edit"], [], tmp / "runs" / "reference")
    from bench.gpu_infer import text_cache

    sections = {"vae_encode": measure_encode, "inference": inference, "text_cache": text_cache, "profile": step_profile}
    for name, measure in [("flops", measure_flops)] + [(n, f) for n, f in sections.items() if wanted(setup, n)]:
        results[name] = guarded(measure, module, cfg, setup)
        write_json(out, results)
    del module
    release_memory()


def measure_flops(module, cfg, setup: BenchSetup) -> dict:
    """Forward FLOPs per sample (the count does not depend on checkpointing or on what LoRA holds)."""
    from pico_lightning.model.sdpa import attention_backend

    with attention_backend(cfg.train.attention_backend):
        flops = forward_flops(module, setup, cfg.data.panel_size, cfg.model.sequence_length())
    return {"forward_flops_per_sample": flops}


def measure_encode(module, cfg, setup: BenchSetup) -> dict:
    """Seconds of a training step's VAE encodes at batch 1, under autocast as in training (what caching the latents
    would save per sample): the objective's one batched encode of the grid and the masked grid, and the two separate
    encodes it replaced (the grid, then fill_condition's masked grid), each the median of 3, alternated, after a
    warm-up."""
    from bench.gpu_infer import timed
    from pico_lightning.model.conditioning import fill_condition, pack_latents
    from pico_lightning.objective import encode_fill_inputs, step_autocast
    from tests.support import fixed_batch

    batch = fixed_batch(batch_size=1, panel_size=cfg.data.panel_size)
    grid, mask = batch["grid"].to(setup.device), batch["mask"].to(setup.device)
    autoencoder, generator = module.autoencoder, torch.Generator(setup.device).manual_seed(0)

    def separate():
        pack_latents(autoencoder.encode(grid, generator=generator))
        fill_condition(autoencoder, grid, mask, generator)

    encodes = {
        "vae_encode_s": lambda: encode_fill_inputs(autoencoder, grid, mask, generator),
        "vae_encode_separate_s": separate,
    }
    with torch.no_grad(), step_autocast(cfg.train.precision, setup.device.type):
        for encode in encodes.values():
            encode()
        seconds = {key: [] for key in encodes}
        for _ in range(3):
            for key, encode in encodes.items():
                seconds[key].append(timed(setup, encode)[1])
    result = {key: sorted(values)[1] for key, values in seconds.items()}
    result["vae_batched_vs_separate_ratio"] = result["vae_encode_s"] / result["vae_encode_separate_s"]
    return result


def inference(module, cfg, setup: BenchSetup) -> dict:
    """Sampler vs diffusers and the seed scorer (no gradients: checkpointing does not enter)."""
    from bench.gpu_infer import sampler_vs_diffusers, seed_scorer

    panel, text_len = cfg.data.panel_size, cfg.model.sequence_length()
    result = guarded(sampler_vs_diffusers, module, setup, panel, text_len)
    result["seed_scorer"] = guarded(seed_scorer, module, setup, panel, text_len)
    return result


def add_row(
    results: dict, setup: BenchSetup, tmp: Path, data_root: Path, spec: tuple[int, bool | str, bool, str]
) -> dict:
    """Measure one (batch, checkpointing, compile, variant) row and append it to ``results["rows"]``; a variant row
    also gets ``loss_diff_vs_shipped``: its bare losses minus the shipped row's (same batch, noise and LoRA init)."""
    from bench.gpu_train import training_row

    batch, ckpt, comp, variant = spec
    row = {"batch": batch, "gradient_checkpointing": ckpt, "compile": comp, "variant": variant or "shipped"}
    row.update(guarded(training_row, setup, tmp, data_root, batch, ckpt, comp, variant))
    row["mfu"] = mfu(row, results["flops"].get("forward_flops_per_sample"), results["peak_flops"])
    same_batch = [r for r in results["rows"] if r["variant"] == "shipped" and r["batch"] == batch and not r["compile"]]
    shipped = same_batch[0].get("bare_losses") if same_batch else None
    if variant and shipped and row.get("bare_losses"):
        row["loss_diff_vs_shipped"] = [a - b for a, b in zip(row["bare_losses"], shipped)]
    results["rows"].append(row)
    return row


def run_bench(setup: BenchSetup, out: Path) -> dict:
    """Every measurement in order, streaming ``out`` after each; returns the final results. Order: FLOPs, the VAE
    encodes, inference and the profile on one module of the shipped config; the uncompiled checkpointing rows (the
    shipped config), the loader, then the rest (no checkpointing may run out of memory; compiling is the slowest
    and least certain part)."""
    from bench.gpu_cli import cli_section
    from bench.gpu_train import loader_wait, prepare_data, quantized_loss

    started = time.perf_counter()
    results = {
        "device": device_name(setup.device),
        "tiny": setup.tiny,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "steps": {"warmup": setup.warmup, "timed": setup.timed},
        "peak_flops": peak_flops(setup.device),
        "rows": [],
        "loader_wait_fraction": None,
        "inference": None,
    }
    write_json(out, results)
    rows = row_order(setup)
    shipped = [spec for spec in rows if spec[1] is True and not spec[2] and not spec[3]]  # checkpointing, uncompiled
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        data_root = prepare_data(setup, tmp)
        reference_sections(setup, tmp, data_root, results, out)
        for name, measure in {"cli": cli_section, "quantized_loss": quantized_loss}.items():
            if name in setup.only:  # minutes each: only when named
                results[name] = guarded(measure, setup, tmp, data_root)
                write_json(out, results)
        for spec in shipped:
            add_row(results, setup, tmp, data_root, spec)
            write_json(out, results)
        if wanted(setup, "loader"):
            fixed_gap = results["rows"][0].get("between_steps_s") if results["rows"] else None
            results["loader"] = guarded(loader_wait, setup, tmp, data_root, fixed_gap)
            results["loader_wait_fraction"] = results["loader"].get("loader_wait_fraction")
            write_json(out, results)
        for spec in [spec for spec in rows if spec not in shipped]:
            add_row(results, setup, tmp, data_root, spec)
            write_json(out, results)
    results["total_s"] = time.perf_counter() - started
    write_json(out, results)
    return results


def print_table(results: dict) -> None:
    print(f"device: {results['device']}")
    print(" | ".join(f"{key[:12]:>12s}" for key in (*ROW_KEYS, "samples/s")))
    for row in results["rows"]:
        cells = [row.get(key) for key in ROW_KEYS] + [row.get("samples_per_s")]
        text = [f"{c:12.4g}" if isinstance(c, float) else f"{c!s:>12s}" for c in cells]
        print(" | ".join(text) + (f"  ERROR {row['error']}" if "error" in row else ""))
    print(f"loader_wait_fraction: {results.get('loader_wait_fraction')}")
    print(f"inference: {json.dumps(results.get('inference'))}")
    print(f"text_cache: {json.dumps(results.get('text_cache'))}")
    print_goals(results)


def headline(results: dict) -> dict[str, float | None]:
    """The ratios worth a goal, from the first shipped row and the sections (None where not measured)."""
    row = next((r for r in results["rows"] if r["variant"] == "shipped" and not r["compile"]), {})
    inference = results.get("inference") or {}
    scorer = (inference.get("seed_scorer") or {}).get("8", {})
    return {
        "overhead_ratio": row.get("overhead_ratio"),
        "loader_wait_fraction": results.get("loader_wait_fraction"),
        "sampler_vs_diffusers_ratio": inference.get("sampler_vs_diffusers_ratio"),
        "fused_vs_diffusers_ratio": inference.get("fused_vs_diffusers_ratio"),
        "fused_compiled_vs_diffusers_ratio": inference.get("fused_compiled_vs_diffusers_ratio"),
        "seed_scorer_8_evaluations_ratio": scorer.get("evaluations_ratio"),
        "seed_scorer_8_seconds_ratio": scorer.get("seconds_ratio"),
        "text_cache_speedup": (results.get("text_cache") or {}).get("text_cache_speedup"),
        "vae_batched_vs_separate_ratio": (results.get("vae_encode") or {}).get("vae_batched_vs_separate_ratio"),
    }


def print_goals(results: dict) -> None:
    print(f"{'measure':34s} {'value':>10s} {'goal':>8s}")
    for key, value in headline(results).items():
        goal = f"<= {GOALS[key]:.2f}" if key in GOALS else ""
        print(f"{key:34s} {'-' if value is None else f'{value:10.3f}':>10s} {goal:>8s}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the demo's sizes on the CPU (minutes, no GPU)")
    parser.add_argument("--out", default="bench/gpu_results.json", help="JSON results, rewritten as rows finish")
    parser.add_argument(
        "--only",
        nargs="+",
        default=(),
        metavar="NAME",
        help=f"just these rows (b1-ckpt1-compile0[-variant]) and sections ({', '.join(SECTIONS)})",
    )
    parser.add_argument("--all", action="store_true", help="also the rest of the grid: batch x checkpointing x compile")
    args = parser.parse_args(argv)
    for name in args.only:
        if name not in SECTIONS:
            parse_row(name)  # a typo stops here, before minutes of set-up
    setup = replace(default_setup(args.tiny), only=tuple(args.only), all_rows=args.all)
    results = run_bench(setup, Path(args.out))
    print_table(results)
    print(f"wrote {args.out} in {results['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
