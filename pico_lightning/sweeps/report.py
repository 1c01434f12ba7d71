"""Sweep report: every run's swept parameters and eval metrics as Markdown and CSV, the groups against the swept
value, plus one plot per metric.

A run's metrics come from ``summary.json`` when its status is "finished", else from its latest
``eval/step_<N>/metrics.json`` (status "unfinished"); a run with neither is "missing". The x axis is
``data.num_tasks`` or ``data.task_fraction`` when swept, else the first non-seed grid axis; the style axis
``data.shots_per_task``, else the next non-seed axis; the rest (the seeds) is averaged.

- ``report.md`` / ``report.csv``: one row per run, every suite-level key (baselines included).
- ``report.md`` (second table) / ``groups.csv``: per x (and style) value and suite, the mean [min, max] over
  the seeds of each metric beside the mean of its copy baseline B′ = B, and the suite's task count: the seen
  tasks (``seen``), the unseen held-in ones (``unseen``) and the held-out ones (``held_out``) read off one table,
  their baselines moving with the tasks each run chose.
- ``<metric>.png``: one colour per suite, one line style per style value, min-max error bars, and each suite's
  baseline as a dotted line through its mean at each x.
- On W&B (pico_lightning/dashboard.py), the tables and plots are one run in the sweep's group, logged the way the
  sweep's runs log (:func:`report_wandb`).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pico_lightning.config import LoggingConfig
from pico_lightning.errors import UserError
from pico_lightning.run_dir import RunDir
from pico_lightning.sweeps.spec import sweep_run

SUITE_LABELS = {"seen": "seen tasks", "unseen": "unseen held-in tasks", "held_out": "held-out tasks"}
SUITE_COLOURS = {"seen": "tab:blue", "unseen": "tab:green", "held_out": "tab:orange"}
X_KEYS = ("data.num_tasks", "data.task_fraction")  # the task-diversity axes, plotted as x when swept
COUNTS = ("episodes", "tasks")  # suite-level counts: in the tables on request, never plotted
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")


@dataclass
class RunResult:
    """One run's grid point, status ("finished", "unfinished" or "missing"), step and numeric eval metrics."""

    name: str
    params: dict[str, Any]
    status: str
    step: int | None
    metrics: dict[str, float]


def load_sweep(sweep_dir: Path) -> dict:
    """The plan `pico sweep` wrote (SWEEP_DIR/sweep.json)."""
    path = sweep_dir / "sweep.json"
    if not path.is_file():
        raise UserError(f"{path}: not found; expected a directory written by `pico sweep`")
    try:
        plan = json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    runs = plan.get("runs") if isinstance(plan, dict) else None
    if not isinstance(runs, list) or not all(isinstance(run, dict) and "name" in run for run in runs):
        raise UserError(f"{path}: not a sweep plan (a 'runs' list of named runs); write it again with `pico sweep`")
    return plan


def report_wandb(sweep_dir: Path, mode: str | None) -> tuple[LoggingConfig, str]:
    """The W&B settings of a sweep's report run: the logging section of the sweep's runs (the first run's
    config.yaml, else the sweep's base experiment with that run's overrides) with the sweep's name as group, and
    ``mode``, else that section's mode (WANDB_MODE winning); 'disabled' when none of those configs is there."""
    from pico_lightning.config import load_config

    plan = load_sweep(sweep_dir)
    group, runs = plan.get("name", sweep_dir.name), plan["runs"]
    written = [run.config for run in (sweep_run(sweep_dir, entry["name"]) for entry in runs) if run.config.is_file()]
    if written:
        logging = load_config(written[0]).logging
    elif runs and Path(plan.get("base", "")).is_file():
        logging = load_config(plan["base"], runs[0].get("overrides", [])).logging
    else:
        return LoggingConfig(group=group), mode or "disabled"
    return replace(logging, group=group), mode or logging.mode()


def _numeric(flat: dict) -> dict[str, float]:
    """The finite numeric ``eval/*`` entries of a flat metrics dict."""
    return {
        key: float(value)
        for key, value in flat.items()
        if key.startswith("eval/")
        and isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    }


