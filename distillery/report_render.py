"""The distillation report drawn for people: learning curves and a comparison chart as PNG, and
one self-contained HTML page that embeds them next to the numbers.

Input is the report as `distillery.report` (plus the service's ids and names) produces it, and
metric records shaped like `GET /v1/jobs/{id}/metrics` rows: `{"kind": "train" | "validation",
"step": int, "epoch": float, "values": {name: number}}`. Names in the report come from users,
so the page escapes every string it shows.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

# The Agg canvas and Figure directly, never pyplot: no display needed, no global figure state,
# so request threads can draw at the same time.
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

MetricRecord = Mapping[str, Any]

SIDE_COLOURS = {"teacher": "#4c72b0", "distilled": "#dd8452"}
BASELINE_COLOURS = ("#8c8c8c", "#555555", "#bbbbbb", "#333333")
BASELINE_STYLES = ("--", ":", "-.")
# Validation values worth a curve, in the order they are drawn; the rest (log_loss, mae, ...)
# stay in the JSON and the metrics endpoint.
VALIDATION_CURVES = ("accuracy", "f1", "f1_macro", "teacher_agreement", "rmse", "r2")
METRIC_COLOURS = ("#1f77b4", "#2ca02c", "#17becf", "#9467bd", "#d62728", "#bcbd22")
DPI = 110


def baseline_titles(report: Mapping[str, Any]) -> list[str]:
    """Each baseline's control ("init-only", "no-distill"), numbered where two share one."""
    controls = [b["control"] for b in report.get("baselines", [])]
    return [
        f"{c} {controls[:i].count(c) + 1}" if controls.count(c) > 1 else c
        for i, c in enumerate(controls)
    ]


