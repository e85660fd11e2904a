"""Jobs: the list (by status, kind and search), the submit form, one job live (status,
progress, ETA, curves, events, cancel), an auto-distill search's leaderboard and frontier, and
a distill job's report."""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.cursors import CursorQuery, to_domain
from app.deps import CeleryDep, SessionDep, SettingsDep, StoreDep
from app.idempotency import fingerprint_json
from app.routes.jobs import job_out
from app.schemas import JobCreate
from app.services.reports import report_html
from app.ui.forms import (
    AUTO_CHECKBOXES,
    AUTO_DEFAULTS,
    AUTO_TEXT_FIELDS,
    auto_settings,
    blank_to_none,
    format_hyperparameters,
    parse_hyperparameters,
)
from app.ui.once import IDEMPOTENCY_FIELD, create_once
from app.ui.problems import field_of, is_known_problem, problem_for
from app.ui.render import page, with_console_headers
from app.ui.routing import ConsoleRoute
from app.ui.session import CSRF_FIELD, ConsoleCaller, check_csrf
from app.uploads import parse_name_list
from distillery.auto import LATENCY_KEYS
from distillery.report_render import render_frontier
from domain.auth import Caller
from domain.auto_distill import AUTO_KIND, children, search_leaderboard
from domain.datasets import list_datasets
from domain.jobs import (
    JobRequest,
    cancel_job,
    get_job,
    job_events,
    job_report,
    list_jobs,
    submit_job,
)
from domain.models import list_models
from domain.orm import Job, JobMetric
from domain.pagination import DEFAULT_LIMIT, MAX_LIMIT
from domain.status import TERMINAL_STATUSES

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

JobStatusFilter = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKindFilter = Literal["finetune", "distill", "auto_distill"]
FormKind = Literal["finetune", "distill", "auto_distill"]
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
KINDS = ("finetune", "distill", "auto_distill")
FORM_KINDS = ("finetune", "distill", "auto_distill")
AUTO_FIELDS = (*AUTO_TEXT_FIELDS, *AUTO_CHECKBOXES)
JobIdQuery = Query(default=None, pattern=r"^job_[0-9a-f]{20}$")
# What the submit form starts with: a short run on the default backbone.
DEFAULT_HYPERPARAMETERS = "optimization.max_epochs=2\n"
# The report page's iframe shows the report renderer's own page, which styles itself inline.
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'"


@router.get("/ui/jobs")
def jobs_page(
    request: Request,
    session: SessionDep,
    caller: ConsoleCaller,
    # The filter form sends "" for "any".
    status: JobStatusFilter | Literal[""] | None = None,
    kind: JobKindFilter | Literal[""] | None = None,
    parent_job: str | None = JobIdQuery,
    cursor: str | None = CursorQuery,
) -> Response:
    """Jobs, newest first; `parent_job` lists one search's trials. A search shows how many
    trials it has, a trial which search it belongs to."""
    status, kind = status or None, kind or None
    if parent_job is not None:
        get_job(session, parent_job, caller=caller)  # another key's search is not found
    jobs, next_cursor = list_jobs(
        session, status, kind, DEFAULT_LIMIT, to_domain(cursor), caller, parent_job=parent_job
    )
    return page(
        request,
        "jobs.html",
        {
            "jobs": [job_out(job) for job in jobs],
            "trial_counts": _trial_counts(session, jobs),
            "next_cursor": next_cursor,
            "statuses": STATUSES,
            "kinds": KINDS,
            "status": status,
            "kind": kind,
            "parent_job": parent_job,
        },
    )


def _trial_counts(session: Session, jobs: list[Job]) -> dict[str, int]:
    """How many trials each search on the page has (one query for the page)."""
    searches = [job.id for job in jobs if job.kind == AUTO_KIND]
    if not searches:
        return {}
    counts = session.execute(
        select(Job.parent_job_id, func.count())
        .where(Job.parent_job_id.in_(searches))
        .group_by(Job.parent_job_id)
    ).all()
    return {str(parent): int(count) for parent, count in counts}


def _choices(session: Session, caller: Caller) -> dict[str, Any]:
    """The datasets and models the form offers, newest first (the caller's own only)."""
    datasets, _ = list_datasets(session, caller, MAX_LIMIT, None)
    models, _ = list_models(session, caller, MAX_LIMIT, None)
    return {"datasets": datasets, "models": models}


