"""The data commands: datasets, models, jobs and predict, spoken to a running server over HTTP
through `distillery.client` (so they work from any machine that reaches the API).

The server is `--url` or $DISTILLERY_URL (default http://127.0.0.1:8000), the key `--api-key` or
$DISTILLERY_API_KEY. Output is for people unless `--json` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from app.cli.output import print_fields, print_json, print_listing, print_table
from distillery.client import (
    DEFAULT_URL,
    Client,
    Dataset,
    DistilleryError,
    Job,
    JobFailedError,
    RemoteModel,
)

# `jobs watch` and `jobs submit --watch`: 0 when the job succeeded.
EXIT_FAILED = 1
EXIT_CANCELLED = 3
EXIT_TIMEOUT = 4

Handler = Callable[[Client, argparse.Namespace], int]


def remote_options() -> argparse.ArgumentParser:
    """Options every data command takes (a parent parser)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url",
        default=os.environ.get("DISTILLERY_URL", DEFAULT_URL),
        help="the server (default: $DISTILLERY_URL or %(default)s)",
    )
    options.add_argument(
        "--api-key",
        default=os.environ.get("DISTILLERY_API_KEY"),
        help="a dk_... key (default: $DISTILLERY_API_KEY); needed when the server has auth on",
    )
    options.add_argument("--json", action="store_true", help="print JSON for programs")
    return options


def run(handler: Handler, args: argparse.Namespace) -> int:
    """Run one data command; a refusal from the server prints its problem and returns 1."""
    try:
        with Client(args.url, args.api_key or None) as client:
            return handler(client, args)
    except DistilleryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


# -- datasets ---------------------------------------------------------------------------------

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
        print_table(dataset.preview, [(name, _getter(name)) for name in dataset.columns])


