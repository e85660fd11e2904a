"""Online prediction through the real ASGI app: micro-batching across concurrent HTTP requests,
the 429 path, input limits, readiness, preloading, int8 variants and /metrics."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event as sqlalchemy_event

from app.main import create_app
from app.serving import PredictorCache
from domain.config import Settings
from tests.api.test_api import assert_problem
from tests.conftest import upload_model_folder, upload_table
from tests.factories import qnli_like_frame

ROWS = [
    {"question": f"what is the {subject} ?", "sentence": f"the {subject} {verb} in the city ."}
    for subject, verb in [
        ("river", "flows"),
        ("king", "never"),
        ("bridge", "crossed"),
        ("forest", "missing"),
        ("engine", "powered"),
        ("painter", "nothing"),
    ]
]


@pytest.fixture
def model(client: TestClient, tiny_teacher_dir: Path) -> dict:
    return upload_model_folder(client, tiny_teacher_dir)


def serving_app(settings: Settings, **overrides: object) -> FastAPI:
    return create_app(settings.model_copy(update=overrides))


class BlockedInference:
    """Holds the app's only inference thread, so requests queue up until `release()`."""

    def __init__(self, cache: PredictorCache) -> None:
        self.gate = threading.Event()
        self.holding = threading.Event()

        def hold() -> None:
            self.holding.set()
            self.gate.wait(30)

        cache.executor.submit(hold)
        assert self.holding.wait(10)

    def release(self) -> None:
        self.gate.set()


def test_predict_and_predict_proba_agree(client: TestClient, model: dict) -> None:
    predicted = client.post(f"/v1/models/{model['id']}/predict", json={"rows": ROWS})
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["probabilities"] is None
    proba = client.post(f"/v1/models/{model['id']}/predict_proba", json={"rows": ROWS})
    assert proba.status_code == 200, proba.text
    body = proba.json()
    assert body["predictions"] == predicted.json()["predictions"]
    for row in body["probabilities"]:
        assert set(row) == {"entailment", "not_entailment"}
        assert sum(row.values()) == pytest.approx(1.0, abs=1e-5)


def test_concurrent_requests_are_merged_and_each_gets_its_own_rows(
    sqlite_settings: Settings, tiny_teacher_dir: Path
) -> None:
    app = serving_app(sqlite_settings, predict_max_batch_rows=64, predict_max_wait_ms=50)
    with TestClient(app) as client:
        model_id = upload_model_folder(client, tiny_teacher_dir)["id"]
        one_by_one = [
            client.post(f"/v1/models/{model_id}/predict_proba", json={"rows": [row]}).json()[
                "probabilities"
            ][0]
            for row in ROWS
        ]
    cache: PredictorCache = app.state.predictors
    served = cache.lookup(model_id)
    assert served is not None

    async def concurrently() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            blocked = BlockedInference(cache)
            requests = [
                asyncio.create_task(
                    http.post(f"/v1/models/{model_id}/predict_proba", json={"rows": [row]})
                )
                for row in ROWS * 3
            ]
            # All 18 wait behind the held thread: a first batch is taken, the rest queue.
            await until(
                lambda: batch_rows(app) - rows_before + served.batcher.queued_rows == len(requests),
                requests,
            )
            blocked.release()
            return await asyncio.gather(*requests)

    batches_before, rows_before = batch_count(app), batch_rows(app)
    responses = asyncio.run(concurrently())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    for response, expected in zip(responses, one_by_one * 3, strict=True):
        got = response.json()["probabilities"][0]
        assert got == pytest.approx(expected, abs=1e-4)
    # 18 requests, at most 2 forward passes: the batch taken first (all 18 when the drain task
    # starts only after every request has queued, as on a loaded machine), then the rest.
    assert batch_count(app) - batches_before in (1, 2)


async def until(
    condition: Callable[[], bool], requests: list[asyncio.Task[httpx.Response]]
) -> None:
    """Wait for the server to reach a state; fail (not hang) if a request ended first."""
    for _ in range(3000):
        if condition():
            return
        ended = [task.result() for task in requests if task.done()]
        assert not ended, f"a request ended early: {[(r.status_code, r.text) for r in ended][:1]}"
        await asyncio.sleep(0.01)
    raise AssertionError("the server never reached the expected state")


