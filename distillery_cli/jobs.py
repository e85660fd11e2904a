"""`distillery jobs`: submit, list, show, watch, report and cancel jobs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillery_cli.common import (
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    Handler,
    getter,
    is_number,
    names,
    refusal,
)
from distillery_cli.common import leaf as command_leaf
from distillery_cli.output import print_fields, print_json, print_listing, print_table
from distillery_client import Client, Job, JobFailedError

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
            raise refusal(
                "Bad hyperparameters file",
                f"{file} must hold a JSON object of dotted keys",
                "--hyperparameters",
            )
        hyperparameters.update(loaded)
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key.strip():
            raise refusal(
                "Bad --hp", f"'{pair}' is not key=value, e.g. optimization.max_epochs=2", "--hp"
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
        "text_columns": names(args.text_columns),
    }
    request.update({key: value for key, value in optional.items() if value is not None})
    auto = {
        "presets": args.presets,
        "time_limit": args.time_limit,
        "max_trials": args.max_trials,
        "scheduler": args.scheduler,
        "min_speedup": args.min_speedup,
        "max_latency_ms_per_row": args.max_latency_ms,
        "max_size_mb": args.max_size_mb,
    }
    if args.auto or any(value is not None for value in auto.values()):
        request["kind"] = "auto_distill"
        request["auto"] = {key: value for key, value in auto.items() if value is not None}
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
            [("AT", getter("at")), ("KIND", getter("kind")), ("MESSAGE", getter("message"))],
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
    scores = ", ".join(f"{key}={value:.4g}" for key, value in tuning.items() if is_number(value))
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
        raise refusal(
            "No output file",
            f"--format {args.format} writes a file: give -o report.{args.format}",
            "--output",
        )
    rendered = job.report(baseline=args.baseline, format=args.format, figure=args.figure)
    assert isinstance(rendered, bytes)
    Path(args.output).write_bytes(rendered)
    print(f"wrote {args.output} ({len(rendered)} bytes)")
    return 0


def _number_or_none(value: Any, digits: int) -> str:
    return "" if not is_number(value) else f"{value:.{digits}f}"


LEADERBOARD_COLUMNS: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
    ("NAME", lambda r: r.get("name")),
    ("STATUS", lambda r: r.get("status")),
    ("TUNING_ACC", lambda r: _number_or_none(r.get("tuning_accuracy"), 4)),
    ("MS/ROW", lambda r: _number_or_none(r.get("latency_ms_per_row"), 3)),
    ("SPEEDUP", lambda r: _number_or_none(r.get("speedup"), 2)),
    ("SIZE_MB", lambda r: _number_or_none(r.get("size_mb"), 2)),
    ("PARAMS", lambda r: r.get("parameters")),
    ("INT8_DROP", lambda r: _number_or_none(r.get("int8_drop_points"), 2)),
    ("COST_S", lambda r: _number_or_none(r.get("cost_seconds"), 0)),
    # The fraction of its steps at which the search's early stopping ended the trial.
    ("STOPPED_AT", lambda r: _number_or_none(r.get("stopped_early_at"), 2)),
    (
        "FITS",
        lambda r: "" if r.get("within_budget") is None else "yes" if r["within_budget"] else "no",
    ),
    ("PARETO", lambda r: "*" if r.get("pareto") else ""),
]


def jobs_leaderboard(client: Client, args: argparse.Namespace) -> int:
    job = client.job(args.job_id)
    if args.png is not None:
        png = job.leaderboard_png()
        Path(args.png).write_bytes(png)
        print(f"wrote {args.png} ({len(png)} bytes)")
        return 0
    board = job.leaderboard_data()
    if args.json:
        print_json(board)
        return 0
    rows = list(board["rows"]) + ([board["teacher"]] if board.get("teacher") else [])
    print(
        f"{job.id}: {board['status']} ({board.get('phase')}), budget {board['budget']['describe']}"
    )
    print(f"latency: {board['latency']}")
    print_table(rows, LEADERBOARD_COLUMNS)
    best = board.get("best")
    print(
        f"best within budget: {best['name']} -> model {best['model']}" if best else "best: none yet"
    )
    pruned = [c for c in board.get("candidates", []) if c.get("pruned")]
    for candidate in pruned:
        print(f"pruned before training: {candidate['candidate']['name']}: {candidate['pruned']}")
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


def add_job_commands(commands: Any, options: argparse.ArgumentParser) -> None:
    def leaf(group: Any, name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        return command_leaf(group, name, handler, help_text, [options])

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
    search = submit.add_argument_group(
        "auto-distill (with --teacher and --tuning: the server searches students and recipes)"
    )
    search.add_argument("--auto", action="store_true", help="an auto_distill job")
    search.add_argument("--presets", choices=["fast_inference", "medium_quality", "best_quality"])
    search.add_argument("--time-limit", type=float, help="seconds the search may spend")
    search.add_argument("--max-trials", type=int)
    search.add_argument(
        "--scheduler", choices=["ASHA", "FIFO"], help="early stopping of trials (default ASHA)"
    )
    search.add_argument("--min-speedup", type=float, help="times the teacher's CPU speed")
    search.add_argument("--max-latency-ms", type=float, help="CPU ms per row (batched)")
    search.add_argument("--max-size-mb", type=float)
    submit.add_argument("--watch", action="store_true", help="then watch it (see jobs watch)")
    list_jobs = leaf(job_commands, "list", jobs_list, "jobs, newest first")
    list_jobs.add_argument(
        "--status", choices=["queued", "running", "succeeded", "failed", "cancelled"]
    )
    list_jobs.add_argument("--kind", choices=["finetune", "distill", "auto_distill"])
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
    report.add_argument(
        "--baseline",
        action="append",
        help="a fine-tune job of the same student (repeatable: init-only and no-distill "
        "controls): adds the points gained over each and the distillation ratio",
    )
    report.add_argument("--format", choices=["json", "png", "html"], default="json")
    report.add_argument("--figure", choices=["curves", "bars", "overview"], help="for png")
    report.add_argument("-o", "--output", help="file for png or html")
    board = leaf(
        job_commands,
        "leaderboard",
        jobs_leaderboard,
        "an auto_distill job's trials: accuracy, latency, size, cost, the Pareto frontier",
    )
    board.add_argument("job_id")
    board.add_argument("--png", metavar="FILE", help="write the accuracy-latency plot instead")
    cancel = leaf(job_commands, "cancel", jobs_cancel, "cancel a queued or running job")
    cancel.add_argument("job_id")
