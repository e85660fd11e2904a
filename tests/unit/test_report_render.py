"""The report's figures and page, drawn by real matplotlib and read back as images."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from matplotlib.image import imread

from distillery.report_render import render_bars, render_curves, render_html, render_overview

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = '<script>alert("x")</script> & co'


def side(accuracy: float, parameters: int, batched_ms: float) -> dict:
    return {
        "accuracy": accuracy,
        "f1": accuracy - 0.01,
        "roc_auc": accuracy + 0.05,
        "log_loss": 0.5,
        "ece": 0.04,
        "parameters": parameters,
        "size_bytes": parameters * 4,
        "cpu_latency": {"single_row_ms": batched_ms * 2, "batched_ms_per_row": batched_ms},
    }


def classification_report(controls: tuple[str, ...] = ("init-only", "no-distill")) -> dict:
    report = {
        "job": "job_0123",
        "model": "mdl_0123",
        "rows": 200,
        "names": {"student": HOSTILE, "teacher": "teacher-model"},
        "student": side(0.78, 15_000_000, 1.2),
        "teacher": side(0.84, 22_700_000, 2.3),
        "agreement": 0.86,
        "parameter_ratio": 0.66,
        "size_ratio": 0.66,
        "cpu_speedup_batched": 1.9,
    }
    report["baselines"] = [
        {
            "control": control,
            "job": f"job_{index}",
            "name": f"control {index}",
            "accuracy": 0.74 - index / 100,
            "f1": 0.73,
            "parameters": 15_000_000,
            "gain_points": 4.0 + index,
            "distillation_ratio": 0.4,
        }
        for index, control in enumerate(controls)
    ]
    return report


def metric_records(loss_terms: tuple[str, ...], with_agreement: bool) -> list[dict]:
    records = [
        {
            "kind": "train",
            "step": step,
            "epoch": step / 20,
            "values": {name: 1.0 / step for name in loss_terms} | {"learning_rate": 1e-4},
        }
        for step in range(10, 81, 10)
    ]
    for step in (20, 40, 60, 80):
        values = {"accuracy": 0.5 + step / 400, "f1": 0.5 + step / 500, "log_loss": 0.6}
        if with_agreement:
            values["teacher_agreement"] = 0.6 + step / 400
        records.append({"kind": "validation", "step": step, "epoch": step / 20, "values": values})
    return records


def decoded(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_MAGIC)
    return imread(io.BytesIO(png), format="png")


def assert_drawn(png: bytes, min_width: int) -> None:
    pixels = decoded(png)
    height, width = pixels.shape[:2]
    assert width >= min_width and height >= 300
    # Not a blank canvas: lines, bars and text leave many distinct colours.
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50


def test_curves_png_shows_student_and_baseline() -> None:
    student = metric_records(("loss", "hard_loss", "soft_loss"), with_agreement=True)
    baseline = metric_records(("loss", "hard_loss"), with_agreement=False)
    with_baseline = render_curves(student, {"init-only": baseline})
    assert_drawn(with_baseline, min_width=1000)
    assert with_baseline != render_curves(student), "the baseline's curves must be drawn"
    two = render_curves(student, {"init-only": baseline, "no-distill": baseline[:4]})
    assert two != with_baseline, "each control's curves must be drawn"


def test_curves_png_without_any_metrics_still_renders() -> None:
    assert_drawn(render_curves([]), min_width=1000)


def test_bars_png_for_classification_and_regression() -> None:
    assert_drawn(render_bars(classification_report()), min_width=1000)
    assert render_bars(classification_report()) != render_bars(classification_report(()))

    regression_side = {"rmse": 0.3, "mae": 0.2, "r2": 0.7, "parameters": 1000, "size_bytes": 4000}
    regression = {
        "rows": 50,
        "student": {**regression_side, "cpu_latency": {"batched_ms_per_row": 0.5}},
        "teacher": {**regression_side, "rmse": 0.2, "parameters": 3000},
        "agreement_rmse": 0.1,
    }
    assert_drawn(render_bars(regression), min_width=1000)


def test_overview_png_combines_curves_and_bars() -> None:
    overview = render_overview(
        classification_report(),
        metric_records(("loss", "soft_loss"), True),
        {"init-only": metric_records(("loss",), False)},
    )
    pixels = decoded(overview)
    assert pixels.shape[0] > decoded(render_bars(classification_report())).shape[0]
    assert_drawn(overview, min_width=1000)


def test_html_embeds_the_figures_and_escapes_user_names() -> None:
    report = classification_report()
    curves = render_curves(metric_records(("loss", "soft_loss"), True))
    bars = render_bars(report)
    page = render_html(report, {"learning curves": curves, "comparison": bars})

    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(data) for data in embedded] == [curves, bars]
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in page
    for row in (
        "accuracy",
        "CPU ms per row, batched",
        "<th>distillation ratio</th>",
        "<th>init-only<br><small>control 0</small>",
        "<th>no-distill<br><small>control 1</small>",
    ):
        assert row in page
    # The points each control was beaten by, in its own column.
    assert "<td>4.0000</td><td>5.0000</td>" in page
    # The baseline's latency was never measured: said, not invented.
    assert "n/a" in page
    assert "0.7800" in page and "22,700,000" in page


def test_html_without_baseline_has_two_columns() -> None:
    page = render_html(classification_report(controls=()), {})
    assert "<th>distilled<br>" in page and "<th>no-distill<br>" not in page
    assert "distillation ratio</th>" not in page
    assert "<img" not in page


def test_two_controls_of_one_kind_are_numbered() -> None:
    page = render_html(classification_report(controls=("no-distill", "no-distill")), {})
    assert "<th>no-distill 1<br>" in page and "<th>no-distill 2<br>" in page
