"""Datasets: the list with an upload form, and one dataset's columns, labels and first rows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.cursors import CursorQuery, to_domain
from app.deps import SessionDep, SettingsDep, StoreDep
from app.idempotency import fingerprint_upload
from app.ui.forms import UploadOptions, blank_to_none
from app.ui.once import IDEMPOTENCY_FIELD, create_once
from app.ui.problems import field_of, is_known_problem, problem_for
from app.ui.render import page
from app.ui.routing import ConsoleRoute
from app.ui.session import CSRF_FIELD, ConsoleCaller, check_csrf
from app.uploads import parse_name_list, read_capped
from domain.auth import Caller
from domain.datasets import describe_stored, get_dataset, ingest_dataset, list_datasets
from domain.pagination import DEFAULT_LIMIT

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

ACCEPTED = ".csv,.tsv,.jsonl,.json,.parquet,.txt"


def _list_page(
    request: Request,
    session: Session,
    caller: Caller,
    cursor: str | None,
    *,
    form: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    datasets, next_cursor = list_datasets(session, caller, DEFAULT_LIMIT, to_domain(cursor))
    return page(
        request,
        "datasets.html",
        {
            "datasets": datasets,
            "next_cursor": next_cursor,
            "accepted": ACCEPTED,
            "form": form or {},
            "errors": errors or {},
        },
        status_code=status_code,
    )


@router.get("/ui/datasets")
def datasets_page(
    request: Request, session: SessionDep, caller: ConsoleCaller, cursor: str | None = CursorQuery
) -> Response:
    return _list_page(request, session, caller, cursor)


@router.post("/ui/datasets")
async def upload_dataset(
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: ConsoleCaller,
    file: UploadFile | None = File(default=None),
    name: str = Form(default=""),
    label: str = Form(default=""),
    text_columns: str = Form(default=""),
    encoding: str = Form(default=""),
    delimiter: str = Form(default=""),
    csrf_token: str = Form(default="", alias=CSRF_FIELD),
    idempotency_key: str = Form(default="", alias=IDEMPOTENCY_FIELD),
) -> Response:
    """The upload form, through the service POST /v1/datasets uses: a refusal is shown next to
    the field it names, and nothing is stored. The form's one-time key makes a resubmit open
    the dataset the first post stored instead of storing it twice."""
    check_csrf(request, csrf_token)
    form = {
        "name": name,
        "label": label,
        "text_columns": text_columns,
        "encoding": encoding,
        "delimiter": delimiter,
    }
    if file is None or not file.filename:
        errors = {"file": "choose a CSV, TSV, JSONL or Parquet file to upload"}
        return _list_page(request, session, caller, None, form=form, errors=errors, status_code=422)
    try:
        options = UploadOptions(delimiter=delimiter or None)
        content = await read_capped(file, settings.max_upload_bytes)
        filename = file.filename

        async def ingest() -> str:
            dataset = await run_in_threadpool(
                ingest_dataset,
                session,
                store,
                filename=filename,
                content=content,
                name=blank_to_none(name),
                label=blank_to_none(label),
                text_columns=parse_name_list(text_columns),
                encoding=blank_to_none(encoding),
                delimiter=options.delimiter,
                owner=caller.owner,
            )
            return dataset.id

        fingerprint = fingerprint_upload(content, {**form, "filename": filename})
        dataset_id = await create_once(request, caller, idempotency_key, fingerprint, ingest)
    except Exception as exc:
        if not is_known_problem(request, exc):
            raise
        session.rollback()
        problem = await problem_for(request, exc)
        errors = {field_of(problem): f"{problem['title']}: {problem['detail']}"}
        return _list_page(
            request, session, caller, None, form=form, errors=errors, status_code=problem["status"]
        )
    return RedirectResponse(f"/ui/datasets/{dataset_id}", status_code=303)


@router.get("/ui/datasets/{dataset_id}")
def dataset_page(
    request: Request, dataset_id: str, session: SessionDep, store: StoreDep, caller: ConsoleCaller
) -> Response:
    dataset = get_dataset(session, dataset_id, caller=caller)
    described = describe_stored(store, dataset)
    total = sum(dataset.label_counts.values()) or 1
    labels = [
        {"name": label, "count": count, "share": count / total}
        for label, count in sorted(dataset.label_counts.items(), key=lambda item: -item[1])
    ]
    return page(
        request,
        "dataset.html",
        {"dataset": dataset, "labels": labels, **described},
    )