def _sides(report: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any], str | None]]:
    """(title, colour, numbers, user's model name) per column: teacher, distilled, controls."""
    names = report.get("names") or {}
    sides = [
        ("teacher", SIDE_COLOURS["teacher"], report["teacher"], names.get("teacher")),
        ("distilled", SIDE_COLOURS["distilled"], report["student"], names.get("student")),
    ]
    for index, (title, baseline) in enumerate(
        zip(baseline_titles(report), report.get("baselines", []), strict=True)
    ):
        colour = BASELINE_COLOURS[index % len(BASELINE_COLOURS)]
        sides.append((title, colour, baseline, baseline.get("name")))
    return sides


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _series(records: Sequence[MetricRecord], kind: str, name: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for record in records:
        value = record["values"].get(name)
        if record["kind"] == kind and _is_number(value):
            steps.append(int(record["step"]))
            values.append(float(value))
    return steps, values


def _loss_names(records: Sequence[MetricRecord]) -> list[str]:
    """`loss` (the weighted total) first, then each term the run logged."""
    names = {n for r in records if r["kind"] == "train" for n in r["values"] if n.endswith("loss")}
    return sorted(names, key=lambda n: (n != "loss", n))


Baselines = Mapping[str, Sequence[MetricRecord]]


def _style(index: int) -> str:
    return BASELINE_STYLES[index % len(BASELINE_STYLES)]


def _draw_losses(axes: Axes, student: Sequence[MetricRecord], baselines: Baselines) -> None:
    for name in _loss_names(student):
        axes.plot(*_series(student, "train", name), label=f"distilled {name}", linewidth=1.4)
    for index, (title, records) in enumerate(baselines.items()):
        steps, values = _series(records, "train", "loss")
        axes.plot(steps, values, _style(index), color="black", label=f"{title} loss", lw=1.2)
    axes.set_title("training loss per step")
    axes.set_xlabel("step")
    _legend_or_note(axes, "no training steps logged")


def _draw_validation(axes: Axes, student: Sequence[MetricRecord], baselines: Baselines) -> None:
    # One colour per metric: solid for the distilled student, dashed or dotted for controls.
    for colour, name in zip(METRIC_COLOURS, VALIDATION_CURVES, strict=True):
        steps, values = _series(student, "validation", name)
        if steps:
            axes.plot(steps, values, color=colour, marker="o", ms=3, label=f"distilled {name}")
        if name == "teacher_agreement":
            continue
        for index, (title, records) in enumerate(baselines.items()):
            steps, values = _series(records, "validation", name)
            if steps:
                axes.plot(steps, values, _style(index), color=colour, ms=3, label=f"{title} {name}")
    axes.set_title("validation on the tuning rows")
    axes.set_xlabel("step")
    _legend_or_note(axes, "no validations logged")


def _legend_or_note(axes: Axes, note: str) -> None:
    if axes.lines:
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
    else:
        axes.text(0.5, 0.5, note, ha="center", va="center", transform=axes.transAxes)


BarValues = list[tuple[str, str, float | None]]  # (side title, colour, value)


def _bar_panels(report: Mapping[str, Any]) -> list[tuple[str, BarValues]]:
    """(panel title, value per side) for each quantity the bar chart compares."""
    student = report["student"]
    if "rmse" in student:
        quality = ("rmse", "r2")
    else:
        quality = ("accuracy", "f1" if "f1" in student else "f1_macro")
    panels: list[tuple[str, BarValues]] = []
    sides = _sides(report)

    def values(read: Any) -> BarValues:
        return [
            (title, colour, float(value) if _is_number(value := read(numbers)) else None)
            for title, colour, numbers, _ in sides
        ]

    for metric in quality:
        panels.append((metric, values(lambda side, m=metric: side.get(m))))
    panels.append(("parameters (M)", values(lambda side: _scaled(side.get("parameters"), 1e6))))
    panels.append(("size on disk (MB)", values(lambda side: _scaled(side.get("size_bytes"), 1e6))))
    panels.append(
        (
            "CPU ms per row (batched)",
            values(lambda side: (side.get("cpu_latency") or {}).get("batched_ms_per_row")),
        )
    )
    return panels


def _scaled(value: Any, unit: float) -> float | None:
    return value / unit if _is_number(value) else None


def _draw_bars(axes: Axes, title: str, per_side: BarValues) -> None:
    bars = axes.bar(
        [side for side, _, _ in per_side],
        [value or 0.0 for _, _, value in per_side],
        color=[colour for _, colour, _ in per_side],
    )
    for bar, (_, _, value) in zip(bars, per_side, strict=True):
        axes.annotate(
            "n/a" if value is None else _short(value),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    axes.set_title(title, fontsize=10)
    axes.tick_params(axis="x", labelsize=8)
    axes.margins(y=0.15)


def _short(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _title(report: Mapping[str, Any]) -> str:
    names = report.get("names") or {}
    student = names.get("student") or report.get("model") or "student"
    return f"distillation report: {student} ({report.get('rows', '?')} tuning rows)"


def render_curves(
    student: Sequence[MetricRecord],
    baselines: Baselines | None = None,
    title: str = "learning curves",
) -> bytes:
    """PNG: training loss terms per step and validation metrics per validation, for the
    distilled student and (dashed, dotted) each control by its title."""
    figure = _new_figure(11, 4)
    figure.suptitle(title)
    loss_axes, validation_axes = figure.subplots(1, 2)
    _draw_losses(loss_axes, student, baselines or {})
    _draw_validation(validation_axes, student, baselines or {})
    return _png(figure)


def render_bars(report: Mapping[str, Any]) -> bytes:
    """PNG: teacher, distilled and each control side by side on quality, parameters, size on
    disk and CPU latency per row."""
    panels = _bar_panels(report)
    figure = _new_figure(2.6 * len(panels), 3.4)
    figure.suptitle(_title(report))
    for axes, (title, per_side) in zip(figure.subplots(1, len(panels)), panels, strict=True):
        _draw_bars(axes, title, per_side)
    return _png(figure)


def render_overview(
    report: Mapping[str, Any],
    student: Sequence[MetricRecord],
    baselines: Baselines | None = None,
) -> bytes:
    """PNG: the learning curves above the comparison bars, in one picture."""
    panels = _bar_panels(report)
    figure = _new_figure(max(11.0, 2.6 * len(panels)), 7.5)
    figure.suptitle(_title(report))
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.1, 1])
    loss_axes, validation_axes = top.subplots(1, 2)
    _draw_losses(loss_axes, student, baselines or {})
    _draw_validation(validation_axes, student, baselines or {})
    for axes, (title, per_side) in zip(bottom.subplots(1, len(panels)), panels, strict=True):
        _draw_bars(axes, title, per_side)
    return _png(figure)


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if _is_number(value):
        if isinstance(value, int):
            return f"{value:,}"
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return html.escape(str(value))


def _comparison_rows(report: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    sides = [numbers for _, _, numbers, _ in _sides(report)]
    quality = [
        k
        for k in ("accuracy", "f1", "f1_macro", "roc_auc", "log_loss", "ece", "rmse", "mae", "r2")
        if any(k in side for side in sides)
    ]
    rows: list[tuple[str, list[Any]]] = [(k, [side.get(k) for side in sides]) for k in quality]
    rows.append(("parameters", [side.get("parameters") for side in sides]))
    rows.append(("size on disk (bytes)", [side.get("size_bytes") for side in sides]))
    for key, title in (
        ("single_row_ms", "CPU ms, one row"),
        ("batched_ms_per_row", "CPU ms per row, batched"),
    ):
        rows.append((title, [(side.get("cpu_latency") or {}).get(key) for side in sides]))
    if report.get("baselines"):
        # What the teacher's outputs added over each control (n/a under teacher and student).
        rows.append(
            (
                "gain over control (points)",
                [None, None, *(b.get("gain_points") for b in report["baselines"])],
            )
        )
        rows.append(
            (
                "distillation ratio",
                [None, None, *(b.get("distillation_ratio") for b in report["baselines"])],
            )
        )
    return rows


def render_html(report: Mapping[str, Any], figures: Mapping[str, bytes]) -> str:
    """One self-contained page: the figures (PNG bytes, by caption) as data: URIs, the
    side-by-side numbers, and the summary ratios. Every string from the report is escaped."""
    header = "".join(
        f"<th>{html.escape(title)}<br><small>{_cell(name)}</small></th>"
        for title, _, _, name in _sides(report)
    )
    body_rows = "".join(
        f"<tr><th>{html.escape(title)}</th>{''.join(f'<td>{_cell(v)}</td>' for v in values)}</tr>"
        for title, values in _comparison_rows(report)
    )
    summary = [
        ("job", report.get("job")),
        ("student model", report.get("model")),
        ("tuning rows", report.get("rows")),
        ("student-teacher agreement", report.get("agreement", report.get("agreement_rmse"))),
        ("parameter ratio (student / teacher)", report.get("parameter_ratio")),
        ("size ratio (student / teacher)", report.get("size_ratio")),
        ("CPU speed-up, batched (teacher / student)", report.get("cpu_speedup_batched")),
    ]
    summary_rows = "".join(
        f"<tr><th>{html.escape(title)}</th><td>{_cell(value)}</td></tr>"
        for title, value in summary
        if value is not None
    )
    images = "".join(
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode("ascii")}"><figcaption>{html.escape(caption)}'
        "</figcaption></figure>"
        for caption, png in figures.items()
    )
    title = html.escape(_title(report))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th {{ background: #f4f4f4; text-align: left; }}
img {{ max-width: 100%; }}
figure {{ margin: 1em 0; }}
</style></head>
<body>
<h1>{title}</h1>
<p>Measured on the job's tuning rows, which no model trained on. Controls: <em>init-only</em>
is the student's own starting weights trained on the labels alone, <em>no-distill</em> another
start (e.g. the pretrained model) on the labels alone. Gain is the distilled student's accuracy
minus the control's, in points (for regression: the RMSE it takes off); the distillation ratio
is (distilled &minus; control) / (teacher &minus; control): 1 keeps all the teacher adds.</p>
<table><tr><th></th>{header}</tr>{body_rows}</table>
<table>{summary_rows}</table>
{images}
</body></html>
"""


FRONTIER_COLOURS = {"float": "#dd8452", "int8": "#55a868", "teacher": "#4c72b0"}


def render_frontier(board: Mapping[str, Any]) -> bytes:
    """PNG: an auto-distill search's trials, tuning accuracy against CPU latency per row (log
    scale; each row's `comparable_ms_per_row`: one teacher timing over the row's own measured
    speed-up, so rows timed at different moments share a scale), float and int8 apart, the
    teacher, the no-distill control circled, trials stopped early crossed, the Pareto frontier
    as a step line, the latency budget as a vertical line and the chosen student starred. Input
    is `GET /v1/jobs/{id}/leaderboard`'s body."""
    figure = _new_figure(10.5, 5.2)
    axes = figure.subplots()
    rows = [r for r in board.get("rows", []) if _is_number(r.get("comparable_ms_per_row"))]
    rows = [r for r in rows if _is_number(r.get("tuning_accuracy"))]
    teacher: Mapping[str, Any] | None = board.get("teacher")
    teacher_measured = teacher is not None and _is_number(teacher.get("comparable_ms_per_row"))
    points = [*rows, *([teacher] if teacher_measured else [])]

    def mark(points: Sequence[Mapping[str, Any]], **style: Any) -> None:
        if points:
            axes.scatter(
                [p["comparable_ms_per_row"] for p in points],
                [p["tuning_accuracy"] for p in points],
                **style,
            )

    for variant in ("float", "int8"):
        mark(
            [r for r in rows if r.get("variant") == variant],
            c=FRONTIER_COLOURS[variant],
            label=f"trials ({variant})",
            s=36,
            zorder=3,
        )
    mark(
        [r for r in rows if r.get("recipe") == "no_distill"],
        facecolors="none",
        edgecolors="#333333",
        s=140,
        label="no-distill control",
        zorder=4,
    )
    mark(
        [r for r in rows if r.get("stopped_early_at") is not None],
        marker="x",
        c="#333333",
        s=50,
        label="stopped early (ASHA)",
        zorder=4,
    )
    if teacher is not None and teacher_measured:
        mark([teacher], marker="s", c=FRONTIER_COLOURS["teacher"], s=60, label="teacher", zorder=3)
    front = sorted((p for p in points if p.get("pareto")), key=lambda p: p["comparable_ms_per_row"])
    if len(front) > 1:
        axes.step(
            [p["comparable_ms_per_row"] for p in front],
            [p["tuning_accuracy"] for p in front],
            where="post",
            c="#8c8c8c",
            ls="--",
            lw=1,
            label="Pareto frontier",
            zorder=2,
        )
    budget = board.get("budget") or {}
    limit: Any = budget.get("max_latency_ms_per_row")
    speedup = budget.get("min_speedup")
    if not _is_number(limit) and _is_number(speedup) and teacher is not None and teacher_measured:
        limit = teacher["comparable_ms_per_row"] / speedup
    if _is_number(limit):
        axes.axvline(limit, c="#c44e52", lw=1, label=f"budget ({budget.get('describe', '')})")
    best = board.get("best")
    if best and _is_number(best.get("comparable_ms_per_row")):
        mark([best], marker="*", c="#c44e52", s=260, label=f"chosen: {best.get('name')}", zorder=5)
    slowest = max((p["comparable_ms_per_row"] for p in points), default=None)
    for point in points:
        if point.get("pareto") or point is best:
            # The slowest point's label runs to its left, so the plot's edge does not cut it.
            last = point["comparable_ms_per_row"] == slowest
            axes.annotate(
                str(point.get("name")),
                (point["comparable_ms_per_row"], point["tuning_accuracy"]),
                textcoords="offset points",
                xytext=(-5 if last else 5, 4),
                ha="right" if last else "left",
                fontsize=7,
            )
    if points:
        axes.set_xscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")
        axes.xaxis.set_major_formatter(plain)
        axes.xaxis.set_minor_formatter(plain)
        axes.tick_params(axis="x", which="minor", labelsize=7)
        # Outside the plot: inside, it hides whichever corner the teacher sits in.
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        _legend_or_note(axes, "no trial has been measured yet")
    axes.set_xlabel(
        f"CPU ms per row ({budget.get('latency_mode', 'batched')}, log scale), timed with the "
        "teacher before training"
    )
    axes.set_ylabel("tuning accuracy")
    axes.grid(alpha=0.3)
    figure.suptitle(
        f"auto-distill {board.get('job', '')}: {len(rows)} trial rows, status "
        f"{board.get('status', '?')}"
    )
    return _png(figure)
