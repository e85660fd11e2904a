"""Models: the list; one model's architecture, size, label map, lineage and variants; its
downloads; and a predict playground with one field per text column."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask

from app.cursors import CursorQuery, to_domain
from app.deps import SessionDep, SettingsDep, StoreDep
from app.schemas import PredictRequest
from app.services.predict import predict
from app.serving import ServingContext, serving_context
from app.ui.problems import field_of, is_known_problem, problem_for
from app.ui.render import page
from app.ui.routing import ConsoleRoute
from app.ui.session import CSRF_FIELD, ConsoleCaller, check_csrf
from domain.auth import Caller
from domain.models import download_archive, get_model, list_models
from domain.orm import Dataset, Job, Model
from domain.pagination import DEFAULT_LIMIT
from domain.variants import list_variants

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
ServingDep = Annotated[ServingContext, Depends(serving_context)]


@router.get("/ui/models")
def models_page(
    request: Request, session: SessionDep, caller: ConsoleCaller, cursor: str | None = CursorQuery
) -> Response:
    models, next_cursor = list_models(session, caller, DEFAULT_LIMIT, to_domain(cursor))
    return page(request, "models.html", {"models": models, "next_cursor": next_cursor})


def _names(session: Session, caller: Caller, model: Model) -> dict[str, str]:
    """Display names of the rows the lineage links to, where the caller may see them."""
    names: dict[str, str] = {}
    for key in ("teacher_model", "train_dataset", "tuning_dataset", "unlabeled_dataset"):
        row_id = model.lineage.get(key)
        if not isinstance(row_id, str):
            continue
        row: Model | Dataset | None = (
            session.get(Model, row_id) if key == "teacher_model" else session.get(Dataset, row_id)
        )
        if row is not None and caller.can_see(row.owner):
            names[row_id] = row.name
    return names


def _model_page(
    request: Request,
    session: Session,
    caller: Caller,
    model_id: str,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    prediction: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    model = get_model(session, model_id, caller=caller)
    job = session.get(Job, model.job_id) if model.job_id else None
    variants = list_variants(session, model)
    return page(
        request,
        "model.html",
        {
            "model": model,
            "job": job if job is not None and caller.can_see(job.owner) else None,
            "names": _names(session, caller, model),
            "variants": variants,
            "form": form or {},
            "errors": errors or {},
            "prediction": prediction,
        },
        status_code=status_code,
    )


@router.get("/ui/models/{model_id}")
def model_page(
    request: Request, model_id: str, session: SessionDep, caller: ConsoleCaller
) -> Response:
    return _model_page(request, session, caller, model_id)


@router.post("/ui/models/{model_id}/predict")
async def predict_playground(
    request: Request,
    model_id: str,
    session: SessionDep,
    serving: ServingDep,
    caller: ConsoleCaller,
) -> Response:
    """One row through the same predict path as POST /v1/models/{id}/predict (the serving cache
    and its batcher); the answer's probabilities are drawn as bars."""
    submitted = await request.form()
    check_csrf(request, str(submitted.get(CSRF_FIELD, "")))
    model = await run_in_threadpool(get_model, session, model_id, caller=caller)
    text_columns = list(model.text_columns)
    row = {column: str(submitted.get(f"text:{column}", "")) for column in text_columns}
    try:
        answer = await predict(
            serving,
            caller,
            model_id,
            None,
            PredictRequest(rows=[row], return_probabilities=True),
        )
    except Exception as exc:
        if not is_known_problem(request, exc):
            raise
        problem = await problem_for(request, exc)
        errors = {field_of(problem): f"{problem['title']}: {problem['detail']}"}
        return await run_in_threadpool(
            _model_page,
            request,
            session,
            caller,
            model_id,
            form=row,
            errors=errors,
            status_code=int(problem["status"]),
        )
    probabilities = answer.probabilities[0] if answer.probabilities else None
    bars = sorted(probabilities.items(), key=lambda item: -item[1]) if probabilities else None
    prediction = {"label": answer.predictions[0], "bars": bars}
    return await run_in_threadpool(
        _model_page, request, session, caller, model_id, form=row, prediction=prediction
    )


@router.get("/ui/models/{model_id}/download")
def download(
    model_id: str,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: ConsoleCaller,
    format: Literal["bundle", "onnx"] = "bundle",
) -> Response:
    """The same archives as GET /v1/models/{id}/download, for a browser signed in by cookie."""
    model = get_model(session, model_id, caller=caller)
    archive, filename = download_archive(
        session, store, model, format, settings.variant_eval_max_rows
    )
    return FileResponse(
        archive,
        media_type="application/gzip",
        filename=filename,
        background=BackgroundTask(os.unlink, archive),
    )
