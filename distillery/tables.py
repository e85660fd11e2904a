"""Read uploaded tables and infer their roles: text columns, label column, problem type.

Everything here works on a pandas DataFrame and raises `TableError` with a message that names the
column or format at fault, so callers can pass it on to a user unchanged.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
import unicodedata
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
# Wider tables are not text-classification data; refusing them bounds the work per upload.
MAX_COLUMNS = 1000
# Column names end up in database columns of this width.
MAX_COLUMN_NAME_CHARS = 255
# Names without a table suffix: the content says what they are.
SNIFFED_SUFFIXES = ("", ".txt")
DELIMITER_CANDIDATES = ",;\t|"
PARQUET_MAGIC = b"PAR1"
# Leading bytes of common non-table files, to say what was sent instead of "cannot parse".
BINARY_SIGNATURES: dict[bytes, str] = {
    b"PK\x03\x04": "a zip archive (.xlsx, .docx and .jar files are zip archives too)",
    b"PK\x05\x06": "an empty zip archive",
    b"\x1f\x8b": "gzip-compressed data",
    b"BZh": "bzip2-compressed data",
    b"\xfd7zXZ\x00": "xz-compressed data",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive",
    b"Rar!": "a RAR archive",
    b"%PDF": "a PDF document",
    b"\xd0\xcf\x11\xe0": "a legacy Office document (.xls, .doc)",
    b"\x7fELF": "an executable",
    b"MZ": "a Windows executable",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"SQLite format 3": "a SQLite database",
}
# Share of control characters (other than tab and line breaks) above which "text" is binary.
MAX_CONTROL_CHAR_SHARE = 0.01


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


def detect_format(filename: str, content: bytes, encoding: str | None = None) -> TableFormat:
    """The table format of an upload, checked against its content, not only its name.

    A known suffix names the format and the content must agree (Parquet has its signature; the
    text formats hold no binary data). A `.txt` file or a name without a suffix is read as
    whatever its content is. Raises UnsupportedFormatError (what was sent instead) or TableError.
    """
    suffix = Path(filename).suffix.lower()
    if suffix not in SNIFFED_SUFFIXES:
        format_from_filename(filename)
    if not content.strip():
        raise TableError("the file is empty")
    if content.startswith(PARQUET_MAGIC):
        if suffix in SNIFFED_SUFFIXES or FORMATS_BY_SUFFIX[suffix] == "parquet":
            return "parquet"
        raise UnsupportedFormatError(
            f"'{filename}' is named as {FORMATS_BY_SUFFIX[suffix]} but holds Parquet; "
            "rename it to .parquet"
        )
    for signature, description in BINARY_SIGNATURES.items():
        if content.startswith(signature):
            raise UnsupportedFormatError(
                f"'{filename}' is {description}, not a table; upload CSV, TSV, JSONL or Parquet"
            )
    if suffix not in SNIFFED_SUFFIXES and FORMATS_BY_SUFFIX[suffix] == "parquet":
        raise UnsupportedFormatError(
            f"'{filename}' is named as Parquet but is not a Parquet file (it does not start "
            "with the PAR1 signature)"
        )
    # UTF-16 and UTF-32 text is full of NUL bytes; with such an encoding declared, the decoded
    # text is checked instead (decode_text).
    if encoding is None and b"\x00" in content[:65536]:
        raise UnsupportedFormatError(
            f"'{filename}' holds binary data (NUL bytes), not text; upload CSV, TSV, JSONL or "
            "Parquet (for UTF-16 text, send encoding=utf-16)"
        )
    if suffix in SNIFFED_SUFFIXES:
        return "jsonl" if content.lstrip()[:1] == b"{" else "csv"
    return FORMATS_BY_SUFFIX[suffix]


def decode_text(content: bytes, encoding: str | None = None) -> str:
    """Bytes to text: the declared `encoding`, else UTF-8 (with or without a byte-order mark)."""
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except (LookupError, ValueError):
            raise TableError(
                f"unknown encoding '{encoding}'; use a Python codec name such as utf-8, "
                "latin-1, cp1252 or utf-16",
                field="encoding",
            ) from None
    try:
        text = content.decode(encoding or "utf-8-sig")
    except UnicodeDecodeError as exc:
        hint = (
            "send the file's encoding, e.g. encoding=latin-1 or encoding=cp1252"
            if encoding is None
            else "check the encoding"
        )
        raise TableError(
            f"the file is not valid {encoding or 'UTF-8'} text ({exc.reason} at byte "
            f"{exc.start}); {hint}",
            field="encoding",
        ) from None
    except (UnicodeError, LookupError, ValueError, TypeError) as exc:  # codecs that are not text
        raise TableError(
            f"cannot decode the file as '{encoding}' ({exc}); use a text encoding such as "
            "utf-8, latin-1 or cp1252",
            field="encoding",
        ) from None
    sample = text[:100_000]
    controls = sum(
        1 for char in sample if char not in "\t\n\r" and unicodedata.category(char) == "Cc"
    )
    if sample and controls / len(sample) > MAX_CONTROL_CHAR_SHARE:
        raise UnsupportedFormatError(
            f"the file decodes to mostly control characters ({controls} in the first "
            f"{len(sample)}): it is binary data, not a table"
        )
    return text.lstrip("\ufeff")


def sniff_delimiter(text: str) -> str:
    """The CSV delimiter among , ; tab and |, judged from the first lines; ',' when unclear."""
    sample = text[:65536]
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITER_CANDIDATES).delimiter
    except csv.Error:
        return ","


def _check_delimiter(delimiter: str) -> None:
    if len(delimiter) != 1 or delimiter in '\r\n"':
        raise TableError(
            f"delimiter must be one character other than a quote or line break, got "
            f"{delimiter!r}; e.g. delimiter=; or delimiter=|",
            field="delimiter",
        )


def read_table(
    content: bytes,
    table_format: TableFormat,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> pd.DataFrame:
    """Parse raw bytes into a DataFrame with string column names and at least one row.

    Text formats are decoded with `encoding` (default UTF-8); CSV's `delimiter` is detected
    when not given. Column names must be unique, non-empty strings of at most 255 characters.
    """
    if not content.strip():
        raise TableError("the file is empty")
    if delimiter is not None:
        _check_delimiter(delimiter)
    try:
        if table_format == "parquet":
            frame = pd.read_parquet(io.BytesIO(content))
        else:
            text = decode_text(content, encoding)
            if table_format == "jsonl":
                frame = pd.read_json(io.StringIO(text), lines=True)
            else:
                separator = delimiter or ("\t" if table_format == "tsv" else sniff_delimiter(text))
                frame = pd.read_csv(io.StringIO(text), sep=separator)
    except TableError:
        raise
    except (ValueError, pd.errors.ParserError, json.JSONDecodeError, OSError) as exc:
        raise TableError(f"could not read the file as {table_format}: {exc}") from exc
    except Exception as exc:  # pyarrow raises its own hierarchy for corrupt Parquet
        raise TableError(f"could not read the file as {table_format}: {exc}") from exc
    if len(frame.columns) > MAX_COLUMNS:
        raise TableError(
            f"the table has {len(frame.columns)} columns; at most {MAX_COLUMNS} are read: "
            "keep the text and label columns"
        )
    if frame.empty:
        raise TableError("the table has no rows")
    frame.columns = [str(column) for column in frame.columns]
    for column in frame.columns:
        if not column.strip() or len(column) > MAX_COLUMN_NAME_CHARS or "\x00" in column:
            shown = column if len(column) <= 40 else column[:40] + "…"
            raise TableError(
                f"column name {shown!r} is unusable: names need 1 to "
                f"{MAX_COLUMN_NAME_CHARS} characters and no NUL; rename it"
            )
    duplicated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if duplicated:
        raise TableError(f"duplicate column names: {', '.join(duplicated)}")
    return frame


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def storable_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every column Parquet can store: a column that mixes value types, or holds
    lists and objects (as JSONL can), becomes text; everything else is left as it is."""
    converted = {}
    for column in frame.columns:
        series = frame[column]
        if series.dtype != object:
            continue
        kinds = {type(value) for value in series if not _is_missing(value)}
        if len(kinds) <= 1 and not kinds & {dict, list}:
            continue
        converted[column] = series.map(
            lambda value: (
                None
                if _is_missing(value)
                else json.dumps(value, default=str, ensure_ascii=False)
                if isinstance(value, dict | list)
                else str(value)
            )
        )
    return frame.assign(**converted) if converted else frame


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