def read_run(run: RunDir, name: str, params: dict[str, Any]) -> RunResult:
    """A run's final metrics, or its latest evaluation when it has not finished."""
    if run.is_finished():
        summary = run.read_summary()
        return RunResult(name, params, "finished", summary.get("step"), _numeric(summary.get("eval", {})))
    for step in reversed(run.evaluated_steps()):
        try:
            return RunResult(name, params, "unfinished", step, _numeric(json.loads(run.eval_metrics(step).read_text())))
        except (OSError, ValueError):
            continue
    return RunResult(name, params, "missing", None, {})


def select_metrics(results: list[RunResult], wanted: list[str]) -> list[str]:
    """Keys to report: ``wanted`` full keys, plus suite-level keys whose metric name is in ``wanted``.

    By default every suite-level key (``eval/<suite>/<metric>``, ``eval/<metric>``) except episode and task
    counts; per-task breakdowns (``eval/<suite>/<task>/<metric>``) only when named by their full key.
    """
    present = sorted({key for result in results for key in result.metrics})
    suite_level = [key for key in present if key.count("/") <= 2]
    if not wanted:
        return [key for key in suite_level if key.rsplit("/", 1)[-1] not in COUNTS]
    chosen = [key for key in present if key in wanted or (key in suite_level and key.rsplit("/", 1)[-1] in wanted)]
    unknown = [name for name in wanted if not any(name in (key, key.rsplit("/", 1)[-1]) for key in chosen)]
    if unknown:
        raise UserError(f"--metric {unknown[0]}: not among the runs' metrics {suite_level or '(none)'}")
    return chosen


def varying(results: list[RunResult], keys: list[str]) -> list[str]:
    """The keys whose values differ between runs: a constant (a baseline, a fixed cost) makes a flat plot."""
    return [key for key in keys if len({result.metrics[key] for result in results if key in result.metrics}) > 1]


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))


def table_rows(results: list[RunResult], grid_keys: list[str], metrics: list[str]) -> list[list[Any]]:
    """Header then one row per run: name, status, step, swept values, metric values."""
    rows: list[list[Any]] = [["run", "status", "step", *grid_keys, *metrics]]
    for result in results:
        rows.append(
            [
                result.name,
                result.status,
                result.step,
                *(result.params.get(key) for key in grid_keys),
                *(result.metrics.get(key) for key in metrics),
            ]
        )
    return rows


def to_markdown(rows: list[list[Any]]) -> str:
    """A Markdown table; metric headers drop the common ``eval/`` prefix."""
    header = [str(name).removeprefix("eval/") for name in rows[0]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows[1:]]
    return "\n".join(lines) + "\n"


def plot_axes(grid: dict[str, list]) -> tuple[str | None, str | None]:
    """The x axis and the line-style axis of the plots (seed axes are averaged, never plotted)."""
    axes = [key for key in grid if key.rsplit(".", 1)[-1] != "seed"] or list(grid)
    x_key = next((key for key in X_KEYS if key in grid), axes[0] if axes else None)
    rest = [key for key in axes if key != x_key]
    style_key = "data.shots_per_task" if "data.shots_per_task" in rest else (rest[0] if rest else None)
    return x_key, style_key


def is_baseline(key: str) -> bool:
    """Whether ``key`` is a copy baseline (``baseline_psnr``, ``swapped_baseline_psnr``), drawn beside its metric."""
    return key.rsplit("/", 1)[-1].removeprefix("swapped_").startswith("baseline_")


def baseline_key(key: str) -> str:
    """``eval/<suite>/[swapped_]<name>`` -> ``eval/<suite>/baseline_<name>``: the swap keeps the query, so the
    copy baseline of the swapped episodes is the true ones'."""
    head, name = key.rsplit("/", 1)
    return f"{head}/baseline_{name.removeprefix('swapped_')}"


def run_values(results: list[RunResult], metric: str, x_key: str, x_value: Any, style: tuple | None) -> list[float]:
    """``metric`` of the runs at ``x_value`` (and the given ``(style key, value)``)."""
    return [
        result.metrics[metric]
        for result in results
        if metric in result.metrics
        and result.params.get(x_key) == x_value
        and (style is None or result.params.get(style[0]) == style[1])
    ]


