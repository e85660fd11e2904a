from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse

from app.cursors import CursorQuery, from_domain, to_domain
from app.deps import CallerDep, CeleryDep, IdempotencyDep, SessionDep, SettingsDep, StoreDep
from app.errors import problem_responses
from app.idempotency import fingerprint_json
from app.negotiation import choose_media_type
from app.schemas import (
    JobCreate,
    JobError,
    JobEventList,
    JobEventOut,
    JobMetricList,
    JobMetricOut,
    JobOut,
    JobPage,
)
from app.services.reports import ReportFigure, report_html, report_png
from distillery.report_render import render_frontier
from domain.auto_distill import AUTO_KIND, search_leaderboard
from domain.jobs import (
    JobRequest,
    cancel_job,
    get_job,
    job_events,
    job_metrics,
    job_report,
    list_jobs,
    submit_job,
)
from domain.orm import Job, utcnow
from domain.pagination import DEFAULT_LIMIT, MAX_LIMIT

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def eta_seconds(job: Job) -> float | None:
    if job.status != "running" or job.started_at is None or not 0 < job.progress < 1:
        return None
    elapsed = (utcnow() - job.started_at).total_seconds()
    return round(elapsed * (1 - job.progress) / job.progress, 1)


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        status=job.status,  # type: ignore[arg-type]
        train_dataset=job.train_dataset_id,
        tuning_dataset=job.tuning_dataset_id,
        unlabeled_dataset=job.unlabeled_dataset_id,
        teacher_model=job.teacher_model_id,
        label=job.label,
        text_columns=job.text_columns,
        hyperparameters=job.hyperparameters,
        accelerator=job.accelerator,
        progress=job.progress,
        eta_seconds=eta_seconds(job),
        cancel_requested=job.cancel_requested,
        metrics=job.metrics,
        error=JobError(code=job.error_code, message=job.error_message or "")
        if job.error_code
        else None,
        model=job.result_model_id,
        attempt=job.attempt,
        device=job.device,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        parent_job=job.parent_job_id,
        phase=job.phase,
    )


@router.post(
    "",
    status_code=202,
    response_model=JobOut,
    operation_id="create_job",
    responses=problem_responses(400, 404, 409, 413, 422, 503),
)
async def create_job(
    request: JobCreate,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    celery: CeleryDep,
    caller: CallerDep,
    idempotency: IdempotencyDep,
) -> JobOut | JSONResponse:
    """Validate and queue a fine-tune, distill or auto_distill job; poll it with
    GET /v1/jobs/{id}. An auto_distill job searches students and recipes for the budget in
    `auto`; its trials are jobs of their own (`parent_job`), its result is on
    GET /v1/jobs/{id}/leaderboard."""

    async def create() -> JobOut:
        # Validation reads checkpoint configs and may read a table: keep it off the event loop.
        job = await run_in_threadpool(
            submit_job,
            session,
            store,
            celery,
            settings.task_queue,
            JobRequest(**request.model_dump()),
            caller,
            settings.allowed_data_roots,
        )
        return job_out(job)

    return await idempotency.run(fingerprint_json(request), 202, create)


@router.get("", response_model=JobPage, operation_id="list_jobs")
def read_jobs(
    session: SessionDep,
    caller: CallerDep,
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = None,
    kind: Literal["finetune", "distill", "auto_distill"] | None = None,
    limit: int = Query(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = CursorQuery,
    parent_job: str | None = Query(
        default=None,
        pattern=r"^job_[0-9a-f]{20}$",
        description="Only the trials of this auto_distill job",
    ),
) -> JobPage:
    """Jobs, newest first."""
    jobs, next_cursor = list_jobs(
        session, status, kind, limit, to_domain(cursor), caller, parent_job=parent_job
    )
    return JobPage(data=[job_out(job) for job in jobs], next_cursor=from_domain(next_cursor))


@router.get(
    "/{job_id}", response_model=JobOut, operation_id="get_job", responses=problem_responses(404)
)
def read_job(job_id: str, session: SessionDep, caller: CallerDep) -> JobOut:
    return job_out(get_job(session, job_id, caller=caller))


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    operation_id="cancel_job",
    responses=problem_responses(404),
)
def cancel(job_id: str, session: SessionDep, caller: CallerDep) -> JobOut:
    """Cancel a job. Idempotent: a queued job ends `cancelled` at once; a running one stops at
    its next step check (seconds) and then ends `cancelled`; a finished job is left as it is."""
    return job_out(cancel_job(session, job_id, caller))


@router.get(
    "/{job_id}/events",
    response_model=JobEventList,
    operation_id="list_job_events",
    responses=problem_responses(404),
)
def read_events(job_id: str, session: SessionDep, caller: CallerDep) -> JobEventList:
    events = job_events(session, job_id, caller)
    return JobEventList(
        data=[JobEventOut.model_validate(event, from_attributes=True) for event in events]
    )


