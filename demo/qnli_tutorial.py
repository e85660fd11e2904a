"""AutoGluon AutoMM's distillation tutorial, replayed through Distillery's Python client.

Starts the service on the embedded default (SQLite, serverless Celery broker, local artifacts)
in demo/output/, then with `distillery.client` (HTTP underneath): uploads QNLI tables, fine-tunes
an all-MiniLM-L6-v2 teacher on rows the student never sees, distills a 3-layer student from the
teacher's layers 0, 2 and 4, trains the same student from the pretrained layers without the
teacher, compares the three on 1,000 held-out test rows, and saves the server's distillation
report (learning curves and a comparison chart as PNG, and an HTML page with both) to a folder.

    python demo/qnli_tutorial.py                        # the README's command 1 runs this
    python demo/qnli_tutorial.py --report-dir my-report # report elsewhere
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd

from distillery_client import Client, Job

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data" / "qnli.tsv"
OUTPUT = HERE / "output"
REPORT_DIR = OUTPUT / "report"

SEED = 0
TEST_ROWS, STUDENT_TRAIN_ROWS, TUNING_ROWS, TEACHER_TRAIN_ROWS = 1000, 800, 200, 2000
BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
TEACHER_HYPERPARAMETERS = {
    "model.hf_text.checkpoint_name": BACKBONE,
    "optimization.max_epochs": 2,
    "optimization.learning_rate": 1e-4,
    "env.batch_size": 32,
    "env.seed": SEED,
}
# The tutorial's point: one student recipe, trained with and without the teacher. The student
# keeps layers 0, 2 and 4 of MiniLM-L6 (DistilBERT's every-other-layer cut). Without a teacher
# it starts from the pretrained model's layers; distilled, from the fine-tuned teacher's own
# layers 0, 2, 4 ("checkpoint_name": "teacher"), which carry what the teacher learned on rows
# the student never sees. bench/quality.py measures this recipe over 3 seeds with a tuned
# learning rate for each side.
STUDENT_HYPERPARAMETERS = {
    "model.hf_text.checkpoint_name": BACKBONE,
    "model.hf_text.layers": [0, 2, 4],
    "optimization.max_epochs": 4,
    "optimization.learning_rate": 1e-4,
    "env.batch_size": 32,
    "env.seed": SEED,
}
DISTILLED_STUDENT_HYPERPARAMETERS = {
    **STUDENT_HYPERPARAMETERS,
    "model.hf_text.checkpoint_name": "teacher",
}
DISTILLER_HYPERPARAMETERS = {
    "distiller.temperature": 5.0,
    "distiller.hard_label_weight": 0.1,
    "distiller.soft_label_weight": 1.0,
}


def split_rows() -> dict[str, pd.DataFrame]:
    """Disjoint splits: the teacher's training rows are never seen by the students."""
    rows = pd.read_csv(DATA, sep="\t").drop(columns=["index"]).sample(frac=1.0, random_state=SEED)
    bounds = {
        "test": TEST_ROWS,
        "student_train": STUDENT_TRAIN_ROWS,
        "tuning": TUNING_ROWS,
        "teacher_train": TEACHER_TRAIN_ROWS,
    }
    splits, start = {}, 0
    for name, count in bounds.items():
        splits[name] = rows.iloc[start : start + count].reset_index(drop=True)
        start += count
    return splits


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_service(home: Path) -> Iterator[str]:
    """Migrate, then run the API (uvicorn) and one Celery worker; yield the API's base URL."""
    env = {**os.environ, "DISTILLERY_HOME": str(home), "PYTHONPATH": str(ROOT)}
    for name in (
        "DISTILLERY_DATABASE_URL",
        "DISTILLERY_BROKER_URL",
        "DISTILLERY_ARTIFACT_DIR",
        "DISTILLERY_ARTIFACT_URL",
    ):
        env.pop(name, None)  # the demo runs on the embedded default, whatever the shell says
    python = sys.executable
    subprocess.run(
        [python, "-m", "distillery_cli", "migrate"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes = [
        subprocess.Popen(
            [python, "-m", "distillery_cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=(logs / "api.log").open("w"),
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [python, "-m", "distillery_cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=(logs / "worker.log").open("w"),
            stderr=subprocess.STDOUT,
        ),
    ]
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"the service did not start; see {logs}")
            time.sleep(0.5)
        yield base_url
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def write_report(client: Client, distilled: Job, baseline: Job, folder: Path) -> dict:
    """Save the server's report on the distill job, against the no-distill baseline, in every
    form the endpoint serves: report.json, report.html (figures embedded), report.png (curves
    above bars), curves.png and bars.png. Returns the JSON report."""
    folder.mkdir(parents=True, exist_ok=True)
    report = distilled.report(baseline=baseline, format="json")
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    (folder / "report.html").write_bytes(distilled.report(baseline=baseline, format="html"))
    (folder / "report.png").write_bytes(distilled.report(baseline=baseline, format="png"))
    # The client's report() draws the default (combined) figure; each figure alone is the
    # endpoint's `figure` query parameter, asked here on the client's own connection.
    for figure in ("curves", "bars"):
        response = client.http.get(
            f"/v1/jobs/{distilled.id}/report",
            params={"baseline_job": baseline.id, "figure": figure},
            headers={"Accept": "image/png"},
        )
        response.raise_for_status()
        (folder / f"{figure}.png").write_bytes(response.content)
    return report


def milliseconds(side: dict | None) -> float | None:
    latency = (side or {}).get("cpu_latency") or {}
    return latency.get("batched_ms_per_row")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=REPORT_DIR,
        help=f"where the report's PNG and HTML files go (default: {REPORT_DIR})",
    )
    arguments = parser.parse_args()
    started = time.perf_counter()
    splits = split_rows()
    home = OUTPUT / ".distillery"
    shutil.rmtree(home, ignore_errors=True)
    with running_service(home) as base_url, Client(url=base_url, timeout=600) as client:
        print(f"Distillery at {base_url} (embedded default: SQLite + SQLAlchemy broker)")
        datasets = {
            name: client.upload_dataset(frame, name=name, label="label")
            for name, frame in splits.items()
        }
        print("datasets: " + ", ".join(f"{n}={len(f)} rows" for n, f in splits.items()))

        print("teacher (MiniLM-L6, fine-tune)")
        teacher_job = client.fit(
            datasets["teacher_train"], hyperparameters=TEACHER_HYPERPARAMETERS
        ).wait(progress=True)
        distill_job = client.fit(
            datasets["student_train"],
            tuning_data=datasets["tuning"],
            teacher=teacher_job,
            hyperparameters={**DISTILLED_STUDENT_HYPERPARAMETERS, **DISTILLER_HYPERPARAMETERS},
        )
        nodistill_job = client.fit(
            datasets["student_train"],
            tuning_data=datasets["tuning"],
            hyperparameters=STUDENT_HYPERPARAMETERS,
        )
        print("student (3 layers, distill)")
        distill_job.wait(progress=True)
        print("student (3 layers, no distill)")
        nodistill_job.wait(progress=True)
        jobs = {
            "teacher": teacher_job,
            "distilled student": distill_job,
            "no-distill student": nodistill_job,
        }

        report = write_report(client, distill_job, nodistill_job, arguments.report_dir)
        # CPU latency is measured by the report (teacher and distilled student, same machine,
        # same tuning rows); the no-distill student is the distilled one's architecture.
        latency = {
            "teacher": milliseconds(report["teacher"]),
            "distilled student": milliseconds(report["student"]),
            "no-distill student": milliseconds(report.get("baseline")),
        }
        results = []
        for name, job in jobs.items():
            model = job.model
            metrics = model.evaluate(datasets["test"])
            results.append(
                {
                    "model": name,
                    "accuracy": metrics["accuracy"],
                    "f1": metrics["f1"],
                    "parameters": f"{model.num_parameters / 1e6:.1f}M",
                    "size": f"{model.size_bytes / 1e6:.1f} MB",
                    "CPU ms/row": "n/a" if latency[name] is None else f"{latency[name]:.2f}",
                    "train seconds": job.summary["info"]["train_seconds"],
                }
            )
        sample = splits["test"][["question", "sentence"]].head(2)
        prediction = distill_job.model.predict(sample)

    table = pd.DataFrame(results).set_index("model")
    teacher, distilled, baseline = (r["accuracy"] for r in results)
    print(f"\nQNLI, {TEST_ROWS} test rows never trained on:")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    if teacher != baseline:
        print(
            f"distillation ratio (distilled - no-distill) / (teacher - no-distill): "
            f"{(distilled - baseline) / (teacher - baseline):.2f}"
        )
    teacher_ms, student_ms = latency["teacher"], latency["distilled student"]
    print(
        f"CPU latency per row (batches of 32): teacher {teacher_ms:.1f} ms, student "
        f"{student_ms:.1f} ms ({teacher_ms / student_ms:.1f}x faster); student-teacher "
        f"agreement {report['agreement']:.3f} on the tuning rows"
    )
    print(f"student predicts {prediction.tolist()} for two test rows")
    print(
        f"report (learning curves, comparison chart, HTML page): "
        f"{arguments.report_dir.resolve()}/report.html, report.png, curves.png, bars.png"
    )
    print(f"wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
