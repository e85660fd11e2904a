"""Read uploaded tables and infer their roles: text columns, label column, problem type.

Everything here works on a pandas DataFrame and raises `TableError` with a message that names the
column or format at fault, so callers can pass it on to a user unchanged.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

ProblemType = Literal["binary", "multiclass", "regression"]
TableFormat = Literal["csv", "tsv", "jsonl", "parquet"]

FORMATS_BY_SUFFIX: dict[str, TableFormat] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}

# A numeric label with at most this many distinct values is treated as classes, not a target to
# regress: integer-coded labels such as 0/1 or 0..9 are far more common than regression on ints.
MAX_CLASSES_FOR_INTEGER_LABELS = 20
# A column that is mostly long free text is an input; short repeated strings look like categories.
MIN_MEAN_TEXT_CHARS = 8


class TableError(ValueError):
    """The table cannot be used; the message says why and names the field."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class TableSchema:
    """What the service knows about a table once it has been read."""

    columns: list[str]
    text_columns: list[str]
    label_column: str | None
    problem_type: ProblemType | None
    label_classes: list[str] = field(default_factory=list)
    label_counts: dict[str, int] = field(default_factory=dict)


class UnsupportedFormatError(TableError):
    """The file is not one of the table formats we read."""


def format_from_filename(filename: str) -> TableFormat:
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS_BY_SUFFIX:
        known = ", ".join(sorted(FORMATS_BY_SUFFIX))
        raise UnsupportedFormatError(
            f"unsupported file type '{suffix or filename}'; use one of: {known}"
        )
    return FORMATS_BY_SUFFIX[suffix]


def read_table(content: bytes, table_format: TableFormat) -> pd.DataFrame:
    """Parse raw bytes into a DataFrame with string column names and at least one row."""
    if not content.strip():
        raise TableError("the file is empty")
    buffer = io.BytesIO(content)
    try:
        if table_format == "csv":
            frame = pd.read_csv(buffer, encoding="utf-8")
        elif table_format == "tsv":
            frame = pd.read_csv(buffer, sep="\t", encoding="utf-8")
        elif table_format == "jsonl":
            frame = pd.read_json(buffer, lines=True)
        else:
            frame = pd.read_parquet(buffer)
    except UnicodeDecodeError as exc:
        raise TableError(
            f"the file is not valid UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except (ValueError, pd.errors.ParserError, json.JSONDecodeError, OSError) as exc:
        raise TableError(f"could not read the file as {table_format}: {exc}") from exc
    except Exception as exc:  # pyarrow raises its own hierarchy for corrupt Parquet
        raise TableError(f"could not read the file as {table_format}: {exc}") from exc
    if frame.empty:
        raise TableError("the table has no rows")
    frame.columns = [str(column) for column in frame.columns]
    duplicated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if duplicated:
        raise TableError(f"duplicate column names: {', '.join(duplicated)}")
    return frame


def infer_problem_type(labels: pd.Series) -> ProblemType:
    """Classes for strings, booleans and few distinct integers; regression for other numbers."""
    values = labels.dropna()
    distinct = values.nunique()
    if distinct < 2:
        raise TableError(
            f"label column '{labels.name}' has {distinct} distinct value(s); need at least 2",
            field="label",
        )
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        kinds = {type(v).__name__ for v in values}
        if len(kinds) > 1 and not pd.api.types.is_bool_dtype(values):
            raise TableError(
                f"label column '{labels.name}' mixes value types ({', '.join(sorted(kinds))}); "
                "use one type for every label",
                field="label",
            )
        return "binary" if distinct == 2 else "multiclass"
    is_integral = bool((values == values.round()).all())
    if is_integral and distinct <= MAX_CLASSES_FOR_INTEGER_LABELS:
        return "binary" if distinct == 2 else "multiclass"
    return "regression"


def label_to_class_name(value: object) -> str:
    """One spelling per class, so 1, 1.0 and '1' in different files name the same class."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def infer_text_columns(frame: pd.DataFrame, label_column: str | None) -> list[str]:
    candidates = []
    for column in frame.columns:
        if column == label_column:
            continue
        series = frame[column].dropna()
        if series.empty or not series.map(lambda v: isinstance(v, str)).all():
            continue
        if series.str.len().mean() >= MIN_MEAN_TEXT_CHARS:
            candidates.append(column)
    return candidates


def describe_table(
    frame: pd.DataFrame,
    label_column: str | None = None,
    text_columns: list[str] | None = None,
) -> TableSchema:
    """Check the named columns exist and infer the rest.

    With no `label_column`, a column called `label` is used when present; a table without labels
    (an unlabelled transfer set) is allowed and gets no problem type.
    """
    columns = list(frame.columns)
    if label_column is not None and label_column not in columns:
        raise TableError(
            f"label column '{label_column}' not found; columns are: {', '.join(columns)}",
            field="label",
        )
    if label_column is None and "label" in columns:
        label_column = "label"
    if text_columns:
        missing = [c for c in text_columns if c not in columns]
        if missing:
            raise TableError(
                f"text column(s) {', '.join(missing)} not found; columns are: {', '.join(columns)}",
                field="text_columns",
            )
        if label_column in text_columns:
            raise TableError(
                f"'{label_column}' cannot be both the label and a text column",
                field="text_columns",
            )
    else:
        text_columns = infer_text_columns(frame, label_column)
        if not text_columns:
            raise TableError(
                "no text column found: a text column holds strings "
                f"(at least {MIN_MEAN_TEXT_CHARS} characters on average); columns are: "
                f"{', '.join(columns)}; name them with text_columns",
                field="text_columns",
            )

    if label_column is None:
        return TableSchema(columns, list(text_columns), None, None)
    labels = frame[label_column]
    if labels.isna().any():
        missing_rows = [int(i) for i in labels.index[labels.isna()][:5]]
        raise TableError(
            f"label column '{label_column}' is empty in {int(labels.isna().sum())} row(s), "
            f"first at row(s) {missing_rows}",
            field="label",
        )
    problem_type = infer_problem_type(labels)
    if problem_type == "regression":
        return TableSchema(columns, list(text_columns), label_column, problem_type)
    counts = labels.map(label_to_class_name).value_counts()
    classes = sorted(counts.index)
    return TableSchema(
        columns,
        list(text_columns),
        label_column,
        problem_type,
        label_classes=classes,
        label_counts={name: int(counts[name]) for name in classes},
    )
