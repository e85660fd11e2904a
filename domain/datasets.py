"""Datasets: ingest uploaded or server-side tables (parse, validate, infer roles, store as
Parquet, record a row), list, describe, and delete them."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from distillery.tables import (
    TableError,
    describe_table,
    detect_format,
    read_table,
    storable_frame,
)
from domain.auth import Caller
from domain.errors import Conflict, Invalid, TooLarge
from domain.orm import Dataset, Job, new_id, utcnow
from domain.rows import visible_page, visible_row
from domain.server_paths import allowed_server_path
from domain.status import TERMINAL_STATUSES
from domain.storage import ArtifactStore, dataset_key

PREVIEW_ROWS = 5
PREVIEW_TEXT_CHARS = 200
MAX_NAME_CHARS = 255


def clean_name(raw: str | None, fallback: str) -> str:
    """A display name: control characters dropped, at most 255 characters, never empty."""
    text = "".join(c for c in (raw or "") if unicodedata.category(c) != "Cc").strip()
    if not text:
        text = "".join(c for c in fallback if unicodedata.category(c) != "Cc").strip() or "unnamed"
    return text[:MAX_NAME_CHARS]


def ingest_dataset(
    session: Session,
    store: ArtifactStore,
    *,
    filename: str,
    content: bytes,
    name: str | None,
    label: str | None,
    text_columns: list[str] | None,
    encoding: str | None = None,
    delimiter: str | None = None,
    owner: str | None,
) -> Dataset:
    filename = clean_name(Path(filename).name, "upload")
    table_format = detect_format(filename, content, encoding)
    frame = read_table(content, table_format, encoding=encoding, delimiter=delimiter)
    schema = describe_table(frame, label_column=label, text_columns=text_columns)
    dataset_id = new_id("ds")
    key = dataset_key(dataset_id)
    try:
        size = store.write_table(key, storable_frame(frame))
    except Exception as exc:  # pyarrow's own errors: a column it cannot store
        store.delete(key)
        raise TableError(f"the table cannot be stored as Parquet: {exc}") from exc
    dataset = Dataset(
        id=dataset_id,
        name=clean_name(name, Path(filename).stem),
        filename=filename,
        format=table_format,
        row_count=len(frame),
        columns=schema.columns,
        text_columns=schema.text_columns,
        label_column=schema.label_column,
        problem_type=schema.problem_type,
        label_counts=schema.label_counts,
        storage_key=key,
        size_bytes=size,
        owner=owner,
    )
    session.add(dataset)
    session.commit()
    return dataset


def read_server_file(roots: list[Path], raw_path: str, max_bytes: int) -> tuple[Path, bytes]:
    """Read a table the server already has, only from under the configured roots."""
    resolved = allowed_server_path(
        roots, raw_path, upload_instead="upload the file with POST /v1/datasets instead"
    )
    if not resolved.is_file():
        raise Invalid("File not found", f"no file at '{raw_path}'", field="path")
    size = resolved.stat().st_size
    if size > max_bytes:
        raise TooLarge(
            "File too large",
            f"'{raw_path}' is {size} bytes, over the {max_bytes} byte limit",
            field="path",
        )
    return resolved, resolved.read_bytes()


def get_dataset(
    session: Session, dataset_id: str, field: str | None = None, *, caller: Caller
) -> Dataset:
    """The dataset, if `caller` may see it (domain/rows.py); else NotFound."""
    return visible_row(session, Dataset, dataset_id, caller, field)


def list_datasets(
    session: Session, caller: Caller, limit: int, cursor: str | None
) -> tuple[list[Dataset], str | None]:
    return visible_page(session, Dataset, caller, limit, cursor)


def describe_stored(store: ArtifactStore, dataset: Dataset) -> dict[str, Any]:
    """Column types and roles, and the first rows, read from the stored Parquet's footer and
    first row group only."""
    parquet = pq.ParquetFile(store.local_file(dataset.storage_key))
    text_columns = set(dataset.text_columns)
    details = [
        {
            "name": field.name,
            "dtype": str(field.type),
            "role": "label"
            if field.name == dataset.label_column
            else "text"
            if field.name in text_columns
            else "other",
        }
        for field in parquet.schema_arrow
    ]
    first = next(parquet.iter_batches(batch_size=PREVIEW_ROWS), None)
    rows: list[dict[str, Any]] = []
    if first is not None:
        # Through JSON so that NaN, timestamps and numpy scalars come out as plain JSON values.
        rows = json.loads(
            first.to_pandas().to_json(orient="records", date_format="iso", default_handler=str)
        )
    preview = [
        {
            column: value[:PREVIEW_TEXT_CHARS] + "…"
            if isinstance(value, str) and len(value) > PREVIEW_TEXT_CHARS
            else value
            for column, value in row.items()
        }
        for row in rows
    ]
    return {"column_details": details, "preview": preview}


def active_jobs_using(session: Session, *, dataset_id: str | None = None) -> list[str]:
    """Ids of jobs not yet finished whose training or tuning data is this dataset."""
    query = select(Job.id).where(
        Job.status.not_in(TERMINAL_STATUSES),
        or_(
            Job.train_dataset_id == dataset_id,
            Job.tuning_dataset_id == dataset_id,
            Job.unlabeled_dataset_id == dataset_id,
        ),
    )
    return list(session.scalars(query))


def delete_dataset(session: Session, store: ArtifactStore, dataset_id: str, caller: Caller) -> None:
    """Delete the dataset's table and hide its row; 409 while an unfinished job uses it.

    The row stays (finished jobs still name it), marked deleted.
    """
    dataset = get_dataset(session, dataset_id, caller=caller)
    users = active_jobs_using(session, dataset_id=dataset.id)
    if users:
        raise Conflict(
            "Dataset in use",
            f"dataset '{dataset.id}' is used by queued or running job(s) {', '.join(users)}; "
            "cancel them or wait until they finish",
            extra={"jobs": users},
        )
    dataset.deleted_at = utcnow()
    session.commit()
    store.delete(dataset.storage_key)