def _form_page(
    request: Request,
    session: Session,
    caller: Caller,
    form: dict[str, str],
    *,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    return page(
        request,
        "job_new.html",
        {**_choices(session, caller), "form": form, "errors": errors or {}, "kinds": FORM_KINDS},
        status_code=status_code,
    )


@router.get("/ui/jobs/new")
def new_job_page(
    request: Request,
    session: SessionDep,
    caller: ConsoleCaller,
    kind: FormKind = "finetune",
    teacher_model: str = "",
    train_dataset: str = "",
) -> Response:
    form = {
        "kind": kind,
        "teacher_model": teacher_model,
        "train_dataset": train_dataset,
        "hyperparameters": DEFAULT_HYPERPARAMETERS,
        "accelerator": "any",
        **AUTO_DEFAULTS,
    }
    return _form_page(request, session, caller, form)


@router.post("/ui/jobs/new")
async def submit_job_form(
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    celery: CeleryDep,
    caller: ConsoleCaller,
) -> Response:
    """The form becomes the API's JobCreate body and goes through the same checks and the same
    submit as POST /v1/jobs; any refusal is shown next to the field it names. The form's
    one-time key makes a resubmit open the job the first post queued instead of a second."""
    submitted = await request.form()
    check_csrf(request, str(submitted.get(CSRF_FIELD, "")))
    names = (
        "kind",
        "train_dataset",
        "tuning_dataset",
        "teacher_model",
        "unlabeled_dataset",
        "label",
        "text_columns",
        "hyperparameters",
        "accelerator",
    )
    form = {name: str(submitted.get(name, "")) for name in (*names, *AUTO_FIELDS)}
    try:
        body: dict[str, Any] = {
            "kind": form["kind"],
            "train_dataset": form["train_dataset"],
            "hyperparameters": parse_hyperparameters(form["hyperparameters"]),
            "accelerator": form["accelerator"] or "any",
        }
        optional = ["tuning_dataset", "label"]
        if form["kind"] in ("distill", AUTO_KIND):
            # A fine-tune has no teacher: the form hides these fields, and leaves them out.
            optional += ["teacher_model", "unlabeled_dataset"]
        if form["kind"] == AUTO_KIND:
            body["auto"] = auto_settings(form)
        for name in optional:
            if (value := blank_to_none(form[name])) is not None:
                body[name] = value
        if (columns := parse_name_list(form["text_columns"])) is not None:
            body["text_columns"] = columns
        request_body = JobCreate.model_validate(body)

        async def submit() -> str:
            job = await run_in_threadpool(
                submit_job,
                session,
                store,
                celery,
                settings.task_queue,
                JobRequest(**request_body.model_dump()),
                caller,
                settings.allowed_data_roots,
            )
            return job.id

        key = str(submitted.get(IDEMPOTENCY_FIELD, ""))
        job_id = await create_once(request, caller, key, fingerprint_json(request_body), submit)
    except Exception as exc:
        if not is_known_problem(request, exc):
            raise
        session.rollback()
        problem = await problem_for(request, exc)
        field = re.sub(r"\.\d+$", "", field_of(problem))  # auto.students.0: the students box
        if field.startswith("auto.") and field not in AUTO_FIELDS:
            field = "auto"  # a setting the form has no box for: above the search's settings
        errors = {field: f"{problem['title']}: {problem['detail']}"}
        return await run_in_threadpool(
            _form_page,
            request,
            session,
            caller,
            form,
            errors=errors,
            status_code=int(problem["status"]),
        )
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


def _related(session: Session, caller: Caller, job: Job) -> dict[str, str]:
    """Display names of the datasets and models the job names, as the caller may see them."""
    rows: list[Any] = [
        job.train_dataset,
        job.tuning_dataset,
        job.unlabeled_dataset,
        job.teacher_model,
    ]
    return {row.id: row.name for row in rows if row is not None and caller.can_see(row.owner)}


def _search_version(search: Job, trials: list[Job]) -> str:
    """Changes whenever the leaderboard can: the search's status or phase, or a trial's status
    (a trial's numbers are written when it ends). The page polls this, not the leaderboard."""
    state = [search.status, search.phase or "", *(f"{t.id}:{t.status}" for t in trials)]
    return hashlib.sha256("|".join(state).encode()).hexdigest()[:16]


def _search_context(session: Session, search: Job) -> dict[str, Any]:
    """What leaderboard.html draws: the leaderboard as it stands, and the trials' progress."""
    # The version is read before the leaderboard: a trial that ends in between makes the page's
    # next poll see a newer version and fetch again, never a stale board under a fresh version.
    trials = children(session, search.id)
    board = search_leaderboard(session, search)
    measured = [
        row
        for row in [*board["rows"], *([board["teacher"]] if board["teacher"] else [])]
        if row.get("comparable_ms_per_row") is not None and row.get("tuning_accuracy") is not None
    ]
    return {
        "board": board,
        "version": _search_version(search, trials),
        "progress": {trial.id: trial.progress for trial in trials},
        "trials_total": len(trials),
        "trials_ended": sum(trial.status in TERMINAL_STATUSES for trial in trials),
        "measured": bool(measured),
        "latency_key": LATENCY_KEYS.get(board["budget"]["latency_mode"], "batched_ms_per_row"),
    }


@router.get("/ui/jobs/{job_id}")
def job_page(request: Request, job_id: str, session: SessionDep, caller: ConsoleCaller) -> Response:
    job = get_job(session, job_id, caller=caller)
    context: dict[str, Any] = {
        "job": job_out(job),
        "names": _related(session, caller, job),
        "events": job_events(session, job_id, caller),
        "terminal": job.status in TERMINAL_STATUSES,
        "has_report": job.kind == "distill" and "report" in job.metrics,
        "hyperparameters": format_hyperparameters(job.hyperparameters),
        # A search's trial says which search it is and what it tries.
        "trial": (job.metrics or {}).get("trial") if job.parent_job_id else None,
    }
    if job.kind == AUTO_KIND:
        context.update(_search_context(session, job))
    return page(request, "job.html", context)


@router.get("/ui/jobs/{job_id}/leaderboard")
def leaderboard_part(
    request: Request, job_id: str, session: SessionDep, caller: ConsoleCaller
) -> Response:
    """A search's leaderboard alone, for its job page to swap in while the search runs."""
    job = get_job(session, job_id, caller=caller)
    return page(request, "leaderboard.html", {"job": job_out(job), **_search_context(session, job)})


@router.get("/ui/jobs/{job_id}/frontier.png")
def frontier_png(
    request: Request, job_id: str, session: SessionDep, caller: ConsoleCaller
) -> Response:
    """A search's accuracy-latency frontier, as GET /v1/jobs/{id}/leaderboard draws it for
    `Accept: image/png`, behind the console's session (an <img> sends no API key)."""
    job = get_job(session, job_id, caller=caller)
    png = render_frontier(search_leaderboard(session, job))
    return with_console_headers(request, Response(png, media_type="image/png"))


@router.get("/ui/jobs/{job_id}/live.json")
def job_live(
    job_id: str,
    session: SessionDep,
    caller: ConsoleCaller,
    after: int = Query(default=0, ge=0, description="metric rows after this id only"),
) -> JSONResponse:
    """What the job page polls: the job as GET /v1/jobs/{id} shows it, the metric rows logged
    since the last poll (by row id: a retried attempt's rows come after the first's, and the
    page keeps the latest per step, as the report does), and the events so far."""
    job = get_job(session, job_id, caller=caller)
    metrics = list(
        session.scalars(
            select(JobMetric)
            .where(JobMetric.job_id == job.id, JobMetric.id > after)
            .order_by(JobMetric.id)
        )
    )
    body: dict[str, Any] = {
        "job": job_out(job),
        "metrics": [
            {"id": m.id, "kind": m.kind, "step": m.step, "epoch": m.epoch, "values": m.values}
            for m in metrics
        ],
        "events": [
            {"at": e.at, "kind": e.kind, "message": e.message}
            for e in job_events(session, job.id, caller)
        ],
        "terminal": job.status in TERMINAL_STATUSES,
        "report": f"/ui/jobs/{job.id}/report"
        if job.kind == "distill" and "report" in job.metrics
        else None,
    }
    if job.kind == AUTO_KIND:
        # Light on purpose: the page refetches the leaderboard only when `version` changes.
        trials = children(session, job.id)
        body["search"] = {
            "version": _search_version(job, trials),
            "trials": [{"id": t.id, "status": t.status, "progress": t.progress} for t in trials],
        }
    return JSONResponse(jsonable_encoder(body), headers={"Cache-Control": "no-store"})


@router.post("/ui/jobs/{job_id}/cancel")
async def cancel(
    request: Request, job_id: str, session: SessionDep, caller: ConsoleCaller
) -> Response:
    submitted = await request.form()
    check_csrf(request, str(submitted.get(CSRF_FIELD, "")))
    await run_in_threadpool(cancel_job, session, job_id, caller)
    return RedirectResponse(f"/ui/jobs/{job_id}", status_code=303)


def _controls(session: Session, caller: Caller, job: Job) -> list[Job]:
    """Fine-tune jobs that can be this report's controls: succeeded on its tuning dataset."""
    query = caller.visible(
        select(Job).where(
            Job.kind == "finetune",
            Job.status == "succeeded",
            Job.tuning_dataset_id == job.tuning_dataset_id,
        ),
        Job.owner,
    )
    return list(session.scalars(query.order_by(Job.created_at.desc()).limit(MAX_LIMIT)))


@router.get("/ui/jobs/{job_id}/report")
def report_page(
    request: Request,
    job_id: str,
    session: SessionDep,
    caller: ConsoleCaller,
    baseline_job: list[str] = Query(default=[]),
) -> Response:
    """The distillation report with the controls the user ticks (init-only, no-distill); the
    figures and numbers are the report renderer's own page, framed."""
    job = get_job(session, job_id, caller=caller)
    # Checked here (cheaply, without drawing) so that a refusal (not a distill job, not
    # finished, an unusable control) is this page's own answer.
    job_report(session, job_id, baseline_job, caller)
    query = "&".join(f"baseline_job={b}" for b in baseline_job)
    return page(
        request,
        "report.html",
        {
            "job": job_out(job),
            "controls": _controls(session, caller, job),
            "chosen": set(baseline_job),
            "frame_url": f"/ui/jobs/{job.id}/report/view" + (f"?{query}" if query else ""),
        },
    )


@router.get("/ui/jobs/{job_id}/report/view")
def report_view(
    request: Request,
    job_id: str,
    session: SessionDep,
    caller: ConsoleCaller,
    baseline_job: list[str] = Query(default=[]),
) -> Response:
    html = report_html(session, job_id, baseline_job, caller)
    response = Response(html, media_type="text/html")
    return with_console_headers(request, response, csp=REPORT_CSP)
