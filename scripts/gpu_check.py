"""One short check of the CUDA paths, for a GPU machine lent for a few minutes.

Through the real service (API + one Celery worker, embedded default, `distillery_cli.local_service`)
it fine-tunes a teacher and distills a student from the teacher's layers on vendored QNLI rows,
with the jobs pinned to the GPU (bf16 where the card has it), then serves the student over HTTP
(the API serves on CUDA when it sees one). Beside that, in this process, the same student's raw
forward speed on CUDA and on the CPU, and one distillation training step timed on each. It
prints every figure and, with --json, writes them to a file.

Without CUDA everything runs on the CPU and the CUDA figures say "n/a": the tests run it that
way, so the script is known to work before a GPU ever sees it.

    bash scripts/gpu-check.sh [--json $OUT/gpu-check.json] [--backbone DIR] [--rows 512]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch

from distillery.hyperparams import parse_hyperparameters
from distillery.predictor import Predictor
from distillery.training import TrainingData, train
from distillery_cli.local_service import running_service
from distillery_client import Client

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "demo" / "data" / "qnli.tsv"
TEXT_COLUMNS = ["question", "sentence"]
DEFAULT_BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
SPEED_BATCH = 32
SPEED_ROUNDS = 10


def cuda_facts() -> dict[str, Any]:
    available = torch.cuda.is_available()
    return {
        "torch": torch.__version__,
        "cuda_available": available,
        "cuda_version": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(0) if available else None,
        "bf16_supported": bool(available and torch.cuda.is_bf16_supported()),
        "cpu_threads": torch.get_num_threads(),
    }


def rows_per_second(predictor: Predictor, rows: pd.DataFrame) -> float:
    """Median rows/s of raw forward passes over `rows`, after a warm-up pass."""
    predictor.raw_outputs(rows)
    seconds = []
    for _ in range(SPEED_ROUNDS):
        if predictor.device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        predictor.raw_outputs(rows)
        if predictor.device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return len(rows) / statistics.median(seconds)


def training_step_seconds(
    student: Path, teacher: Path, rows: pd.DataFrame, device: torch.device
) -> float:
    """Seconds per distillation step (batch 32, teacher outputs cached up front), in process:
    from the loop's own rows/s, so loading the models and the teacher's pass do not count."""
    config = parse_hyperparameters(
        {
            "model.hf_text.checkpoint_name": str(student),
            "optimization.max_steps": 12,
            "optimization.max_epochs": 100,
            "env.batch_size": SPEED_BATCH,
            "env.per_gpu_batch_size": SPEED_BATCH,
            "distiller.augmentation_pair_copies": 0,
        }
    )
    labels = sorted(rows["label"].unique())
    data = TrainingData(rows, rows.head(SPEED_BATCH), TEXT_COLUMNS, "label", "binary", labels)
    teacher_predictor = Predictor(teacher, device=str(device))
    result = train(config, data, student, teacher=teacher_predictor, device=device)
    logged = [e for e in result.history if e["kind"] == "train" and "rows_per_second" in e]
    return SPEED_BATCH / float(logged[-1]["rows_per_second"])


def http_rows_per_second(client: Client, model_id: str, rows: pd.DataFrame) -> float:
    """Rows/s of sequential predict requests of SPEED_BATCH rows over real HTTP."""
    body = {"rows": rows[TEXT_COLUMNS].head(SPEED_BATCH).to_dict("records")}
    path = f"/v1/models/{model_id}/predict"
    client.http.post(path, json=body).raise_for_status()  # loads and warms the model
    started = time.perf_counter()
    for _ in range(SPEED_ROUNDS):
        client.http.post(path, json=body).raise_for_status()
    return SPEED_ROUNDS * SPEED_BATCH / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="teacher backbone")
    parser.add_argument("--student-layers", type=int, default=3, help="teacher layers kept")
    parser.add_argument("--rows", type=int, default=512, help="teacher training rows")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    facts = cuda_facts()
    accelerator: Literal["gpu", "cpu"] = "gpu" if facts["cuda_available"] else "cpu"
    print("machine:", json.dumps(facts), flush=True)
    rows = pd.read_csv(DATA, sep="\t").drop(columns=["index"]).sample(frac=1.0, random_state=0)
    teacher_rows, student_rows = rows.iloc[: args.rows], rows.iloc[args.rows : args.rows + 256]
    tuning_rows = rows.iloc[args.rows + 256 : args.rows + 320]
    figures: dict[str, Any] = {"machine": facts, "accelerator": accelerator}
    started = time.perf_counter()

    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        with running_service(home) as url, Client(url=url, timeout=600) as client:
            tuning = client.upload_dataset(tuning_rows, name="tuning", label="label")
            teacher_job = client.fit(
                teacher_rows,
                tuning,
                hyperparameters={
                    "model.hf_text.checkpoint_name": args.backbone,
                    "optimization.max_epochs": 1,
                    "env.batch_size": SPEED_BATCH,
                },
                accelerator=accelerator,
            ).wait(progress=False)
            student_job = client.fit(
                student_rows,
                tuning,
                teacher=teacher_job,
                hyperparameters={
                    "model.hf_text.checkpoint_name": "teacher",
                    "model.hf_text.layers": args.student_layers,
                    "optimization.max_epochs": 1,
                    "env.batch_size": SPEED_BATCH,
                },
                accelerator=accelerator,
            ).wait(progress=False)
            for name, job in (("teacher_job", teacher_job), ("distill_job", student_job)):
                info = job.summary["info"]
                steps = max(1, int(info["steps_run"]))
                figures[name] = {
                    "status": job.status,
                    "device": info["device"],
                    "mixed_precision": info["mixed_precision"],
                    "steps": steps,
                    "train_seconds": info["train_seconds"],
                    "seconds_per_step": info["train_seconds"] / steps,
                    "tuning_accuracy": job.summary["tuning"]["accuracy"],
                }
                print(f"{name}:", json.dumps(figures[name]), flush=True)
            figures["http_rows_per_second"] = http_rows_per_second(
                client, student_job.model.id, tuning_rows
            )
            student = student_job.model.download(Path(scratch) / "student", extract=True)
            teacher = teacher_job.model.download(Path(scratch) / "teacher", extract=True)

        speed_rows = tuning_rows.head(SPEED_BATCH)
        devices = ["cpu"] + (["cuda"] if facts["cuda_available"] else [])
        raw = {d: rows_per_second(Predictor(student, device=d), speed_rows) for d in devices}
        step = {
            d: training_step_seconds(student, teacher, student_rows, torch.device(d))
            for d in devices
        }
    figures["student_raw_rows_per_second"] = raw
    figures["distill_seconds_per_step"] = step
    if "cuda" in raw:
        figures["cuda_over_cpu_inference"] = raw["cuda"] / raw["cpu"]
        figures["cuda_over_cpu_training_step"] = step["cpu"] / step["cuda"]
    figures["wall_seconds"] = time.perf_counter() - started

    http = figures["http_rows_per_second"]
    print(f"HTTP predict, {SPEED_BATCH} rows a request: {http:.0f} rows/s")
    for device in devices:
        print(
            f"student on {device}: {raw[device]:.0f} rows/s raw forward, "
            f"{step[device] * 1000:.0f} ms per distillation step (batch {SPEED_BATCH})"
        )
    if "cuda" in raw:
        print(
            f"CUDA over CPU: inference {figures['cuda_over_cpu_inference']:.1f}x, "
            f"training step {figures['cuda_over_cpu_training_step']:.1f}x"
        )
    else:
        print("CUDA: n/a (no GPU visible); every figure above is the CPU's")
    print(f"wall time: {figures['wall_seconds']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
