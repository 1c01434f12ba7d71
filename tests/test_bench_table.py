"""README's GPU table is drawn from bench.gpu's JSON: rows merge across files, failed rows stay out, the marked block
alone is rewritten."""

import json

import pytest

from bench.readme_table import BEGIN, END, main


def result(date: str, rows: list[dict], tiny: bool = False) -> dict:
    return {"device": "NVIDIA H200", "date": date, "torch": "2.11.0+cu130", "tiny": tiny, "rows": rows}


def row(batch, ckpt, compile_, variant, samples_per_s, peak_gb=20.0, **extra) -> dict:
    return {
        "batch": batch,
        "gradient_checkpointing": ckpt,
        "compile": compile_,
        "variant": variant,
        "samples_per_s": samples_per_s,
        "step_s": batch / samples_per_s,
        "peak_gb": peak_gb,
        **extra,
    }


def test_table_merges_runs_and_rewrites_only_the_marked_block(tmp_path):
    first = tmp_path / "a.json"
    first.write_text(
        json.dumps(
            result("2026-11-26T04:00", [row(1, True, False, "shipped", 1.0), row(4, True, False, "shipped", 1.1)])
        )
    )
    second = tmp_path / "b.json"
    rows = [
        row(4, True, False, "shipped", 1.2),  # measured again: replaces the first file's
        row(1, "auto", True, "shipped", 2.0, checkpointed_blocks=0),
        row(1, True, True, "float8", 1.5, peak_gb=17.25),
        {**row(1, False, False, "shipped", 9.0), "error": "OutOfMemoryError: ..."},
    ]
    second.write_text(json.dumps(result("2026-12-03T10:00", rows)))
    readme = tmp_path / "README.md"
    readme.write_text(f"# intro\n\n{BEGIN}\nold table\n{END}\n\nprose after\n")
    assert main([str(first), str(second), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# intro\n\n") and text.endswith(f"{END}\n\nprose after\n") and "old table" not in text
    lines = [line for line in text.splitlines() if line.startswith("| batch")]
    assert lines == [
        "| batch 1, checkpointing | 20.0 | 1.00 | 1.000 | 1.00x |",
        "| batch 4, checkpointing | 20.0 | 1.20 | 3.333 | 1.20x |",
        "| batch 1, checkpointing `auto` (0 blocks), compiled | 20.0 | 2.00 | 0.500 | 2.00x |",
        "| batch 1, checkpointing, compiled, `model.base_quantization=float8` (a 24 GB card) | 17.2 | 1.50 | 0.667 "
        "| 1.50x |",
    ]
    assert "2026-11-26" in text and "2026-12-03" in text and "NVIDIA H200" in text
    main([str(first), str(second), "--readme", str(readme)])
    assert readme.read_text() == text  # drawing twice changes nothing


def test_table_refuses_tiny_runs_and_a_readme_without_markers(tmp_path):
    tiny = tmp_path / "tiny.json"
    tiny.write_text(json.dumps(result("2026-12-03", [row(1, True, False, "shipped", 30.0)], tiny=True)))
    readme = tmp_path / "README.md"
    readme.write_text(f"{BEGIN}\n{END}\n")
    with pytest.raises(SystemExit, match="--tiny"):
        main([str(tiny), "--readme", str(readme)])
    tiny.write_text(json.dumps(result("2026-12-03", [row(1, True, False, "shipped", 1.0)])))
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="bench-gpu-table"):
        main([str(tiny), "--readme", str(readme)])