def aggregate(results: list[RunResult], metric: str, x_key: str, x_values: list, style: tuple | None) -> list:
    """(x index, mean, min, max) of ``metric`` over the runs at each x (and the given style value)."""
    points = []
    for index, x_value in enumerate(x_values):
        values = run_values(results, metric, x_key, x_value, style)
        if values:
            points.append((index, sum(values) / len(values), min(values), max(values)))
    return points


def group_rows(results: list[RunResult], grid: dict[str, list], metrics: list[str]) -> list[list[Any]]:
    """Header then, per x (and style) value, suite and metric: the suite's mean task count, the runs, the mean,
    min and max over them (the seeds) and the mean of the metric's copy baseline."""
    x_key, style_key = plot_axes(grid)
    styles = line_styles(results, grid, style_key)
    keys = [key for key in metrics if key.count("/") == 2 and not is_baseline(key)]
    order = list(SUITE_LABELS)  # seen, unseen, held out first, then the other suites
    keys.sort(key=lambda key: (order.index(key.split("/")[1]) if key.split("/")[1] in order else len(order), key))
    rows: list[list[Any]] = [[x_key, *([style_key] if style_key else []), "group", "tasks", "metric", "runs"]]
    rows[0] += ["mean", "min", "max", "baseline"]
    for x_value in grid[x_key]:
        for style in styles:
            for key in keys:
                values = run_values(results, key, x_key, x_value, style)
                if not values:
                    continue
                suite, name = key.split("/")[1:]
                tasks = run_values(results, f"eval/{suite}/tasks", x_key, x_value, style)
                copies = run_values(results, baseline_key(key), x_key, x_value, style)
                rows.append([x_value, *([style[1]] if style else []), suite, _mean(tasks), name, len(values)])
                rows[-1] += [_mean(values), min(values), max(values), _mean(copies)]
    return rows


