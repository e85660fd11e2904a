"""`distillery datasets`: upload, list and show datasets."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from distillery_cli.common import Handler, getter, names
from distillery_cli.common import leaf as command_leaf
from distillery_cli.output import print_fields, print_json, print_listing, print_table
from distillery_client import Client, Dataset

DATASET_COLUMNS: list[tuple[str, Callable[[Dataset], Any]]] = [
    ("ID", lambda d: d.id),
    ("NAME", lambda d: d.name),
    ("ROWS", lambda d: d.row_count),
    ("PROBLEM", lambda d: d.problem_type),
    ("LABEL", lambda d: d.label_column),
    ("TEXT COLUMNS", lambda d: d.text_columns),
    ("CREATED", lambda d: d.created_at),
]


def show_dataset(dataset: Dataset, as_json: bool) -> None:
    if as_json:
        print_json(dataset.raw)
        return
    print_fields(
        {
            "id": dataset.id,
            "name": dataset.name,
            "file": f"{dataset.filename} ({dataset.format}, {dataset.size_bytes} bytes stored)",
            "rows": dataset.row_count,
            "problem type": dataset.problem_type,
            "label column": dataset.label_column,
            "text columns": dataset.text_columns,
            "label counts": dataset.label_counts,
            "created": dataset.created_at,
        }
    )
    if dataset.column_details:
        print("\ncolumns:")
        print_table(
            dataset.column_details,
            [
                ("NAME", lambda c: c["name"]),
                ("TYPE", lambda c: c["dtype"]),
                ("ROLE", lambda c: c["role"]),
            ],
        )
    if dataset.preview:
        print("\nfirst rows:")
        print_table(dataset.preview, [(name, getter(name)) for name in dataset.columns])


def datasets_upload(client: Client, args: argparse.Namespace) -> int:
    dataset = client.upload_dataset(
        args.file,
        name=args.name,
        label=args.label,
        text_columns=names(args.text_columns),
        encoding=args.encoding,
        delimiter=args.delimiter,
    )
    show_dataset(dataset, args.json)
    return 0


def datasets_list(client: Client, args: argparse.Namespace) -> int:
    print_listing(client.datasets(), DATASET_COLUMNS, args.json, lambda dataset: dataset.raw)
    return 0


def datasets_show(client: Client, args: argparse.Namespace) -> int:
    show_dataset(client.dataset(args.dataset_id), args.json)
    return 0


def add_dataset_commands(commands: Any, options: argparse.ArgumentParser) -> None:
    def leaf(group: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        return command_leaf(group, name, handler, help_text, [options])

    datasets = commands.add_parser("datasets", help="upload, list and show datasets")
    dataset_commands = datasets.add_subparsers(dest="datasets_command", required=True)
    upload = leaf(
        dataset_commands, "upload", datasets_upload, "upload a CSV/TSV/JSONL/Parquet table"
    )
    upload.add_argument("file")
    upload.add_argument("--name", help="display name (default: the file's)")
    upload.add_argument("--label", help="label column (default: 'label' when present)")
    upload.add_argument("--text-columns", help="comma-separated input columns (default: inferred)")
    upload.add_argument("--encoding", help="text encoding, e.g. latin-1 (default: UTF-8)")
    upload.add_argument("--delimiter", help="CSV delimiter (default: detected)")
    leaf(dataset_commands, "list", datasets_list, "your datasets, newest first")
    show = leaf(dataset_commands, "show", datasets_show, "columns, label counts, first rows")
    show.add_argument("dataset_id")
