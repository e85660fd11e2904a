"""Auto-distill against hand tuning, on QNLI: does the search find a student as good as the best
hand-tuned one of bench/quality.py at the same speed-up, for a few times one distill job?

The same splits as bench/quality.py (bench/common.qnli_splits: 800 student-train rows, 200
tuning rows, 1,000 test rows, the rest trains the teacher) and the same teacher (that bench's
all-MiniLM-L6-v2, fine-tuned once and kept in --work-dir, shared with it), the same transfer
set (the teacher's own rows and 4,000 unlabelled QNLI rows). The service runs here for real:
a SQLite database and broker in --work-dir, --workers Celery worker processes, jobs submitted
over the API. Two jobs:

- one distill job of the measured default recipe on the teacher's layers 1 and 4 (the hand
  choice of bench/quality.py), run alone: the unit of cost, "one distill job on one worker",
  also scored on the test rows (the service's own distill job beside the bench's arm);
- one auto_distill job, `min_speedup: 3` (batched CPU latency), presets fast_inference (its
  ASHA early stopping on), paraphrase-MiniLM-L3-v2 offered beside the cuts of the teacher, and
  a compute budget: --max-trials, and a `time_limit` of --budget-jobs times the reference
  job's measured worker-seconds (what a user who can afford "about four distill jobs" would
  set), or --time-limit seconds.

The chosen model (its served variant) is scored once on the 1,000 test rows, and its speed-up
measured again here, whole predict calls in batches of 32 against the teacher's float, as
bench/quality.py measures (budget_met says whether that measurement meets the budget). The
hand-tuned figure is bench/results/quality.json's best pair whose student reaches the speed-up
(float or int8), its distilled_transfer test accuracy (mean over its seeds).

search_cost_over_single_distill is worker-seconds: the search's planning step plus every
trial's (first claim to end, lost attempts included), over the single distill job's.

Resumable: the service's home stays in --work-dir; a run started again waits on the jobs it
submitted before instead of submitting new ones (bench/results/auto.json records them).

    python bench/auto.py [--workers 2] [--budget-jobs 3.8 | --time-limit SECONDS] [--max-trials 3]
    python bench/auto.py --tiny      # minutes: a few hundred rows, one epoch; checks the bench
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient

from app.main import create_app
from bench.common import (
    LABELS,
    MINILM_L3,
    RESULTS,
    ROOT,
    TEXT_COLUMNS,
    qnli_splits,
    unlabeled_rows,
    write_results,
)
from bench.quality import (
    PAIRS,
    UNLABELED_ROWS,
    ensure_teacher,
    fingerprint_of,
    measure_speed,
    teacher_home,
)
from distillery.metrics import classification_metrics
from distillery.predictor import Predictor, label_ids
from distillery.variants import apply_variant
from domain.config import Settings
from domain.storage import make_store, model_key

PAIR = "L6-to-layers-1-4"  # bench/quality.py's pair whose teacher this bench reuses
MIN_SPEEDUP = 3.0
# The reference distill job: bench/quality.py's hand choice of student, the default recipe.
REFERENCE = {"model.hf_text.checkpoint_name": "teacher", "model.hf_text.layers": [1, 4]}
FULL = {
    "epochs": 2,
    "student_rows": 800,
    "tuning_rows": 200,
    "test_rows": 1000,
    "unlabeled_rows": UNLABELED_ROWS,
    "teacher_rows": None,  # all of teacher_train
}
TINY = {
    "epochs": 1,
    "student_rows": 96,
    "tuning_rows": 48,
    "test_rows": 96,
    "unlabeled_rows": 0,
    "teacher_rows": 160,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    # The search's time_limit, in reference distill jobs: 3.8 leaves a trial cut short by it the
    # time to finish (its last validation, saving, its int8 variant) within 4 of them.
    parser.add_argument("--budget-jobs", type=float, default=3.8)
    parser.add_argument("--time-limit", type=float, default=None, help="seconds, instead")
    # Three distilled trials after the labels-only control (which skips the transfer set): 4.9
    # distill jobs of work when each trained to its end (stop 22), so the time limit and the
    # early stopping are what keep the search within its budget.
    parser.add_argument("--max-trials", type=int, default=3)
    parser.add_argument("--presets", default="fast_inference")
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache/distillery-bench")
    parser.add_argument("--tiny", action="store_true", help="a reduced run that checks the bench")
    parser.add_argument("--fresh", action="store_true", help="submit new jobs")
    args = parser.parse_args()
    size = TINY if args.tiny else FULL
    setup = {
        **size,
        "pair": PAIR,
        "min_speedup": MIN_SPEEDUP,
        "latency_mode": "batched",
        "presets": args.presets,
        "time_limit": args.time_limit,
        "budget_jobs": None if args.time_limit else args.budget_jobs,
        "max_trials": args.max_trials,
        "workers": args.workers,
        "students": ["paraphrase-MiniLM-L3-v2"],
        "reference": REFERENCE,
    }
    key = hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:12]
    name = "auto-tiny" if args.tiny else "auto"
    earlier = _earlier(name, key) if not args.fresh else {}
    splits = qnli_splits()
    teacher_folder = teacher_for(args.work_dir, splits, size, args.tiny)
    home = args.work_dir / f"auto-service-{key}"
    settings = Settings(home=home, task_queue=f"bench-auto-{key}", variant_eval_max_rows=200)
    settings.ensure_local_dirs()
    migrate(settings.resolved_database_url())
    workers = [start_worker(settings, f"w{i}", home) for i in range(args.workers)]
    try:
        result = run(settings, splits, size, args, teacher_folder, earlier, key, setup, name)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
    print("summary:", json.dumps(result["summary"]), flush=True)


def _earlier(name: str, key: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    return earlier if earlier.get("fingerprint") == key else {}


def teacher_for(work: Path, splits: dict[str, pd.DataFrame], size: dict, tiny: bool) -> Path:
    """bench/quality.py's teacher, trained once and shared; a tiny one for --tiny."""
    pair = PAIRS[PAIR]
    if not tiny:
        return ensure_teacher(pair, splits, teacher_home(work, pair))
    small = {**splits, "teacher_train": splits["teacher_train"].head(size["teacher_rows"])}
    tiny_pair = type(pair)(
        **{
            **pair.__dict__,
            "teacher_hyperparameters": {
                "optimization.max_epochs": 1,
                "env.batch_size": 32,
                "model.hf_text.max_text_len": 64,
            },
        }
    )
    folder = work / f"auto-tiny-teacher-{fingerprint_of({'tiny': True}, tiny_pair)}"
    return ensure_teacher(tiny_pair, small, folder)