def groups_markdown(rows: list[list[Any]]) -> str:
    """:func:`group_rows` as one Markdown row per x (and style) value and suite, a column per metric:
    ``mean [min, max] n=<runs> (copy <baseline>)``."""
    lead = rows[0].index("group") + 2  # x (, style), group, tasks
    names = list(dict.fromkeys(row[lead] for row in rows[1:]))
    cells: dict[tuple, dict[str, str]] = {}
    for row in rows[1:]:
        runs, mean, low, high, copy = row[-5:]
        text = f"{_cell(mean)} [{_cell(low)}, {_cell(high)}] n={runs}"
        text += "" if copy is None else f" (copy {_cell(copy)})"
        cells.setdefault(tuple(row[:lead]), {})[row[lead]] = text
    table = [[*rows[0][:lead], *names]] + [[*head, *(by.get(n, "") for n in names)] for head, by in cells.items()]
    return to_markdown(table)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def plot_metric(results: list[RunResult], name: str, keys: list[str], grid: dict[str, list]):
    """A matplotlib Figure of the metric ``name`` (its suites in ``keys``) against the sweep's x axis."""
    from matplotlib.figure import Figure

    x_key, style_key = plot_axes(grid)
    x_values = grid[x_key]
    numeric = all(isinstance(value, int | float) and not isinstance(value, bool) for value in x_values)
    ticks = list(x_values) if numeric else list(range(len(x_values)))  # categorical values: evenly spaced
    figure = Figure(figsize=(6.4, 4.2), layout="constrained")
    axes = figure.add_subplot()
    styles = line_styles(results, grid, style_key)
    for key_index, key in enumerate(keys):
        suite = key[len("eval/") : key.rfind("/")] or "all"  # held_in, held_out, segmentation/colour, ...
        colour = SUITE_COLOURS.get(suite, f"C{key_index + 2}")
        for style_index, style in enumerate(styles):
            points = aggregate(results, key, x_key, x_values, style)
            if not points:
                continue
            xs = [ticks[index] for index, *_ in points]
            means = [mean for _, mean, _, _ in points]
            spread = [
                [mean - low for _, mean, low, _ in points],
                [high - mean for _, mean, _, high in points],
            ]  # min-max error bars
            label = SUITE_LABELS.get(suite, suite)
            if style:
                label += f", {style[0].rsplit('.', 1)[-1]}={style[1]}"
            axes.errorbar(
                xs,
                means,
                yerr=spread,
                color=colour,
                linestyle=LINE_STYLES[style_index % 4],
                marker=MARKERS[style_index % len(MARKERS)],
                capsize=3,
                label=label,
            )
        draw_baseline(axes, results, key, (x_key, x_values, ticks), SUITE_LABELS.get(suite, suite), colour)
    if numeric and spans_decades(x_values):
        axes.set_xscale("log")  # 1, 4, 16, 64, 256 tasks: evenly spaced, as a transition is read
        axes.minorticks_off()
    axes.set_xticks(ticks, [str(value) for value in x_values])
    axes.set_xlabel(x_key)
    axes.set_ylabel(name)
    axes.set_title(f"{name} vs {x_key} (mean over seeds, min-max bars)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def line_styles(results: list[RunResult], grid: dict[str, list], style_key: str | None) -> list[tuple | None]:
    """The ``(style key, value)`` pairs that have runs with results, or ``[None]``: a value with none gets no line or
    row (a trimmed grid's one value is drawn solid, not dotted like the baselines)."""
    values = grid.get(style_key, []) if style_key else []
    ran = [value for value in values if any(r.metrics and r.params.get(style_key) == value for r in results)]
    return [(style_key, value) for value in ran] or [None]


def spans_decades(values: list) -> bool:
    """Positive swept values spanning two orders of magnitude or more: plotted on a log axis."""
    return min(values) > 0 and max(values) >= 100 * min(values)


def draw_baseline(axes, results: list[RunResult], key: str, x_axis: tuple, label: str, colour: str) -> None:
    """The trivial baseline B′ = B of metric ``key`` as a dotted line through its mean over the runs at each x
    (``x_axis`` = (x key, x values, tick positions)): it moves with the tasks a setting trains on, and whether a
    setting beats copying the query is read off the plot."""
    x_key, x_values, ticks = x_axis
    points = aggregate(results, baseline_key(key), x_key, x_values, None)
    if points:
        xs, means = [ticks[index] for index, *_ in points], [mean for _, mean, _, _ in points]
        axes.plot(xs, means, color=colour, linestyle=":", marker=".", linewidth=1.2, label=f"{label}: baseline B′ = B")


def write_report(sweep_dir: Path, wanted: list[str], out: Path | None) -> list[Path]:
    """Write report.md, report.csv, groups.csv and <metric>.png for a sweep; prints the tables, returns the paths."""
    plan = load_sweep(sweep_dir)
    out = out or sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    grid = plan.get("grid", {})
    results = [read_run(sweep_run(sweep_dir, run["name"]), run["name"], run.get("params", {})) for run in plan["runs"]]
    metrics = select_metrics(results, wanted)
    rows = table_rows(results, list(grid), metrics)
    markdown = to_markdown(rows)
    paths = [out / "report.md", out / "report.csv"]
    if grid:
        groups = group_rows(results, grid, metrics)
        markdown += "\n## Groups: mean [min, max] over the runs at each value, copy baseline B′ = B\n\n"
        markdown += groups_markdown(groups)
        paths.append(out / "groups.csv")
        _write_csv(paths[-1], groups)
    paths[0].write_text(f"# Sweep {plan.get('name', sweep_dir.name)} ({plan.get('base', '?')})\n\n" + markdown)
    _write_csv(paths[1], rows)
    families: dict[str, list[str]] = {}
    for key in varying(results, metrics):
        if not is_baseline(key):
            families.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    if grid:
        for name, keys in families.items():
            figure = plot_metric(results, name, keys, grid)
            paths.append(out / f"{name}.png")
            figure.savefig(paths[-1], dpi=120)
    print(markdown)
    constant = [key for key in metrics if key not in varying(results, metrics) and not is_baseline(key)]
    if grid and constant:
        print(f"not plotted (the same in every run): {', '.join(constant)}")
    for status in ("unfinished", "missing"):
        names = [result.name for result in results if result.status == status]
        if names:
            print(f"{status} ({len(names)}): {', '.join(names)}")
    print("wrote " + ", ".join(map(str, paths)))
    return paths


def _write_csv(path: Path, rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["" if value is None else value for value in row] for row in rows])
