"""AutoGluon AutoMM's distillation tutorial, replayed through Distillery's REST API.

Starts the service on the embedded default (SQLite, serverless Celery broker, local artifacts)
in demo/output/, then over HTTP: uploads QNLI tables, fine-tunes an all-MiniLM-L6-v2 teacher on
rows the student never sees, distills a 3-layer student cut from the same pretrained model, trains
the same student without the teacher, and compares the three on 1,000 held-out test rows.

    python demo/qnli_tutorial.py            # the README's command 1 runs this
"""

from __future__ import annotations

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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data" / "qnli.tsv"
OUTPUT = HERE / "output"

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
# The tutorial's point: one student recipe, trained with and without the teacher.
STUDENT_HYPERPARAMETERS = {
    "model.hf_text.checkpoint_name": BACKBONE,
    "model.hf_text.layers": 3,
    "optimization.max_epochs": 4,
    "optimization.learning_rate": 1e-4,
    "env.batch_size": 32,
    "env.seed": SEED,
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
    for name in ("DISTILLERY_DATABASE_URL", "DISTILLERY_BROKER_URL", "DISTILLERY_ARTIFACT_DIR"):
        env.pop(name, None)  # the demo runs on the embedded default, whatever the shell says
    python = sys.executable
    subprocess.run(
        [python, "-m", "app.cli", "migrate"],
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
            [python, "-m", "app.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=(logs / "api.log").open("w"),
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [python, "-m", "app.cli", "worker"],
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


def upload(client: httpx.Client, frame: pd.DataFrame, name: str) -> str:
    content = frame.to_csv(index=False).encode()
    response = client.post(
        "/v1/datasets",
        files={"file": (f"{name}.csv", content)},
        data={"name": name, "label": "label"},
    )
    response.raise_for_status()
    return response.json()["id"]


def submit(client: httpx.Client, body: dict) -> str:
    response = client.post("/v1/jobs", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"job refused: {response.text}")
    return response.json()["id"]


def wait(client: httpx.Client, job_id: str, label: str) -> dict:
    last = ""
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        line = f"  {label}: {job['status']} {job['progress'] * 100:5.1f}%"
        latest = job["metrics"].get("latest")
        if latest:
            line += f"  epoch {latest['epoch']:.2f}  loss {latest['loss']:.4f}"
        if line != last:
            print(line, flush=True)
            last = line
        if job["status"] in ("succeeded", "failed", "cancelled"):
            if job["status"] != "succeeded":
                raise RuntimeError(f"{label} job {job['status']}: {job['error']}")
            return job
        time.sleep(2)


def main() -> None:
    started = time.perf_counter()
    splits = split_rows()
    home = OUTPUT / ".distillery"
    shutil.rmtree(home, ignore_errors=True)
    with running_service(home) as base_url, httpx.Client(base_url=base_url, timeout=600) as client:
        print(f"Distillery at {base_url} (embedded default: SQLite + SQLAlchemy broker)")
        ids = {name: upload(client, frame, name) for name, frame in splits.items()}
        print("datasets: " + ", ".join(f"{n}={len(f)} rows" for n, f in splits.items()))

        teacher_job = wait(
            client,
            submit(
                client,
                {
                    "kind": "finetune",
                    "train_dataset": ids["teacher_train"],
                    "hyperparameters": TEACHER_HYPERPARAMETERS,
                },
            ),
            "teacher (MiniLM-L6, fine-tune)",
        )
        common = {"train_dataset": ids["student_train"], "tuning_dataset": ids["tuning"]}
        distill_id = submit(
            client,
            {
                **common,
                "kind": "distill",
                "teacher_model": teacher_job["model"],
                "hyperparameters": {**STUDENT_HYPERPARAMETERS, **DISTILLER_HYPERPARAMETERS},
            },
        )
        nodistill_id = submit(
            client,
            {
                **common,
                "kind": "finetune",
                "hyperparameters": STUDENT_HYPERPARAMETERS,
            },
        )
        jobs = {
            "teacher": teacher_job,
            "distilled student": wait(client, distill_id, "student (3 layers, distill)"),
            "no-distill student": wait(client, nodistill_id, "student (3 layers, no distill)"),
        }

        results = []
        for name, job in jobs.items():
            model = client.get(f"/v1/models/{job['model']}").json()
            evaluation = client.post(
                f"/v1/models/{job['model']}/evaluate", json={"dataset": ids["test"]}
            )
            evaluation.raise_for_status()
            metrics = evaluation.json()["metrics"]
            results.append(
                {
                    "model": name,
                    "accuracy": metrics["accuracy"],
                    "f1": metrics["f1"],
                    "parameters": f"{model['num_parameters'] / 1e6:.1f}M",
                    "train seconds": job["metrics"]["info"]["train_seconds"],
                }
            )
        report = client.get(f"/v1/jobs/{distill_id}/report").json()
        sample = splits["test"][["question", "sentence"]].head(2).to_dict(orient="records")
        prediction = client.post(
            f"/v1/models/{jobs['distilled student']['model']}/predict",
            json={"rows": sample, "return_probabilities": True},
        ).json()

    table = pd.DataFrame(results).set_index("model")
    teacher, distilled, baseline = (r["accuracy"] for r in results)
    print(f"\nQNLI, {TEST_ROWS} test rows never trained on:")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    if teacher != baseline:
        print(
            f"distillation ratio (distilled - no-distill) / (teacher - no-distill): "
            f"{(distilled - baseline) / (teacher - baseline):.2f}"
        )
    teacher_ms = report["teacher"]["cpu_latency"]["batched_ms_per_row"]
    student_ms = report["student"]["cpu_latency"]["batched_ms_per_row"]
    print(
        f"CPU latency per row (batches of 32): teacher {teacher_ms:.1f} ms, student "
        f"{student_ms:.1f} ms ({teacher_ms / student_ms:.1f}x faster); student-teacher "
        f"agreement {report['agreement']:.3f} on the tuning rows"
    )
    print(f"student predicts {prediction['predictions']} for two test rows")
    print(f"wall time: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