@router.get(
    "/{job_id}/metrics",
    response_model=JobMetricList,
    operation_id="list_job_metrics",
    responses=problem_responses(404),
)
def read_metrics(
    job_id: str,
    session: SessionDep,
    caller: CallerDep,
    kind: Literal["train", "validation"] | None = None,
    after_step: int | None = Query(default=None, ge=0, description="only steps after this"),
) -> JobMetricList:
    """Per logging step: loss terms, learning rate, rows/s; per validation: tuning metrics."""
    metrics = job_metrics(session, job_id, kind, after_step, caller)
    return JobMetricList(
        data=[JobMetricOut.model_validate(metric, from_attributes=True) for metric in metrics]
    )


REPORT_MEDIA_TYPES = ("application/json", "image/png", "text/html")
# application/json comes from response_model; the drawn forms are documented here.
REPORT_CONTENT = {
    "image/png": {
        "schema": {"type": "string", "format": "binary"},
        "example": "the figure chosen by `figure`, as PNG bytes",
    },
    "text/html": {
        "schema": {"type": "string"},
        "example": "<!doctype html>... curves and bars as data: URIs, the numbers as tables",
    },
}


@router.get(
    "/{job_id}/report",
    response_model=dict[str, Any],
    operation_id="get_job_report",
    responses={
        200: {
            "description": "The report as JSON (default), a PNG figure or an HTML page, as "
            "`Accept` asks",
            "content": REPORT_CONTENT,
        },
        **problem_responses(404, 406, 409, 422),
    },
)
def read_report(
    job_id: str,
    session: SessionDep,
    caller: CallerDep,
    baseline_job: list[str] = Query(
        default=[],
        description="A fine-tune job of the same student on the same tuning dataset, as a "
        "control; repeat it for several (init-only: the student's own starting weights; "
        "no-distill: another start). Adds, per control, the points the teacher's outputs "
        "gained and the distillation ratio (distilled - control) / (teacher - control)",
    ),
    figure: ReportFigure = Query(
        default="overview",
        description="For `Accept: image/png`: `curves` (training loss terms per step, "
        "validation metrics per validation), `bars` (teacher / distilled / each control on "
        "quality, parameters, size on disk, CPU ms per row) or `overview` (both in one image)",
    ),
    accept: str | None = Header(default=None, include_in_schema=False),
) -> dict[str, Any] | Response:
    """A distill job's distillation report: student and teacher quality on the tuning rows,
    agreement, calibration (ECE), parameters, size on disk and CPU latency per row.
    `Accept: image/png` draws it, `text/html` gives one page with the figures and numbers.
    An auto_distill job's report is its leaderboard with the chosen trial's distillation
    report (`chosen_report`); its PNG is the accuracy-latency frontier."""
    media_type = choose_media_type(accept, REPORT_MEDIA_TYPES)
    job = get_job(session, job_id, caller=caller)
    if job.kind == AUTO_KIND and media_type != "text/html":
        board = search_leaderboard(session, job)
        if media_type == "image/png":
            return Response(
                render_frontier(board), media_type="image/png", headers={"Vary": "Accept"}
            )
        best = board.get("best") or {}
        if best.get("trial"):
            board["chosen_report"] = job_report(session, best["trial"], baseline_job, caller)
        return JSONResponse(jsonable_encoder(board), headers={"Vary": "Accept"})
    if media_type == "image/png":
        png = report_png(session, job_id, baseline_job, caller, figure)
        return Response(png, media_type="image/png", headers={"Vary": "Accept"})
    if media_type == "text/html":
        page = report_html(session, job_id, baseline_job, caller)
        return HTMLResponse(page, headers={"Vary": "Accept"})
    report = job_report(session, job_id, baseline_job, caller)
    return JSONResponse(jsonable_encoder(report), headers={"Vary": "Accept"})


LEADERBOARD_MEDIA_TYPES = ("application/json", "image/png")


@router.get(
    "/{job_id}/leaderboard",
    response_model=dict[str, Any],
    operation_id="get_job_leaderboard",
    responses={
        200: {
            "description": "The leaderboard as JSON (default), or its accuracy-latency frontier "
            "as a PNG plot (`Accept: image/png`)",
            "content": {
                "image/png": {
                    "schema": {"type": "string", "format": "binary"},
                    "example": "tuning accuracy against CPU ms per row, as PNG bytes",
                }
            },
        },
        **problem_responses(404, 406, 422),
    },
)
def read_leaderboard(
    job_id: str,
    session: SessionDep,
    caller: CallerDep,
    accept: str | None = Header(default=None, include_in_schema=False),
) -> dict[str, Any] | Response:
    """An auto_distill job's leaderboard (AutoGluon's `leaderboard()`), filled in as its trials
    run: every trial and int8 variant with its tuning accuracy, measured CPU latency, speed-up
    over the teacher, size, parameters, int8 drop, cost and status; the teacher; the Pareto
    frontier of accuracy against latency; the best row within budget (the job's model); and
    every candidate measured before training, pruned ones with the reason."""
    media_type = choose_media_type(accept, LEADERBOARD_MEDIA_TYPES)
    board = search_leaderboard(session, get_job(session, job_id, caller=caller))
    if media_type == "image/png":
        png = render_frontier(board)
        return Response(png, media_type="image/png", headers={"Vary": "Accept"})
    return JSONResponse(jsonable_encoder(board), headers={"Vary": "Accept"})