def _getter(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row.get(key)


def datasets_upload(client: Client, args: argparse.Namespace) -> int:
    dataset = client.upload_dataset(
        args.file,
        name=args.name,
        label=args.label,
        text_columns=_names(args.text_columns),
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


# -- models -----------------------------------------------------------------------------------

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
        text_columns=_names(args.text_columns),
        labels=_names(args.labels),
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


# -- jobs -------------------------------------------------------------------------------------

JOB_COLUMNS: list[tuple[str, Callable[[Job], Any]]] = [
    ("ID", lambda j: j.id),
    ("KIND", lambda j: j.kind),
    ("STATUS", lambda j: j.status),
    ("PROGRESS", lambda j: f"{j.progress:.0%}"),
    ("TRAIN", lambda j: j.data.get("train_dataset")),
    ("TEACHER", lambda j: j.data.get("teacher_model")),
    ("MODEL", lambda j: j.model_id),
    ("CREATED", lambda j: j.data.get("created_at")),
]


def show_job(job: Job, as_json: bool) -> None:
    if as_json:
        print_json(job.data)
        return
    data, summary = job.data, job.summary
    fields: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "status": job.status + (" (cancel requested)" if data.get("cancel_requested") else ""),
        "progress": f"{job.progress:.0%}",
        "eta": None if job.eta_seconds is None else f"{job.eta_seconds:.0f}s",
        "train dataset": data.get("train_dataset"),
        "tuning dataset": data.get("tuning_dataset"),
        "unlabeled dataset": data.get("unlabeled_dataset"),
        "teacher model": data.get("teacher_model"),
        "label": data.get("label"),
        "text columns": data.get("text_columns"),
        "hyperparameters": data.get("hyperparameters"),
        "attempt": data.get("attempt"),
        "device": data.get("device"),
        "model": job.model_id,
        "created": data.get("created_at"),
        "started": data.get("started_at"),
        "finished": data.get("finished_at"),
    }
    if job.error:
        fields["error"] = f"{job.error['code']}: {job.error['message']}"
    for key in ("latest", "last_validation", "best_validation", "tuning"):
        if key in summary:
            fields[key.replace("_", " ")] = summary[key]
    print_fields(fields)


def resolve_dataset(client: Client, value: str | None, role: str, label: str | None) -> str | None:
    """A dataset id as it is, or a local table file, uploaded first."""
    if value is None or not Path(value).is_file():
        return value
    uploaded = client.upload_dataset(
        value, name=Path(value).stem, label=label if role != "unlabeled" else None
    )
    print(f"uploaded {value} as {uploaded.id} ({uploaded.row_count} rows)", file=sys.stderr)
    return uploaded.id


def resolve_teacher(client: Client, value: str | None) -> str | None:
    """A model id, or a job id standing for the model that job produced."""
    if value is not None and value.startswith("job_"):
        return client.job(value).model.id
    return value


def parse_hyperparameters(file: str | None, pairs: list[str]) -> dict[str, Any]:
    """The JSON file's keys, then each key=value (the value read as JSON when it parses:
    `--hp optimization.max_epochs=2` is a number, `--hp model.hf_text.layers=[0,2]` a list)."""
    hyperparameters: dict[str, Any] = {}
    if file is not None:
        loaded = json.loads(Path(file).read_text())
        if not isinstance(loaded, dict):
            raise DistilleryError(
                None,
                {
                    "title": "Bad hyperparameters file",
                    "detail": f"{file} must hold a JSON object of dotted keys",
                    "field": "--hyperparameters",
                },
            )
        hyperparameters.update(loaded)
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key.strip():
            raise DistilleryError(
                None,
                {
                    "title": "Bad --hp",
                    "detail": f"'{pair}' is not key=value, e.g. optimization.max_epochs=2",
                    "field": "--hp",
                },
            )
        try:
            hyperparameters[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            hyperparameters[key.strip()] = text
    return hyperparameters


def jobs_submit(client: Client, args: argparse.Namespace) -> int:
    hyperparameters = parse_hyperparameters(args.hyperparameters, args.hp)
    request: dict[str, Any] = {
        "kind": "distill" if args.teacher else "finetune",
        "train_dataset": resolve_dataset(client, args.train, "train", args.label),
        "hyperparameters": hyperparameters,
        "accelerator": args.accelerator,
    }
    optional = {
        "tuning_dataset": resolve_dataset(client, args.tuning, "tuning", args.label),
        "unlabeled_dataset": resolve_dataset(client, args.unlabeled, "unlabeled", None),
        "teacher_model": resolve_teacher(client, args.teacher),
        "label": args.label,
        "text_columns": _names(args.text_columns),
    }
    request.update({key: value for key, value in optional.items() if value is not None})
    job = client.submit_job(request)
    if args.watch:
        print(f"submitted {job.id} ({job.kind})", file=sys.stderr)
        return watch(job, args)
    if args.json:
        print_json(job.data)
    else:
        print(
            f"submitted {job.id} ({job.kind}, {job.status}); follow it with: "
            f"distillery jobs watch {job.id}"
        )
    return 0


def jobs_list(client: Client, args: argparse.Namespace) -> int:
    jobs = client.jobs(status=args.status, kind=args.kind)
    print_listing(jobs, JOB_COLUMNS, args.json, lambda job: job.data)
    return 0


def jobs_show(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job_id)
    events = job.events() if args.events else []
    if args.json:
        print_json({**job.data, "events": events} if args.events else job.data)
        return 0
    show_job(job, False)
    if args.events:
        print("\nevents:")
        print_table(
            events,
            [("AT", _getter("at")), ("KIND", _getter("kind")), ("MESSAGE", _getter("message"))],
        )
    return 0


def watch(job: Job, args: argparse.Namespace) -> int:
    """Draw the job's progress (every loss term, each validation) until it ends; the exit code
    says how it ended: 0 succeeded, 1 failed, 3 cancelled, 4 still running at --timeout."""
    try:
        job.wait(progress=True, poll_seconds=args.poll_seconds, timeout=args.timeout, detailed=True)
    except JobFailedError as exc:
        if args.json:
            print_json(exc.job.data)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANCELLED if exc.job.status == "cancelled" else EXIT_FAILED
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_TIMEOUT
    if args.json:
        print_json(job.data)
        return 0
    tuning = job.summary.get("tuning") or {}
    scores = ", ".join(f"{key}={value:.4g}" for key, value in tuning.items() if _is_number(value))
    print(f"{job.id} succeeded: model {job.model_id}" + (f"; tuning {scores}" if scores else ""))
    return 0


def jobs_watch(client: Client, args: argparse.Namespace) -> int:
    return watch(client.job(args.job_id), args)


def jobs_report(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job_id)
    if args.format == "json":
        report = job.report(baseline=args.baseline)
        if args.json:
            print_json(report)
        else:
            print_fields(report if isinstance(report, dict) else {})
        return 0
    if args.output is None:
        raise DistilleryError(
            None,
            {
                "title": "No output file",
                "detail": f"--format {args.format} writes a file: give -o report.{args.format}",
                "field": "--output",
            },
        )
    rendered = job.report(baseline=args.baseline, format=args.format, figure=args.figure)
    assert isinstance(rendered, bytes)
    Path(args.output).write_bytes(rendered)
    print(f"wrote {args.output} ({len(rendered)} bytes)")
    return 0


def jobs_cancel(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job_id).cancel()
    if args.json:
        print_json(job.data)
    elif job.status == "cancelled":
        print(f"{job.id} cancelled")
    elif job.done:
        print(f"{job.id} had already ended {job.status}; nothing to cancel")
    else:
        print(f"{job.id} is stopping (it ends at its next step check)")
    return 0


# -- predict ----------------------------------------------------------------------------------


def read_rows(path: str) -> pd.DataFrame:
    """A local CSV/TSV/JSONL/Parquet table, read the way the server reads uploads."""
    from distillery.tables import TableError, detect_format, read_table

    content = Path(path).read_bytes()
    try:
        return read_table(content, detect_format(Path(path).name, content))
    except TableError as exc:
        raise DistilleryError(
            None, {"title": "Unreadable table", "detail": f"{path}: {exc}", "field": "file"}
        ) from exc


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
            raise DistilleryError(
                None,
                {
                    "title": "Bad --text",
                    "detail": f"'{text}' names no input column; give column=value for each of "
                    f"{', '.join(model.text_columns)}",
                    "field": "--text",
                },
            )
    return pd.DataFrame([row])


def predict(client: Client, args: argparse.Namespace) -> int:
    model = client.model(args.model_id)
    if (args.file is None) == (not args.text):
        raise DistilleryError(
            None,
            {
                "title": "Nothing to predict",
                "detail": "give a table file or --text column=value (not both)",
                "field": "file",
            },
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
    print_table(records, [(str(name), _getter(str(name))) for name in shown.columns])
    return 0


# -- parser -----------------------------------------------------------------------------------


def _names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    return names or None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def add_commands(commands: Any) -> None:
    """Add datasets, models, jobs and predict to the `distillery` parser's subcommands."""
    options = remote_options()

    def leaf(group: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = group.add_parser(name, parents=[options], help=help_text)
        parser.set_defaults(handler=handler)
        return parser

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

    jobs = commands.add_parser("jobs", help="submit, list, show, watch and cancel jobs")
    job_commands = jobs.add_subparsers(dest="jobs_command", required=True)
    submit = leaf(
        job_commands, "submit", jobs_submit, "fine-tune, or distill when --teacher is given"
    )
    submit.add_argument("--train", required=True, help="dataset id or a local table file")
    submit.add_argument("--tuning", help="dataset id or table file that picks the checkpoint")
    submit.add_argument("--teacher", help="teacher model id (or the job_... that trained it)")
    submit.add_argument("--unlabeled", help="transfer set: dataset id or table file (distill)")
    submit.add_argument("--label", help="label column (default: the training dataset's)")
    submit.add_argument("--text-columns", help="comma-separated input columns")
    submit.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter (repeatable); VALUE is read as JSON when it parses",
    )
    submit.add_argument("--hyperparameters", metavar="FILE", help="JSON object of dotted keys")
    submit.add_argument("--accelerator", choices=["any", "gpu", "cpu"], default="any")
    submit.add_argument("--watch", action="store_true", help="then watch it (see jobs watch)")
    list_jobs = leaf(job_commands, "list", jobs_list, "jobs, newest first")
    list_jobs.add_argument(
        "--status", choices=["queued", "running", "succeeded", "failed", "cancelled"]
    )
    list_jobs.add_argument("--kind", choices=["finetune", "distill"])
    show = leaf(job_commands, "show", jobs_show, "status, progress, metrics summary")
    show.add_argument("job_id")
    show.add_argument("--events", action="store_true", help="also the job's events")
    watch_parser = leaf(
        job_commands,
        "watch",
        jobs_watch,
        "live progress and loss terms; exit 0 succeeded, 1 failed, 3 cancelled, 4 timed out",
    )
    watch_parser.add_argument("job_id")
    for parser in (submit, watch_parser):
        parser.add_argument("--poll-seconds", type=float, default=1.0)
        parser.add_argument("--timeout", type=float, default=None, help="give up after seconds")
    report = leaf(job_commands, "report", jobs_report, "a distill job's distillation report")
    report.add_argument("job_id")
    report.add_argument("--baseline", help="the student's fine-tune job: adds the ratio")
    report.add_argument("--format", choices=["json", "png", "html"], default="json")
    report.add_argument("--figure", choices=["curves", "bars", "overview"], help="for png")
    report.add_argument("-o", "--output", help="file for png or html")
    cancel = leaf(job_commands, "cancel", jobs_cancel, "cancel a queued or running job")
    cancel.add_argument("job_id")

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
