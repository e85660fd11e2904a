"""`distillery predict`: predict with a model on a local table or on --text values."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pandas as pd

from distillery_cli.common import Handler, getter, refusal
from distillery_cli.common import leaf as command_leaf
from distillery_cli.output import print_json, print_table
from distillery_client import Client, RemoteModel


def read_rows(path: str) -> pd.DataFrame:
    """A local CSV/TSV/JSONL/Parquet table, read the way the server reads uploads."""
    from distillery.tables import TableError, detect_format, read_table

    content = Path(path).read_bytes()
    try:
        return read_table(content, detect_format(Path(path).name, content))
    except TableError as exc:
        raise refusal("Unreadable table", f"{path}: {exc}", "file") from exc


def text_row(model: RemoteModel, texts: list[str]) -> pd.DataFrame:
    """`--text column=value` pairs as one row; a bare value fills a one-column model's input."""
    row: dict[str, str] = {}
    for text in texts:
        column, separator, value = text.partition("=")
        if separator and column in model.text_columns:
            row[column] = value
        elif len(model.text_columns) == 1:
            row[model.text_columns[0]] = text
        else:
            raise refusal(
                "Bad --text",
                f"'{text}' names no input column; give column=value for each of "
                f"{', '.join(model.text_columns)}",
                "--text",
            )
    return pd.DataFrame([row])


def predict(client: Client, args: argparse.Namespace) -> int:
    model = client.model(args.model_id)
    if (args.file is None) == (not args.text):
        raise refusal(
            "Nothing to predict", "give a table file or --text column=value (not both)", "file"
        )
    rows = read_rows(args.file) if args.file is not None else text_row(model, args.text)
    predictions = model.predict(rows)
    probabilities = model.predict_proba(rows) if args.probabilities else None
    if args.json:
        print_json(
            [
                {"prediction": prediction}
                | (
                    {"probabilities": probabilities.iloc[i].to_dict()}
                    if probabilities is not None
                    else {}
                )
                for i, prediction in enumerate(predictions)
            ]
        )
        return 0
    shown = rows[[c for c in model.text_columns if c in rows.columns]].copy()
    shown["prediction"] = predictions
    if probabilities is not None:
        for label in probabilities.columns:
            shown[f"p({label})"] = probabilities[label]
    records = shown.to_dict(orient="records")
    print_table(records, [(str(name), getter(str(name))) for name in shown.columns])
    return 0


def add_predict_command(commands: Any, options: argparse.ArgumentParser) -> None:
    def leaf(group: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        return command_leaf(group, name, handler, help_text, [options])

    predict_parser = leaf(commands, "predict", predict, "predict with a model")
    predict_parser.add_argument("model_id")
    predict_parser.add_argument("file", nargs="?", help="a CSV/TSV/JSONL/Parquet table")
    predict_parser.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="one row's input (repeat per column; a bare value for a one-column model)",
    )
    predict_parser.add_argument(
        "--probabilities", action="store_true", help="also each class's probability"
    )
