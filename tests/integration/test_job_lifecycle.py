"""Jobs that survive: SIGKILLed workers, retries, cancellation, duplicate delivery, broker restarts.

Real Celery worker processes against real PostgreSQL and Redis (and a private Redis server for
the restart test). Jobs train a tiny BERT for ~1,000 steps so there is time to interfere.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import Settings
from tests.conftest import upload_table, wait_for_job
from tests.factories import qnli_like_frame

pytestmark = pytest.mark.integration

# Short lifecycle timings so a lost worker is noticed in seconds, not minutes.
LIFECYCLE = {
    "heartbeat_seconds": 0.5,
    "heartbeat_timeout_seconds": 4.0,
    "reaper_interval_seconds": 1.0,
    "checkpoint_every_steps": 50,
}


def long_job(train_id: str, student_dir: Path, epochs: int = 10) -> dict:
    """100 steps an epoch; patience high enough that it never stops early."""
    return {
        "kind": "finetune",
        "train_dataset": train_id,
        "hyperparameters": {
            "model.hf_text.checkpoint_name": str(student_dir),
            "optimization.max_epochs": epochs,
            "optimization.patience": 1000,
            "optimization.learning_rate": 1e-3,
            "env.batch_size": 16,
        },
    }


def events_of(client: TestClient, job_id: str) -> list[dict]:
    return client.get(f"/v1/jobs/{job_id}/events").json()["data"]


def wait_for_event(client: TestClient, job_id: str, kind: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in events_of(client, job_id):
            if event["kind"] == kind:
                return event
        time.sleep(0.2)
    raise TimeoutError(f"no {kind} event for {job_id}: {events_of(client, job_id)}")


@pytest.fixture
def lifecycle_settings(postgres_redis_settings: Settings) -> Settings:
    return postgres_redis_settings.model_copy(update=LIFECYCLE)


@pytest.fixture
def api(lifecycle_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(lifecycle_settings)) as client:
        yield client


@pytest.fixture
def big_train(api: TestClient) -> str:
    return upload_table(api, qnli_like_frame(1600, seed=4), "big.csv")["id"]


def test_sigkilled_worker_resumes_from_checkpoint_on_attempt_2(
    lifecycle_settings: Settings, api: TestClient, big_train: str, start_worker, tiny_student_dir
) -> None:
    first = start_worker(lifecycle_settings, "first")
    job_id = api.post("/v1/jobs", json=long_job(big_train, tiny_student_dir)).json()["id"]
    saved = wait_for_event(api, job_id, "checkpoint_saved")
    first.kill()
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "running"

    start_worker(lifecycle_settings, "second")
    job = wait_for_job(api, job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 2
    kinds = [event["kind"] for event in events_of(api, job_id)]
    assert kinds.count("claimed") == 2
    assert "retried" in kinds and "resumed" in kinds
    resumed_from = job["metrics"]["info"]["resumed_from_step"]
    assert resumed_from >= saved["data"]["step"] > 0
    # The second attempt logged only the steps after its checkpoint.
    second_steps = [
        m["step"]
        for m in api.get(f"/v1/jobs/{job_id}/metrics?kind=train").json()["data"]
        if m["attempt"] == 2
    ]
    assert second_steps and min(second_steps) > resumed_from
    checkpoints = lifecycle_settings.resolved_artifact_dir() / "checkpoints" / job_id
    assert not checkpoints.exists()


def test_last_attempt_lost_ends_failed_worker_lost(
    lifecycle_settings: Settings, start_worker, tiny_student_dir
) -> None:
    settings = lifecycle_settings.model_copy(update={"max_attempts": 1})
    with TestClient(create_app(settings)) as client:
        train_id = upload_table(client, qnli_like_frame(1600, seed=4), "big.csv")["id"]
        doomed = start_worker(settings, "doomed")
        job_id = client.post("/v1/jobs", json=long_job(train_id, tiny_student_dir)).json()["id"]
        wait_for_event(client, job_id, "checkpoint_saved")
        doomed.kill()
        start_worker(settings, "survivor")
        job = wait_for_job(client, job_id, timeout=60)
        assert job["status"] == "failed"
        assert job["error"]["code"] == "worker_lost"
        assert job["attempt"] == 1
        assert [e["kind"] for e in events_of(client, job_id)].count("claimed") == 1


def test_cancel_running_job_ends_cancelled_within_10_seconds(
    lifecycle_settings: Settings, api: TestClient, big_train: str, start_worker, tiny_student_dir
) -> None:
    start_worker(lifecycle_settings)
    job_id = api.post("/v1/jobs", json=long_job(big_train, tiny_student_dir)).json()["id"]
    wait_for_event(api, job_id, "checkpoint_saved")
    asked = time.monotonic()
    response = api.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    job = wait_for_job(api, job_id, timeout=10)
    assert time.monotonic() - asked <= 10
    assert job["status"] == "cancelled" and job["error"]["code"] == "cancelled"
    assert job["model"] is None
    checkpoints = lifecycle_settings.resolved_artifact_dir() / "checkpoints" / job_id
    assert not checkpoints.exists()
    # Idempotent: cancelling again changes nothing.
    again = api.post(f"/v1/jobs/{job_id}/cancel").json()
    assert again["status"] == "cancelled" and again["finished_at"] == job["finished_at"]


def test_cancel_queued_job_is_immediate(api: TestClient, big_train: str, tiny_student_dir) -> None:
    # No GPU worker consumes this job's queue: it stays queued.
    body = {**long_job(big_train, tiny_student_dir), "accelerator": "gpu"}
    job_id = api.post("/v1/jobs", json=body).json()["id"]
    cancelled = api.post(f"/v1/jobs/{job_id}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["attempt"] == 0
    assert [e["kind"] for e in events_of(api, job_id)] == ["queued", "cancelled"]


def test_two_workers_six_jobs_each_runs_exactly_once(
    lifecycle_settings: Settings, api: TestClient, start_worker, tiny_student_dir
) -> None:
    train_id = upload_table(api, qnli_like_frame(64, seed=5), "small.csv")["id"]
    start_worker(lifecycle_settings, "a")
    start_worker(lifecycle_settings, "b")
    body = long_job(train_id, tiny_student_dir, epochs=2)
    job_ids = [api.post("/v1/jobs", json=body).json()["id"] for _ in range(6)]
    jobs = [wait_for_job(api, job_id) for job_id in job_ids]
    assert [job["status"] for job in jobs] == ["succeeded"] * 6
    assert [job["attempt"] for job in jobs] == [1] * 6
    for job_id in job_ids:
        assert [e["kind"] for e in events_of(api, job_id)].count("claimed") == 1
    listed = api.get("/v1/jobs?status=succeeded&limit=4").json()
    assert len(listed["data"]) == 4 and listed["next_cursor"]
    rest = api.get(f"/v1/jobs?status=succeeded&limit=4&cursor={listed['next_cursor']}").json()
    assert {j["id"] for j in listed["data"] + rest["data"]} == set(job_ids)
    assert rest["next_cursor"] is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateRedis:
    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            if (
                subprocess.run(
                    ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
                ).stdout.strip()
                == "PONG"
            ):
                return
            time.sleep(0.1)
        raise RuntimeError("private redis did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_restart_during_training_still_ends_the_job(
    lifecycle_settings: Settings, tmp_path: Path, start_worker, tiny_student_dir
) -> None:
    redis = PrivateRedis(tmp_path)
    redis.start()
    try:
        settings = lifecycle_settings.model_copy(
            update={"broker_url": f"redis://127.0.0.1:{redis.port}/0"}
        )
        with TestClient(create_app(settings)) as client:
            train_id = upload_table(client, qnli_like_frame(1600, seed=4), "big.csv")["id"]
            start_worker(settings)
            body = long_job(train_id, tiny_student_dir, epochs=4)
            job_id = client.post("/v1/jobs", json=body).json()["id"]
            wait_for_event(client, job_id, "checkpoint_saved")
            redis.stop()  # everything in it is lost: no persistence
            time.sleep(1)
            redis.start()
            job = wait_for_job(client, job_id, timeout=180)
            assert job["status"] in ("succeeded", "failed", "cancelled")
            assert job["status"] == "succeeded", job["error"]
    finally:
        redis.stop()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_job_trains_on_cuda_with_bf16(
    postgres_redis_settings: Settings, start_worker, qnli_tables, tiny_student_dir
) -> None:
    start_worker(postgres_redis_settings)
    with TestClient(create_app(postgres_redis_settings)) as client:
        train_id = upload_table(client, qnli_tables["train"], "train.csv")["id"]
        body = {**long_job(train_id, tiny_student_dir, epochs=2), "accelerator": "any"}
        job = wait_for_job(client, client.post("/v1/jobs", json=body).json()["id"])
        assert job["status"] == "succeeded", job["error"]
        assert job["device"].startswith("cuda")
        assert job["metrics"]["info"]["mixed_precision"] == "bf16"
