"""Idempotency-Key on the three creating POSTs: a retry gets the first response, another body
with the same key is 422, and a retry while the first is still running is 409."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import Settings
from tests.conftest import zip_folder
from tests.factories import qnli_like_frame


def csv_upload(rows: int = 20) -> dict:
    return {"file": ("train.csv", qnli_like_frame(rows).to_csv(index=False).encode())}


def test_dataset_retry_gets_the_first_response(client: TestClient) -> None:
    key = {"Idempotency-Key": "upload-1"}
    first = client.post("/v1/datasets", files=csv_upload(), data={"name": "a"}, headers=key)
    again = client.post("/v1/datasets", files=csv_upload(), data={"name": "a"}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(client.get("/v1/datasets").json()["data"]) == 1

    other_body = client.post("/v1/datasets", files=csv_upload(), data={"name": "b"}, headers=key)
    assert other_body.status_code == 422
    assert other_body.json()["field"] == "Idempotency-Key"

    # Once the dataset it made is deleted, the key is free again: a retry must not hand out
    # an id that is gone.
    assert client.delete(f"/v1/datasets/{first.json()['id']}").status_code == 204
    after_delete = client.post("/v1/datasets", files=csv_upload(), data={"name": "a"}, headers=key)
    assert after_delete.status_code == 201 and "idempotent-replayed" not in after_delete.headers
    assert after_delete.json()["id"] != first.json()["id"]
    assert client.get(f"/v1/datasets/{after_delete.json()['id']}").status_code == 200

    # Keys are per endpoint: the same key on another route is a new request.
    path_route = client.post("/v1/datasets/from-path", json={"path": "/x"}, headers=key)
    assert path_route.status_code == 403


def test_model_retry_gets_the_first_response(client: TestClient, tiny_teacher_dir: Path) -> None:
    upload = {"file": ("teacher.zip", zip_folder(tiny_teacher_dir))}
    form = {"text_columns": "question,sentence", "labels": "entailment,not_entailment"}
    key = {"Idempotency-Key": "model-1"}
    first = client.post("/v1/models", files=upload, data=form, headers=key)
    again = client.post("/v1/models", files=upload, data=form, headers=key)
    assert first.status_code == again.status_code == 201, first.text
    assert again.json()["id"] == first.json()["id"]
    assert len(client.get("/v1/models").json()["data"]) == 1


def test_job_retry_gets_the_first_response(client: TestClient, tiny_student_dir: Path) -> None:
    dataset = client.post("/v1/datasets", files=csv_upload()).json()
    body = {
        "kind": "finetune",
        "train_dataset": dataset["id"],
        "hyperparameters": {"model.hf_text.checkpoint_name": str(tiny_student_dir)},
    }
    key = {"Idempotency-Key": "job-1"}
    first = client.post("/v1/jobs", json=body, headers=key)
    # Same request, keys in another order: still the same request.
    again = client.post("/v1/jobs", json=dict(reversed(list(body.items()))), headers=key)
    assert first.status_code == again.status_code == 202, first.text
    assert again.json()["id"] == first.json()["id"]
    changed = client.post("/v1/jobs", json={**body, "label": "sentence"}, headers=key)
    assert changed.status_code == 422 and "different request" in changed.json()["detail"]


def test_failed_first_request_leaves_the_key_free(client: TestClient) -> None:
    key = {"Idempotency-Key": "retry-after-failure"}
    refused = client.post(
        "/v1/jobs", json={"kind": "finetune", "train_dataset": "ds_x"}, headers=key
    )
    assert refused.status_code == 404
    dataset = client.post("/v1/datasets", files=csv_upload(), headers=key)
    assert dataset.status_code == 201


def test_retry_while_the_first_is_running_is_409(
    sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(sqlite_settings)
    release = threading.Event()
    started = threading.Event()
    from app.routes import datasets as dataset_routes

    real_ingest = dataset_routes.ingest_dataset

    def slow_ingest(*args, **kwargs):
        started.set()
        release.wait(timeout=30)
        return real_ingest(*args, **kwargs)

    monkeypatch.setattr(dataset_routes, "ingest_dataset", slow_ingest)

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as api:
            key = {"Idempotency-Key": "in-flight"}
            first = asyncio.create_task(api.post("/v1/datasets", files=csv_upload(), headers=key))
            while not started.is_set():
                await asyncio.sleep(0.01)
            second = await api.post("/v1/datasets", files=csv_upload(), headers=key)
            release.set()
            return await first, second

    started_at = time.monotonic()
    first, second = asyncio.run(scenario())
    assert time.monotonic() - started_at < 30
    assert first.status_code == 201, first.text
    assert second.status_code == 409, second.text
    assert second.headers["retry-after"] == "1"
    assert "still running" in second.json()["detail"]
