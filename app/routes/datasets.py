from __future__ import annotations

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from app.deps import SessionDep, SettingsDep, StoreDep
from app.orm import Dataset
from app.schemas import DatasetOut
from app.services.datasets import get_dataset, ingest_dataset
from app.uploads import parse_name_list, read_capped

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


def dataset_out(dataset: Dataset) -> DatasetOut:
    return DatasetOut.model_validate(dataset, from_attributes=True)


@router.post("", status_code=201, response_model=DatasetOut, operation_id="create_dataset")
async def create_dataset(
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    file: UploadFile = File(description="CSV, TSV, JSONL or Parquet table"),
    name: str | None = Form(default=None),
    label: str | None = Form(default=None, description="Label column (default: 'label')"),
    text_columns: str | None = Form(
        default=None, description="Comma-separated text columns (default: inferred)"
    ),
) -> DatasetOut:
    content = await read_capped(file, settings.max_upload_bytes)
    dataset = await run_in_threadpool(
        ingest_dataset,
        session,
        store,
        filename=file.filename or "upload.csv",
        content=content,
        name=name,
        label=label,
        text_columns=parse_name_list(text_columns),
    )
    return dataset_out(dataset)


@router.get("/{dataset_id}", response_model=DatasetOut, operation_id="get_dataset")
def read_dataset(dataset_id: str, session: SessionDep) -> DatasetOut:
    return dataset_out(get_dataset(session, dataset_id))
