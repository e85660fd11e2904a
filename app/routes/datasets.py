from __future__ import annotations

from fastapi import APIRouter, File, Form, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from app.cursors import CursorQuery, from_domain, to_domain
from app.deps import CallerDep, IdempotencyDep, SessionDep, SettingsDep, StoreDep
from app.errors import problem_responses
from app.idempotency import fingerprint_json, fingerprint_upload
from app.schemas import DatasetDetail, DatasetFromPath, DatasetOut, DatasetPage
from app.uploads import parse_name_list, read_capped
from domain.datasets import (
    delete_dataset,
    describe_stored,
    get_dataset,
    ingest_dataset,
    list_datasets,
    read_server_file,
)
from domain.orm import Dataset
from domain.pagination import DEFAULT_LIMIT, MAX_LIMIT
from domain.storage import ArtifactStore

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def dataset_out(dataset: Dataset) -> DatasetOut:
    return DatasetOut.model_validate(dataset, from_attributes=True)


def dataset_detail(store: ArtifactStore, dataset: Dataset) -> DatasetDetail:
    return DatasetDetail(**dataset_out(dataset).model_dump(), **describe_stored(store, dataset))


@router.post(
    "",
    status_code=201,
    response_model=DatasetDetail,
    operation_id="create_dataset",
    responses=problem_responses(400, 409, 413, 415, 422),
)
async def create_dataset(
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    idempotency: IdempotencyDep,
    file: UploadFile = File(
        description="CSV, TSV, JSONL or Parquet table (.txt or no suffix: detected from content)"
    ),
    name: str | None = Form(default=None, description="Display name (default: the file's)"),
    label: str | None = Form(default=None, description="Label column (default: 'label')"),
    text_columns: str | None = Form(
        default=None, description="Comma-separated text columns (default: inferred)"
    ),
    encoding: str | None = Form(
        default=None, description="Text encoding, e.g. latin-1 (default: UTF-8)"
    ),
    delimiter: str | None = Form(
        default=None,
        # An empty form part is the default, as if left out.
        pattern=r'^[^\r\n"]?$',
        description="CSV delimiter (default: detected among , ; tab |)",
    ),
) -> DatasetDetail | JSONResponse:
    """Upload a table. The type is checked by content, not only by name; the text and label
    columns and the problem type are inferred unless named."""
    content = await read_capped(file, settings.max_upload_bytes)
    filename = file.filename or "upload.csv"
    form = {
        "filename": filename,
        "name": name,
        "label": label,
        "text_columns": text_columns,
        "encoding": encoding,
        "delimiter": delimiter,
    }

    async def create() -> DatasetDetail:
        dataset = await run_in_threadpool(
            ingest_dataset,
            session,
            store,
            filename=filename,
            content=content,
            name=name,
            label=label,
            text_columns=parse_name_list(text_columns),
            encoding=encoding,
            delimiter=delimiter,
            owner=caller.owner,
        )
        return await run_in_threadpool(dataset_detail, store, dataset)

    return await idempotency.run(fingerprint_upload(content, form), 201, create)


@router.post(
    "/from-path",
    status_code=201,
    response_model=DatasetDetail,
    operation_id="register_dataset_path",
    responses=problem_responses(403, 409, 413, 415, 422),
)
async def register_dataset_path(
    request: DatasetFromPath,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    idempotency: IdempotencyDep,
) -> DatasetDetail | JSONResponse:
    """Register a table the server can already read, from under DISTILLERY_ALLOWED_DATA_ROOTS
    (403 outside them, or when none are configured). The table is copied in: later changes to
    the file do not change the dataset."""

    async def create() -> DatasetDetail:
        path, content = await run_in_threadpool(
            read_server_file, settings.allowed_data_roots, request.path, settings.max_upload_bytes
        )
        dataset = await run_in_threadpool(
            ingest_dataset,
            session,
            store,
            filename=path.name,
            content=content,
            name=request.name,
            label=request.label,
            text_columns=request.text_columns,
            encoding=request.encoding,
            delimiter=request.delimiter,
            owner=caller.owner,
        )
        return await run_in_threadpool(dataset_detail, store, dataset)

    return await idempotency.run(fingerprint_json(request), 201, create)


@router.get(
    "",
    response_model=DatasetPage,
    operation_id="list_datasets",
    responses=problem_responses(422),
)
def read_datasets(
    session: SessionDep,
    caller: CallerDep,
    limit: int = Query(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = CursorQuery,
) -> DatasetPage:
    """Your datasets (every owner's for an admin key), newest first."""
    datasets, next_cursor = list_datasets(session, caller, limit, to_domain(cursor))
    return DatasetPage(
        data=[dataset_out(d) for d in datasets], next_cursor=from_domain(next_cursor)
    )


@router.get(
    "/{dataset_id}",
    response_model=DatasetDetail,
    operation_id="get_dataset",
    responses=problem_responses(404),
)
def read_dataset(
    dataset_id: str, session: SessionDep, store: StoreDep, caller: CallerDep
) -> DatasetDetail:
    """The dataset's schema (columns with types and roles), problem type, label distribution,
    row count and first rows."""
    return dataset_detail(store, get_dataset(session, dataset_id, caller=caller))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    operation_id="delete_dataset",
    responses=problem_responses(404, 409),
)
def remove_dataset(
    dataset_id: str, session: SessionDep, store: StoreDep, caller: CallerDep
) -> Response:
    """Delete the dataset and its stored table; 409 while a queued or running job uses it."""
    delete_dataset(session, store, dataset_id, caller)
    return Response(status_code=204)
