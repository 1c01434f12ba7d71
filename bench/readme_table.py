"""README's GPU table, drawn from bench.gpu's JSON: ``make bench-gpu`` ends by calling it, so the table shows what ran.

    python -m bench.readme_table bench/gpu_results.json [more.json ...] [--readme README.md]

Rows of several JSON files merge by row (batch, checkpointing, compile, variant), a later file's row replacing an
earlier one's, in the first file's order with new rows after. Rows that failed (out of memory) are left out. "vs.
before" is samples/s over the old shipped config's (batch 1, checkpointing, uncompiled). The table is written
between the two ``bench-gpu-table`` marker comments in README.md, with the card, dates and files above it; the prose
that reads the table stays hand-written below.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pico_lightning.files import write_text

BEGIN, END = "<!-- bench-gpu-table:begin -->", "<!-- bench-gpu-table:end -->"
BASELINE = (1, True, False, "shipped")  # what flux_fill.yaml ran per GPU before compiling and auto checkpointing
VARIANT_WORDS = {
    "float8": "`model.base_quantization=float8` (a 24 GB card)",
    "int8": "`model.base_quantization=int8` (a 24 GB card)",
    "no-autocast": "`train.precision=32-true` (bf16 base without autocast)",
    "lora-no-cast": "LoRA inputs not cast to float32",
    "fa3": "`train.attention_backend=fa3`",
    "fa4": "`train.attention_backend=fa4`",
}


def row_key(row: dict) -> tuple:
    return row["batch"], row["gradient_checkpointing"], row["compile"], row["variant"]


def merged_rows(results: list[dict]) -> list[dict]:
    """The measured rows of every result file, a later file's row replacing an earlier one's."""
    rows: dict[tuple, dict] = {}
    for result in results:
        for row in result["rows"]:
            if "error" not in row and row.get("samples_per_s"):
                rows[row_key(row)] = row
    return list(rows.values())


def describe(row: dict) -> str:
    ckpt = row["gradient_checkpointing"]
    words = [f"batch {row['batch']}"]
    words.append({True: "checkpointing", False: "no checkpointing"}.get(ckpt, f"checkpointing `{ckpt}`"))
    if ckpt == "auto" and row.get("checkpointed_blocks") is not None:
        words[-1] += f" ({row['checkpointed_blocks']} blocks)"
    words += ["compiled"] if row["compile"] else []
    words += [VARIANT_WORDS.get(row["variant"], row["variant"])] if row["variant"] != "shipped" else []
    return ", ".join(words)


def table(results: list[dict], names: list[str]) -> str:
    """The markdown block between the markers: where and when, then one line per measured row."""
    rows = merged_rows(results)
    base = next((r["samples_per_s"] for r in rows if row_key(r) == BASELINE), None)
    sources = ", ".join(f"`{name}` ({r['date'][:10]}, torch {r['torch']})" for name, r in zip(names, results))
    devices = sorted({r["device"] for r in results})
    lines = [
        f"Measured on {' and '.join(devices)} by `python -m bench.gpu` ({sources}); drawn by `bench/readme_table.py`.",
        "",
        "| config (1 GPU) | peak GiB | samples/s | step s | vs. before |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        peak = f"{row['peak_gb']:.1f}" if row.get("peak_gb") is not None else "-"
        ratio = f"{row['samples_per_s'] / base:.2f}x" if base else "-"
        lines.append(f"| {describe(row)} | {peak} | {row['samples_per_s']:.2f} | {row['step_s']:.3f} | {ratio} |")
    return "\n".join(lines)


def rewrite(readme: Path, block: str) -> None:
    """Replace what lies between the markers (exactly one pair expected) with ``block``, atomically."""
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"{readme}: expected one {BEGIN} ... {END} pair around the GPU table")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    write_text(readme, f"{head}{BEGIN}\n{block}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="bench.gpu JSON files, later ones win per row")
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    args = parser.parse_args(argv)
    results = []
    for path in args.results:
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise SystemExit(f"{path}: expected bench.gpu's JSON results ({err})") from None
    if any(result.get("tiny") for result in results):
        raise SystemExit("bench.readme_table: README's table is for full-size GPU runs; got a --tiny result")
    rewrite(args.readme, table(results, [path.as_posix() for path in args.results]))
    print(f"{args.readme}: GPU table drawn from {len(results)} result file(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
