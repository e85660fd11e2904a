"""Ingest uploaded tables: parse, validate, infer roles, store as Parquet, record a row."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from app.errors import not_found
from app.orm import Dataset, new_id
from app.storage import LocalArtifactStore, dataset_key
from distillery.tables import describe_table, format_from_filename, read_table


def ingest_dataset(
    session: Session,
    store: LocalArtifactStore,
    *,
    filename: str,
    content: bytes,
    name: str | None,
    label: str | None,
    text_columns: list[str] | None,
) -> Dataset:
    table_format = format_from_filename(filename)
    frame = read_table(content, table_format)
    schema = describe_table(frame, label_column=label, text_columns=text_columns)
    dataset_id = new_id("ds")
    key = dataset_key(dataset_id)
    size = store.write_table(key, frame)
    dataset = Dataset(
        id=dataset_id,
        name=name or Path(filename).stem,
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
    )
    session.add(dataset)
    session.commit()
    return dataset


def get_dataset(session: Session, dataset_id: str, field: str | None = None) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None:
        raise not_found("dataset", dataset_id, field)
    return dataset
