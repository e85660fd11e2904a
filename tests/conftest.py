"""Shared fixtures: tiny checkpoints, databases (SQLite and a fresh PostgreSQL database), an
API client on the real ASGI app, and real Celery worker processes."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

import httpx
import psycopg
import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import Settings
from tests.factories import qnli_like_frame, save_tiny_bert

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = os.environ.get(
    "DISTILLERY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("DISTILLERY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("teacher"), layers=2, hidden=32)


@pytest.fixture(scope="session")
def tiny_student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("student"), layers=1, hidden=16)


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in folder.rglob("*"):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def migrate(database_url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", database_url)
    command.upgrade(config, "head")


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    """The embedded default: SQLite, kombu's SQLAlchemy broker on SQLite, local artifacts."""
    settings = Settings(home=tmp_path / "home", task_queue=f"test-{uuid.uuid4().hex[:8]}")
    settings.ensure_local_dirs()
    migrate(settings.resolved_database_url())
    return settings


@pytest.fixture
def postgres_database_url() -> Iterator[str]:
    """A fresh database in the local PostgreSQL cluster, dropped afterwards."""
    name = f"distillery_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_redis_settings(tmp_path: Path, postgres_database_url: str) -> Settings:
    settings = Settings(
        home=tmp_path / "home",
        database_url=postgres_database_url,
        broker_url=REDIS_URL,
        task_queue=f"test-{uuid.uuid4().hex[:8]}",
    )
    settings.ensure_local_dirs()
    migrate(postgres_database_url)
    return settings


@pytest.fixture
def client(sqlite_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_settings)) as test_client:
        yield test_client


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, value in settings.model_dump(mode="json").items():
        if value is not None:
            env[f"DISTILLERY_{name.upper()}"] = (
                json.dumps(value) if isinstance(value, list | dict) else str(value)
            )
    env["DISTILLERY_DATABASE_URL"] = settings.resolved_database_url()
    env["DISTILLERY_BROKER_URL"] = settings.resolved_broker_url()
    env["DISTILLERY_ARTIFACT_DIR"] = str(settings.resolved_artifact_dir())
    return env


class WorkerProcess:
    """A real `celery worker` process consuming this test's queue."""

    def __init__(self, settings: Settings, log_path: Path, name: str = "w1") -> None:
        self.log_path = log_path
        self.log_file = log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "--loglevel=INFO",
                "--concurrency=1",
                "-Q",
                settings.task_queue,
                "-n",
                f"{name}-{settings.task_queue}@%h",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=settings_env(settings),
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            # Its own process group, so kill() takes the pool's children down with it, as a
            # lost machine would.
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the worker and its pool: no cleanup, no acknowledgement, no goodbye."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log_path.read_text()}")
            if " ready." in self.log_path.read_text():
                return
            time.sleep(0.5)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log_file.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator:
    workers: list[WorkerProcess] = []

    def start(settings: Settings, name: str = "w1") -> WorkerProcess:
        worker = WorkerProcess(settings, tmp_path / f"worker-{name}.log", name)
        workers.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator:
    """Start a real `uvicorn --factory app.main:create_app` process on a free port with these
    settings' environment; returns its base URL. Stopped (SIGTERM, then SIGKILL) at teardown."""
    servers: list[tuple[subprocess.Popen, TextIO]] = []

    def start(settings: Settings) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        log_path = tmp_path / f"uvicorn-{port}.log"
        log_file = log_path.open("w")
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app"),
                *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            ],
            cwd=ROOT,
            env=settings_env(settings),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        servers.append((process, log_file))
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited early:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    return base_url
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError(f"uvicorn not answering in 60s:\n{log_path.read_text()}")

    yield start
    for process, log_file in servers:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()


def start_api_and_worker(settings: Settings, start_worker, live_server) -> str:
    """Start a worker and a live server side by side (both spend seconds importing torch);
    returns the server's base URL once both are ready."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        worker = pool.submit(start_worker, settings)
        base_url = live_server(settings)
        worker.result()
    return base_url


def upload_table(client: TestClient | httpx.Client, frame, filename: str, **form: str) -> dict:
    suffix = filename.rsplit(".", 1)[-1]
    if suffix == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        content = buffer.getvalue()
    elif suffix == "jsonl":
        content = frame.to_json(orient="records", lines=True).encode()
    else:
        content = frame.to_csv(index=False, sep="\t" if suffix == "tsv" else ",").encode()
    response = client.post("/v1/datasets", files={"file": (filename, content)}, data=form)
    assert response.status_code == 201, response.text
    return response.json()


def upload_search_inputs(
    client: TestClient | httpx.Client, folder: Path, train_rows: int
) -> tuple[str, str, str]:
    """What an auto-distill search over a tiny teacher needs: (train, tuning, teacher) ids.
    The teacher has three layers, so the search's students are cuts of it that can be faster."""
    teacher_dir = save_tiny_bert(folder / "teacher3", layers=3, hidden=32)
    train = upload_table(client, qnli_like_frame(train_rows, seed=4), "train.csv")["id"]
    tuning = upload_table(client, qnli_like_frame(40, seed=2), "tuning.csv")["id"]
    return train, tuning, upload_model_folder(client, teacher_dir)["id"]


def upload_model_folder(client: TestClient | httpx.Client, folder: Path) -> dict:
    """A model folder for the QNLI-like tables, uploaded as an archive: the new model."""
    response = client.post(
        "/v1/models",
        files={"file": ("model.zip", zip_folder(folder))},
        data={"text_columns": "question,sentence", "labels": "entailment,not_entailment"},
    )
    assert response.status_code == 201, response.text
    return response.json()


def wait_for_job(client: TestClient | httpx.Client, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout}s: {job}")


@pytest.fixture(scope="session")
def qnli_tables() -> dict:
    return {
        "train": qnli_like_frame(160, seed=1),
        "tuning": qnli_like_frame(40, seed=2),
        "test": qnli_like_frame(80, seed=3),
    }
