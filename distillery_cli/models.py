"""`distillery models`: upload, list, show and download models."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from distillery_cli.common import Handler, names
from distillery_cli.common import leaf as command_leaf
from distillery_cli.output import print_fields, print_json, print_listing
from distillery_client import Client, RemoteModel

MODEL_COLUMNS: list[tuple[str, Callable[[RemoteModel], Any]]] = [
    ("ID", lambda m: m.id),
    ("NAME", lambda m: m.name),
    ("SOURCE", lambda m: m.source),
    ("ARCHITECTURE", lambda m: m.architecture),
    ("PARAMETERS", lambda m: m.num_parameters),
    ("LABELS", lambda m: m.labels),
    ("TEACHER", lambda m: m.lineage.get("teacher_model")),
    ("CREATED", lambda m: m.created_at),
]


def show_model(model: RemoteModel, as_json: bool) -> None:
    if as_json:
        print_json(model.raw)
        return
    print_fields(
        {
            "id": model.id,
            "name": model.name,
            "source": model.source,
            "problem type": model.problem_type,
            "labels": model.labels,
            "text columns": model.text_columns,
            "architecture": model.architecture,
            "parameters": model.num_parameters,
            "size bytes": model.size_bytes,
            "job": model.job_id,
            "metrics": model.metrics,
            "lineage": model.lineage,
            "created": model.created_at,
        }
    )


def models_upload(client: Client, args: argparse.Namespace) -> int:
    model = client.upload_model(
        args.path,
        name=args.name,
        text_columns=names(args.text_columns),
        labels=names(args.labels),
    )
    show_model(model, args.json)
    return 0


def models_list(client: Client, args: argparse.Namespace) -> int:
    print_listing(client.models(), MODEL_COLUMNS, args.json, lambda model: model.raw)
    return 0


def models_show(client: Client, args: argparse.Namespace) -> int:
    show_model(client.model(args.model_id), args.json)
    return 0


def models_download(client: Client, args: argparse.Namespace) -> int:
    model = client.model(args.model_id)
    output = args.output or (model.id if args.extract else f"{model.id}.tar.gz")
    written = model.download(output, extract=args.extract)
    if args.json:
        print_json({"model": model.id, "path": str(written)})
    else:
        print(f"{'unpacked' if args.extract else 'saved'} {model.id} to {written}")
    return 0


def add_model_commands(commands: Any, options: argparse.ArgumentParser) -> None:
    def leaf(group: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        return command_leaf(group, name, handler, help_text, [options])

    models = commands.add_parser("models", help="upload, list, show and download models")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    upload = leaf(
        model_commands, "upload", models_upload, "register a checkpoint folder, .zip or .tar.gz"
    )
    upload.add_argument("path")
    upload.add_argument(
        "--text-columns", required=True, help="comma-separated input columns, in order"
    )
    upload.add_argument("--name")
    upload.add_argument("--labels", help="comma-separated class names in output order")
    leaf(model_commands, "list", models_list, "your models, newest first")
    show = leaf(model_commands, "show", models_show, "architecture, labels, metrics, lineage")
    show.add_argument("model_id")
    download = leaf(model_commands, "download", models_download, "save the model's bundle")
    download.add_argument("model_id")
    download.add_argument(
        "-o", "--output", help="file or folder (default: <model id>.tar.gz, or <model id>/)"
    )
    download.add_argument(
        "--extract", action="store_true", help="unpack into a folder transformers can load"
    )
