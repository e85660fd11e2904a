"""Schemathesis against a real uvicorn server and the OpenAPI document it serves.

Every operation gets generated requests (valid and invalid); none may get a 5xx, and every
response must match what the document declares for it: status code, content type, body schema.
Auth is on and requests carry a user key, so the ownership paths run too. Examples are bounded
so the whole run stays well under two minutes.

The operations are read from the app's document at import (schemathesis's lazy fixture loader
does not run on pytest 9), and a test checks that the live server serves that same document.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app
from domain.auth import create_key
from domain.config import Settings
from tests.conftest import migrate

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    home = tmp_path_factory.mktemp("fuzz")
    service_settings = Settings(
        home=home,
        auth_enabled=True,
        max_upload_bytes=2 * 1024 * 1024,
        allowed_data_roots=[home / "shared"],
        task_queue="fuzz",
    )
    service_settings.ensure_local_dirs()
    (home / "shared").mkdir()
    migrate(service_settings.resolved_database_url())
    app = create_app(service_settings)
    with app.state.session_factory() as session:
        _, secret = create_key(session, "fuzzer")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", secret
    server.should_exit = True
    thread.join(timeout=10)


def openapi_document() -> dict:
    with tempfile.TemporaryDirectory() as home:
        return create_app(Settings(home=Path(home), auth_enabled=True)).openapi()


DOCUMENT = openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_live_server_serves_this_document(live_server: tuple[str, str]) -> None:
    assert httpx.get(f"{live_server[0]}/openapi.json").json() == DOCUMENT


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_responses_match_the_schema(
    case, live_server: tuple[str, str]
) -> None:
    base_url, api_key = live_server
    case.call_and_validate(
        base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, checks=CHECKS
    )


def test_every_operation_is_documented_with_examples_and_problems(
    live_server: tuple[str, str],
) -> None:
    document = httpx.get(f"{live_server[0]}/openapi.json").json()
    operation_ids = set()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            operation_ids.add(operation["operationId"])
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], (
                        path,
                        method,
                        status,
                    )
                    assert "example" in response["content"]["application/problem+json"]
            if path.startswith("/v1/"):
                assert "401" in operation["responses"], (path, method)
    assert {
        "create_dataset",
        "register_dataset_path",
        "list_datasets",
        "get_dataset",
        "delete_dataset",
        "create_model",
        "list_models",
        "get_model",
        "download_model",
        "delete_model",
        "predict",
        "evaluate",
        "create_job",
        "get_job",
        "healthz",
    } <= operation_ids
    schemas = document["components"]["schemas"]
    for name in (
        "DatasetDetail",
        "DatasetFromPath",
        "ModelOut",
        "JobCreate",
        "PredictRequest",
        "PredictResponse",
        "EvaluateRequest",
        "EvaluateResponse",
        "Health",
    ):
        assert schemas[name].get("examples"), name