def migrate(database_url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", database_url)
    command.upgrade(config, "head")


def start_worker(settings: Settings, name: str, home: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for field, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[f"DISTILLERY_{field.upper()}"] = (
                json.dumps(value) if isinstance(value, list | dict) else str(value)
            )
    env["DISTILLERY_DATABASE_URL"] = settings.resolved_database_url()
    env["DISTILLERY_BROKER_URL"] = settings.resolved_broker_url()
    log = (home / f"worker-{name}.log").open("a")
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"),
            *("--loglevel=INFO", "--concurrency=1", "-Q", settings.task_queue),
            *("-n", f"{name}-{settings.task_queue}@%h", "--without-gossip", "--without-mingle"),
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def upload(client: TestClient, frame: pd.DataFrame, name: str, label: bool = True) -> str:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    form = {"name": name, **({"label": "label"} if label else {})}
    response = client.post(
        "/v1/datasets", files={"file": (f"{name}.parquet", buffer.getvalue())}, data=form
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def upload_teacher(client: TestClient, folder: Path) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.rglob("*"):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    response = client.post(
        "/v1/models",
        files={"file": ("teacher.zip", buffer.getvalue())},
        data={
            "text_columns": ",".join(TEXT_COLUMNS),
            "labels": ",".join(LABELS),
            "name": "teacher",
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def wait(client: TestClient, job_id: str, what: str) -> dict[str, Any]:
    last = ""
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        line = f"{what}: {job['status']} {job.get('phase') or ''} {job['progress']:.0%}"
        if line != last:
            print(line, flush=True)
            last = line
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(5)


def worker_seconds(client: TestClient, job_id: str) -> float:
    """First claim to end: what the job held a worker for, lost attempts included."""
    events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    claimed = [e["at"] for e in events if e["kind"] == "claimed"]
    job = client.get(f"/v1/jobs/{job_id}").json()
    if not claimed or job["finished_at"] is None:
        return 0.0
    return (pd.Timestamp(job["finished_at"]) - pd.Timestamp(claimed[0])).total_seconds()


def planning_seconds(client: TestClient, job_id: str) -> float:
    """The search's planning step: its claim until its trials were queued."""
    events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    claimed = next((e["at"] for e in events if e["kind"] == "claimed"), None)
    queued = next((e["at"] for e in events if e["kind"] == "trials_queued"), None)
    if claimed is None or queued is None:
        return 0.0
    return (pd.Timestamp(queued) - pd.Timestamp(claimed)).total_seconds()


def hand_tuned() -> dict[str, Any]:
    """bench/quality.py's best pair whose student reaches MIN_SPEEDUP, float or int8."""
    path = RESULTS / "quality.json"
    if not path.is_file():
        return {"test_accuracy": None, "why": "bench/results/quality.json is missing"}
    pairs = json.loads(path.read_text())["pairs"]
    best: dict[str, Any] | None = None
    for name, entry in pairs.items():
        speedups = entry.get("speed", {}).get("speedup_over_teacher_float", {})
        fast = {k: v for k, v in speedups.items() if k.startswith("student") and v >= MIN_SPEEDUP}
        if not fast or "test_accuracy_mean" not in entry:
            continue
        accuracy = entry["test_accuracy_mean"]["distilled_transfer"]
        if best is None or accuracy > best["test_accuracy"]:
            best = {
                "pair": name,
                "test_accuracy": accuracy,
                "variants_at_speedup": fast,
                "seeds": entry.get("seeds_measured"),
                "note": "distilled_transfer, mean over seeds; its int8 drop is not measured there"
                if "student_float" not in fast
                else "distilled_transfer, float",
            }
    return best or {"test_accuracy": None, "why": f"no pair reaches {MIN_SPEEDUP}x"}


def test_accuracy(folder: Path, variant: str, frame: pd.DataFrame) -> float:
    predictor = Predictor(folder, batch_size=32)
    apply_variant(predictor, variant)
    probabilities = predictor.predict_proba(frame)
    return float(
        classification_metrics(label_ids(frame["label"], LABELS), probabilities)["accuracy"]
    )


def run(
    settings: Settings,
    splits: dict[str, pd.DataFrame],
    size: dict,
    args: argparse.Namespace,
    teacher_folder: Path,
    earlier: dict[str, Any],
    key: str,
    setup: dict[str, Any],
    name: str,
) -> dict[str, Any]:
    state: dict[str, Any] = dict(earlier.get("state", {}))
    payload: dict[str, Any] = {"fingerprint": key, "setup": setup, "state": state}

    def save(summary: dict[str, Any]) -> None:
        write_results(name, {**payload, "summary": summary})

    train = splits["student_train"].head(size["student_rows"])
    tuning = splits["tuning"].head(size["tuning_rows"])
    test = splits["test"].head(size["test_rows"])
    # The API in this process logs warnings only: the bench prints its own progress lines.
    quiet = settings.model_copy(update={"log_level": "WARNING"})
    with TestClient(create_app(quiet)) as client:
        if "datasets" not in state:
            transfer = splits["teacher_train"].head(
                size["teacher_rows"] or len(splits["teacher_train"])
            )
            frames = [transfer[TEXT_COLUMNS]]
            if size["unlabeled_rows"]:
                frames.append(unlabeled_rows(size["unlabeled_rows"])[TEXT_COLUMNS])
            state["datasets"] = {
                "train": upload(client, train, "qnli-train"),
                "tuning": upload(client, tuning, "qnli-tuning"),
                "unlabeled": upload(
                    client, pd.concat(frames, ignore_index=True), "transfer", False
                ),
            }
            state["teacher"] = upload_teacher(client, teacher_folder)
            save({})
        base = {
            "train_dataset": state["datasets"]["train"],
            "tuning_dataset": state["datasets"]["tuning"],
            "unlabeled_dataset": state["datasets"]["unlabeled"],
            "teacher_model": state["teacher"],
        }
        epochs = {"optimization.max_epochs": size["epochs"], "env.batch_size": 32}
        if "reference_job" not in state:
            body = {**base, "kind": "distill", "hyperparameters": {**REFERENCE, **epochs}}
            response = client.post("/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            state["reference_job"] = response.json()["id"]
            save({})
        reference = wait(client, state["reference_job"], "reference distill job")
        reference_seconds = worker_seconds(client, reference["id"])
        time_limit = args.time_limit or round(args.budget_jobs * reference_seconds)
        if "search_job" not in state:
            body = {
                **base,
                "kind": "auto_distill",
                "hyperparameters": epochs,
                "auto": {
                    "presets": args.presets,
                    "min_speedup": MIN_SPEEDUP,
                    "latency_mode": "batched",
                    "time_limit": time_limit,
                    "max_trials": args.max_trials,
                    "students": [MINILM_L3],
                },
            }
            response = client.post("/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            state["search_job"] = response.json()["id"]
            save({})
        search = wait(client, state["search_job"], "auto_distill search")
        board = client.get(f"/v1/jobs/{search['id']}/leaderboard").json()
        png = client.get(f"/v1/jobs/{search['id']}/leaderboard", headers={"Accept": "image/png"})
        (RESULTS / f"{name}-frontier.png").write_bytes(png.content)
        trial_seconds = sum(
            worker_seconds(client, t["id"])
            for t in client.get(f"/v1/jobs?parent_job={search['id']}&limit=100").json()["data"]
        )
        search_seconds = planning_seconds(client, search["id"]) + trial_seconds
        store = make_store(settings)
        payload["reference"] = {
            "job": reference["id"],
            "status": reference["status"],
            "seconds": reference_seconds,
            "tuning": reference["metrics"].get("tuning"),
            "test_accuracy": (
                test_accuracy(store.local_folder(model_key(reference["model"])), "float", test)
                if reference["status"] == "succeeded"
                else None
            ),
        }
        payload["search"] = {
            "job": search["id"],
            "status": search["status"],
            "error": search["error"],
            "worker_seconds": search_seconds,
            "time_limit": time_limit,
            "planning_seconds": planning_seconds(client, search["id"]),
            "leaderboard": board,
        }
        best = board.get("best")
        summary: dict[str, Any] = {}
        hand = hand_tuned()
        payload["hand_tuned"] = hand
        if best is not None:
            model = client.get(f"/v1/models/{best['model']}").json()
            folder = store.local_folder(model_key(model["id"]))
            accuracy = test_accuracy(folder, best["variant"], test)
            speed = measure_speed(teacher_folder, folder, test)
            speedup = speed["speedup_over_teacher_float"][f"student_{best['variant']}"]
            payload["chosen"] = {
                "name": best["name"],
                "variant": best["variant"],
                "model": best["model"],
                "test_accuracy": accuracy,
                "speed": speed,
            }
            hand_accuracy = hand.get("test_accuracy")
            summary = {
                "chosen": best["name"],
                "measured_speedup": speedup,
                "auto_test_accuracy": accuracy,
                "hand_tuned_test_accuracy": hand_accuracy,
                "auto_over_hand_points": (
                    round(100 * (accuracy - hand_accuracy), 2)
                    if hand_accuracy is not None
                    else None
                ),
                "search_cost_over_single_distill": (
                    round(search_seconds / reference_seconds, 2) if reference_seconds else None
                ),
                "budget_met": bool(speedup >= MIN_SPEEDUP),
            }
        else:
            summary = {
                "auto_test_accuracy": None,
                "hand_tuned_test_accuracy": hand.get("test_accuracy"),
                "auto_over_hand_points": None,
                "search_cost_over_single_distill": (
                    round(search_seconds / reference_seconds, 2) if reference_seconds else None
                ),
                "budget_met": False,
            }
        for line in leaderboard_lines(board):
            print(line, flush=True)
        save(summary)
        return {**payload, "summary": summary}


def leaderboard_lines(board: dict[str, Any]) -> list[str]:
    rows = [*board.get("rows", []), *([board["teacher"]] if board.get("teacher") else [])]
    lines = [f"budget: {board.get('budget', {}).get('describe')}; {board.get('latency')}"]
    for row in rows:
        lines.append(
            f"  {row['name']:<44} {row['status']:<10} acc {row.get('tuning_accuracy')} "
            f"ms/row {row.get('latency_ms_per_row')} x{row.get('speedup')} "
            f"fits {row.get('within_budget')} pareto {row.get('pareto')}"
            f" cost {row.get('cost_seconds')} s stopped_at {row.get('stopped_early_at')}"
        )
    return lines


if __name__ == "__main__":
    main()
