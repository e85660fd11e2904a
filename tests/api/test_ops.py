"""Operations: request ids, structured logs, readiness."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import Settings
from tests.conftest import ROOT, settings_env

PROBLEM = "application/problem+json"


def test_request_id_is_kept_when_sent_and_made_when_not(client: TestClient) -> None:
    sent = client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b"})
    assert sent.headers["x-request-id"] == "trace-42.a:b"

    made = client.get("/healthz").headers["x-request-id"]
    other = client.get("/healthz").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made) and made != other

    # An id that could forge or flood log lines is replaced, not echoed.
    for hostile in (b"a b", b"x" * 129, "id\u00e9".encode("latin-1"), b"{}"):
        replaced = client.get("/healthz", headers={"X-Request-ID": hostile})
        assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"]), hostile


def test_errors_carry_the_request_id_too(client: TestClient) -> None:
    response = client.get("/v1/datasets/ds_nope", headers={"X-Request-ID": "req-404"})
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["x-request-id"] == "req-404"


def test_live_server_writes_one_json_access_line_per_request(
    sqlite_settings: Settings, live_server, tmp_path: Path
) -> None:
    settings = sqlite_settings.model_copy(update={"log_format": "json"})
    base_url = live_server(settings)
    with httpx.Client(base_url=base_url) as http:
        assert http.get("/healthz", headers={"X-Request-ID": "probe-1"}).status_code == 200
        missing = http.get("/v1/models/mdl_missing", headers={"X-Request-ID": "probe-2"})
        assert missing.status_code == 404
        assert missing.headers["x-request-id"] == "probe-2"
        assert http.get("/readyz", headers={"X-Request-ID": "probe-3"}).status_code == 200

    port = base_url.rsplit(":", 1)[1]
    log_file = tmp_path / f"uvicorn-{port}.log"
    # The access line is written once the response has gone out, so it can trail the reply.
    deadline = time.monotonic() + 10
    while '"probe-3"' not in log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = log_file.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    access = {r["request_id"]: r for r in records if r["logger"] == "distillery.access"}
    assert access["probe-1"]["path"] == "/healthz" and access["probe-1"]["status"] == 200
    assert access["probe-2"]["status"] == 404 and access["probe-2"]["method"] == "GET"
    assert access["probe-3"]["path"] == "/readyz"
    for record in access.values():
        assert record["level"] == "INFO" and record["duration_ms"] >= 0 and record["time"]
    # Startup lines go through the same handler: the auth-off warning is JSON too.
    assert any(r["level"] == "WARNING" and "AUTH IS OFF" in r["message"] for r in records)


def test_readyz_is_ready_on_the_embedded_default(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "components": {"database": "ok", "broker": "ok", "storage": "ok"},
    }


@pytest.mark.parametrize(
    ("component", "broken"),
    [
        ("broker", {"broker_url": "redis://127.0.0.1:1/0"}),
        ("database", {"database_url": "postgresql+psycopg://nobody@127.0.0.1:1/nothing"}),
    ],
)
def test_readyz_names_the_component_it_cannot_reach(
    sqlite_settings: Settings, component: str, broken: dict[str, str]
) -> None:
    settings = sqlite_settings.model_copy(update=broken)
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
        # Liveness does not depend on the others: the process itself is fine.
        assert client.get("/healthz").status_code == 200
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["field"] == component
    assert component in body["detail"]
    healthy = {"database", "broker", "storage"} - {component}
    assert {name for name, state in body["components"].items() if state == "ok"} == healthy


def test_readyz_names_the_storage_when_the_artifact_dir_is_gone(
    sqlite_settings: Settings,
) -> None:
    with TestClient(create_app(sqlite_settings)) as client:
        assert client.get("/readyz").status_code == 200
        # An unmounted volume: the directory under the store vanishes.
        shutil.rmtree(sqlite_settings.resolved_artifact_dir())
        response = client.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.json()["field"] == "storage"
    assert response.json()["components"]["storage"] == "FileNotFoundError"


def test_reaper_health_check_follows_its_passes(sqlite_settings: Settings, tmp_path: Path) -> None:
    """`distillery reaper --check` (the reaper container's health check) against a real reaper
    process: unhealthy before its first pass, healthy after, unhealthy once passes stop."""
    env = {
        **settings_env(sqlite_settings.model_copy(update={"reaper_interval_seconds": 0.3})),
        # The alive file lives in the temporary folder: this test's own.
        "TMPDIR": str(tmp_path),
    }

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "distillery_cli", "reaper", "--check"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    before = check()
    assert before.returncode == 1 and "missing" in before.stderr
    reaper = subprocess.Popen(
        [sys.executable, "-m", "distillery_cli", "reaper"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    alive = tmp_path / "distillery-reaper.alive"
    try:
        deadline = time.monotonic() + 60
        while not alive.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        result = check()
        assert result.returncode == 0, result.stderr
        assert "healthy" in result.stdout
    finally:
        reaper.terminate()
        reaper.wait(timeout=15)
    # Passes stopped long ago (three intervals plus the slack).
    stale = time.time() - 3600
    os.utime(alive, (stale, stale))
    after = check()
    assert after.returncode == 1 and "last reaper pass" in after.stderr
