"""The distillation report as pictures: learning curves and comparison bars (PNG), or one HTML
page with both and the numbers. The numbers come from `job_report`; drawing is the core's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from distillery.report_render import (
    baseline_titles,
    render_bars,
    render_curves,
    render_html,
    render_overview,
)
from domain.auth import Caller
from domain.jobs import job_report
from domain.orm import JobMetric

ReportFigure = Literal["overview", "curves", "bars"]


def learning_curve_records(session: Session, job_id: str) -> list[dict[str, Any]]:
    """The job's logged steps and validations, one per (kind, step): where an attempt was
    retried and resumed, the later attempt's row wins."""
    latest: dict[tuple[str, int], JobMetric] = {}
    for metric in session.scalars(
        select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.id)
    ):
        latest[(metric.kind, metric.step)] = metric
    return [
        {"kind": m.kind, "step": m.step, "epoch": m.epoch, "values": m.values}
        for m in sorted(latest.values(), key=lambda m: (m.step, m.id))
    ]


def _figures(
    session: Session, report: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The student's curves, and each baseline's by its title on the figures."""
    # job_report has already checked that the caller may see every job.
    return learning_curve_records(session, report["job"]), {
        title: learning_curve_records(session, baseline["job"])
        for title, baseline in zip(baseline_titles(report), report["baselines"], strict=True)
    }


def report_png(
    session: Session,
    job_id: str,
    baseline_job_ids: Sequence[str],
    caller: Caller,
    figure: ReportFigure,
) -> bytes:
    report = job_report(session, job_id, baseline_job_ids, caller)
    if figure == "bars":
        return render_bars(report)
    student, baselines = _figures(session, report)
    if figure == "curves":
        return render_curves(student, baselines, title=f"learning curves: {report['job']}")
    return render_overview(report, student, baselines)


def report_html(
    session: Session, job_id: str, baseline_job_ids: Sequence[str], caller: Caller
) -> str:
    report = job_report(session, job_id, baseline_job_ids, caller)
    student, baselines = _figures(session, report)
    return render_html(
        report,
        {
            "learning curves: training loss terms per step, validation on the tuning rows": (
                render_curves(student, baselines, title=f"learning curves: {report['job']}")
            ),
            "teacher, distilled student and its controls side by side": render_bars(report),
        },
    )
