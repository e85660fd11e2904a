from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.deps import CallerDep, CeleryDep, IdempotencyDep, SessionDep, SettingsDep, StoreDep
from app.errors import problem_responses
from app.idempotency import fingerprint_json
from app.orm import Job
from app.schemas import JobCreate, JobError, JobOut
from app.services.jobs import get_job, submit_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        status=job.status,  # type: ignore[arg-type]
        train_dataset=job.train_dataset_id,
        tuning_dataset=job.tuning_dataset_id,
        teacher_model=job.teacher_model_id,
        label=job.label,
        text_columns=job.text_columns,
        hyperparameters=job.hyperparameters,
        progress=job.progress,
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
    """Validate and queue a fine-tune or distill job; poll it with GET /v1/jobs/{id}."""

    async def create() -> JobOut:
        # Validation reads checkpoint configs and may read a table: keep it off the event loop.
        job = await run_in_threadpool(
            submit_job,
            session,
            store,
            celery,
            settings.task_queue,
            request,
            caller,
            settings.allowed_data_roots,
        )
        return job_out(job)

    return await idempotency.run(fingerprint_json(request), 202, create)


@router.get(
    "/{job_id}", response_model=JobOut, operation_id="get_job", responses=problem_responses(404)
)
def read_job(job_id: str, session: SessionDep, caller: CallerDep) -> JobOut:
    return job_out(get_job(session, job_id, caller=caller))