def batch_count(app: FastAPI) -> float:
    value = app.state.metrics.registry.get_sample_value("distillery_predict_batch_rows_count")
    return value or 0.0


def batch_rows(app: FastAPI) -> float:
    value = app.state.metrics.registry.get_sample_value("distillery_predict_batch_rows_sum")
    return value or 0.0


def test_a_full_queue_answers_429_with_retry_after(
    sqlite_settings: Settings, tiny_teacher_dir: Path
) -> None:
    app = serving_app(sqlite_settings, predict_max_batch_rows=1, predict_max_queue_rows=2)
    with TestClient(app) as client:
        model_id = upload_model_folder(client, tiny_teacher_dir)["id"]
        assert client.post(f"/v1/models/{model_id}/predict", json={"rows": ROWS[:1]}).is_success
    cache: PredictorCache = app.state.predictors
    served = cache.lookup(model_id)
    assert served is not None

    async def overload() -> tuple[list[httpx.Response], list[httpx.Response]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            blocked = BlockedInference(cache)

            def post() -> asyncio.Task[httpx.Response]:
                return asyncio.create_task(
                    http.post(f"/v1/models/{model_id}/predict", json={"rows": ROWS[:1]})
                )

            # The batch worker waits for the held thread, so two requests fill the queue.
            accepted = [post(), post()]
            await until(lambda: served.batcher.queued_rows == 2, accepted)
            refused = await asyncio.gather(post(), post())
            blocked.release()
            return list(await asyncio.gather(*accepted)), list(refused)

    accepted, refused = asyncio.run(overload())
    assert [r.status_code for r in accepted] == [200, 200]
    for response in refused:
        assert_problem(response, 429, says="already waiting")
        assert int(response.headers["retry-after"]) >= 1
    rejected = app.state.metrics.registry.get_sample_value(
        "distillery_http_requests_total",
        {"route": "/v1/models/{model_id}/predict", "method": "POST", "status": "429"},
    )
    assert rejected == 2


def test_input_limits_name_the_field(sqlite_settings: Settings, tiny_teacher_dir: Path) -> None:
    app = serving_app(sqlite_settings, predict_max_text_chars=40, predict_max_rows=4)
    with TestClient(app) as client:
        model_id = upload_model_folder(client, tiny_teacher_dir)["id"]
        url = f"/v1/models/{model_id}/predict"
        long_row = {"question": "what is the river ? " * 5, "sentence": "the river flows ."}
        assert_problem(
            client.post(url, json={"rows": [ROWS[0], long_row]}),
            422,
            field="rows[1].question",
            says='"truncate": true',
        )
        assert client.post(url, json={"rows": [long_row], "truncate": True}).status_code == 200
        assert_problem(client.post(url, json={"rows": ROWS[:5]}), 422, field="rows", says="4")
        body = assert_problem(
            client.post(url, json={"rows": [{"sentence": "the river flows ."}]}),
            422,
            field="text_columns",
            says="question",
        )
        assert body["missing"] == ["question"]
        assert_problem(
            client.post(url, json={"rows": [{"question": ["a"], "sentence": "b"}]}),
            422,
            field="rows[0].question",
        )


def test_readiness_follows_loading_and_preload(
    sqlite_settings: Settings, tiny_teacher_dir: Path
) -> None:
    with TestClient(create_app(sqlite_settings)) as client:
        model_id = upload_model_folder(client, tiny_teacher_dir)["id"]
        ready = client.get(f"/v1/models/{model_id}/ready").json()
        assert ready == {
            "model": model_id,
            "variant": "float",
            "ready": False,
            "state": "not_loaded",
            "detail": None,
        }
        client.post(f"/v1/models/{model_id}/predict", json={"rows": ROWS[:1]})
        assert client.get(f"/v1/models/{model_id}/ready").json()["ready"] is True
        assert_problem(client.get("/v1/models/mdl_missing/ready"), 404)
        assert_problem(
            client.get(f"/v1/models/{model_id}/ready", params={"variant": "fp4"}),
            422,
            field="variant",
        )
    # A new server process preloads the model at startup, before any request asks for it.
    with TestClient(serving_app(sqlite_settings, preload_models=[model_id])) as client:
        state = wait_until_loaded(client, model_id)
        assert state["ready"] is True
        loads = client.app.state.metrics.registry.get_sample_value(  # type: ignore[attr-defined]
            "distillery_model_cache_total", {"event": "load"}
        )
        assert loads == 1


def wait_until_loaded(client: TestClient, model_id: str, limit: float = 60) -> dict:
    deadline = time.monotonic() + limit
    while True:
        state = client.get(f"/v1/models/{model_id}/ready").json()
        if state["state"] in ("ready", "failed") or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def test_int8_variant_is_made_scored_and_served(client: TestClient, model: dict) -> None:
    model_id = model["id"]
    url = f"/v1/models/{model_id}/predict"
    assert_problem(
        client.post(url, params={"variant": "int8"}, json={"rows": ROWS}), 404, field="variant"
    )
    # An uploaded model has no job, so no tuning data to compare on: the caller names some.
    assert_problem(
        client.post(f"/v1/models/{model_id}/variants", json={"kind": "int8"}), 422, "dataset"
    )
    labelled = upload_table(client, qnli_like_frame(50, seed=3), "tuning.csv")
    made = client.post(
        f"/v1/models/{model_id}/variants",
        json={"kind": "int8", "dataset": labelled["id"], "make_default": True},
    )
    assert made.status_code == 201, made.text
    variant = made.json()
    assert variant["kind"] == "int8" and variant["is_default"] is True
    assert variant["dataset"] == labelled["id"]
    comparison = variant["comparison"]
    assert comparison["rows"] == 50
    assert comparison["accuracy_drop_points"] == pytest.approx(
        100 * (comparison["float"]["accuracy"] - comparison["variant"]["accuracy"]), abs=1e-3
    )
    assert client.get(f"/v1/models/{model_id}").json()["default_variant"] == "int8"
    assert client.get(f"/v1/models/{model_id}/variants").json()["data"] == [variant]

    as_default = client.post(url, json={"rows": ROWS}).json()["predictions"]
    as_int8 = client.post(url, params={"variant": "int8"}, json={"rows": ROWS}).json()
    as_float = client.post(url, params={"variant": "float"}, json={"rows": ROWS}).json()
    assert as_default == as_int8["predictions"]
    assert len(as_float["predictions"]) == len(ROWS)
    # Each variant is its own cache entry, and /ready reports the default variant.
    assert client.get(f"/v1/models/{model_id}/ready").json()["variant"] == "int8"
    assert client.get(f"/v1/models/{model_id}/ready?variant=float").json()["ready"] is True


def test_metrics_are_prometheus_text(client: TestClient, model: dict) -> None:
    client.post(f"/v1/models/{model['id']}/predict", json={"rows": ROWS})
    client.post(f"/v1/models/{model['id']}/predict", json={"rows": ROWS})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    route = 'route="/v1/models/{model_id}/predict"'
    assert f'distillery_http_requests_total{{method="POST",{route},status="200"}} 2.0' in text
    assert "distillery_http_request_duration_seconds_bucket{" in text
    assert "distillery_predict_batch_rows_count 2.0" in text
    assert 'distillery_model_cache_total{event="load"} 1.0' in text
    assert 'distillery_model_cache_total{event="hit"} 1.0' in text
    assert f'distillery_predict_queue_rows{{model="{model["id"]}",variant="float"}} 0.0' in text
    assert "distillery_models_loaded 1.0" in text


def test_a_loaded_model_is_served_without_database_reads_until_it_changes(
    client: TestClient, model: dict
) -> None:
    """Within the lookup TTL, predict on a loaded model reads nothing from the database; a
    delete through this process is seen at once, and a 404 is not remembered."""
    app = client.app
    assert isinstance(app, FastAPI)
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    path = f"/v1/models/{model['id']}/predict"
    assert client.post(path, json={"rows": ROWS[:1]}).status_code == 200  # loads, reads
    sqlalchemy_event.listen(app.state.engine, "before_cursor_execute", count)
    try:
        assert client.post(path, json={"rows": ROWS[:2]}).status_code == 200
        assert statements == []
        assert client.delete(f"/v1/models/{model['id']}").status_code == 204
        assert_problem(client.post(path, json={"rows": ROWS[:1]}), 404)
        statements.clear()
        assert_problem(client.post(path, json={"rows": ROWS[:1]}), 404)
        assert statements, "a 404 must be read again, not served from the cache"
    finally:
        sqlalchemy_event.remove(app.state.engine, "before_cursor_execute", count)
