"""The API keeps its own contract, in both auth modes: schemathesis against a real uvicorn.

Each mode gets the whole schemathesis run a user would start by hand (`schemathesis run
URL/openapi.json --checks all`): examples, coverage, fuzzing and the stateful phase, which follows
the document's OpenAPI links (create a dataset -> read it -> train on it -> delete it), with every
check. Any failure fails the test. With auth on the run sends a valid key, and the auth checks
send none or a wrong one and expect 401. The document itself is checked by openapi-spec-validator.

Bounded so both runs stay well under three minutes: DISTILLERY_FUZZ_EXAMPLES examples per
operation (60 by default; a nightly job sets more) and a fixed seed (DISTILLERY_FUZZ_SEED).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from openapi_spec_validator import validate

from app.main import create_app
from domain.auth import create_key
from domain.config import Settings
from tests.conftest import migrate

EXAMPLES_PER_OPERATION = int(os.environ.get("DISTILLERY_FUZZ_EXAMPLES", "60"))
SEED = int(os.environ.get("DISTILLERY_FUZZ_SEED", "20261202"))
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")

# The project's schemathesis settings (one check relaxed on three operations, each said why):
# the same file the README's hand-run command reads.
SCHEMATHESIS_CONFIG = Path(__file__).resolve().parents[2] / "schemathesis.toml"


@dataclass
class LiveServer:
    url: str
    api_key: str | None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(home: Path, auth_enabled: bool) -> Iterator[LiveServer]:
    service_settings = Settings(
        home=home,
        auth_enabled=auth_enabled,
        max_upload_bytes=2 * 1024 * 1024,
        allowed_data_roots=[home / "shared"] if auth_enabled else [],
        task_queue=f"fuzz-{'on' if auth_enabled else 'off'}",
    )
    service_settings.ensure_local_dirs()
    (home / "shared").mkdir()
    migrate(service_settings.resolved_database_url())
    app = create_app(service_settings)
    secret = None
    if auth_enabled:
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
    yield LiveServer(f"http://127.0.0.1:{port}", secret)
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def auth_on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from serve(tmp_path_factory.mktemp("fuzz-auth-on"), auth_enabled=True)


@pytest.fixture(scope="module")
def auth_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    yield from serve(tmp_path_factory.mktemp("fuzz-auth-off"), auth_enabled=False)


@pytest.fixture(params=["auth_off", "auth_on"])
def live_server(request: pytest.FixtureRequest) -> LiveServer:
    return request.getfixturevalue(request.param)


def openapi_document(auth_enabled: bool) -> dict:
    with tempfile.TemporaryDirectory() as home:
        return create_app(Settings(home=Path(home), auth_enabled=auth_enabled)).openapi()


def test_the_document_is_valid_openapi(live_server: LiveServer) -> None:
    document = httpx.get(f"{live_server.url}/openapi.json").json()
    validate(document)  # openapi-spec-validator: raises on any violation of the 3.1 schema
    assert document == openapi_document(live_server.api_key is not None)


def test_the_document_states_the_servers_auth_mode(
    auth_on: LiveServer, auth_off: LiveServer
) -> None:
    on = httpx.get(f"{auth_on.url}/openapi.json").json()
    off = httpx.get(f"{auth_off.url}/openapi.json").json()
    assert on["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": on["components"]["securitySchemes"]["HTTPBearer"]["description"],
    }
    assert "securitySchemes" not in off["components"]
    for path, methods in on["paths"].items():
        for method, operation in methods.items():
            off_operation = off["paths"][path][method]
            assert "security" not in off_operation and "401" not in off_operation["responses"]
            if path.startswith("/v1/"):
                assert operation["security"] == [{"HTTPBearer": []}], (path, method)
                assert "WWW-Authenticate" in operation["responses"]["401"]["headers"]
            else:
                assert "security" not in operation, (path, method)
    # No key with auth on: 401 with a challenge; with auth off the same request is served.
    missing = httpx.get(f"{auth_on.url}/v1/datasets")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = httpx.get(f"{auth_on.url}/v1/datasets", headers={"Authorization": "Bearer dk_nope"})
    assert wrong.status_code == 401 and "invalid_token" in wrong.headers["WWW-Authenticate"]
    assert httpx.get(f"{auth_off.url}/v1/datasets").status_code == 200


def test_405_allows_every_method_of_the_path(auth_off: LiveServer) -> None:
    for path, allowed in (
        ("/v1/datasets/ds_x", "GET, HEAD, DELETE"),
        ("/v1/models/mdl_x", "GET, HEAD, DELETE"),
        ("/v1/models/mdl_x/variants", "GET, HEAD, POST"),
        ("/v1/jobs", "GET, HEAD, POST"),
    ):
        response = httpx.request("PUT", f"{auth_off.url}{path}")
        assert response.status_code == 405
        assert response.headers["Allow"] == allowed, path
        assert response.headers["content-type"] == "application/problem+json"


def test_page_cursors_round_trip(auth_off: LiveServer) -> None:
    rows = "a fine long film,p\nduller than most,n\nloved every minute,p\n"
    for text in (f"review,label\n{rows}", f"comment,label\n{rows}"):
        created = httpx.post(
            f"{auth_off.url}/v1/datasets", files={"file": ("t.csv", text.encode())}
        )
        assert created.status_code == 201, created.text
    first = httpx.get(f"{auth_off.url}/v1/datasets", params={"limit": 1}).json()
    assert re.fullmatch(r"[0-9]{1,16}\.[A-Za-z0-9_-]{1,64}", first["next_cursor"])
    second = httpx.get(
        f"{auth_off.url}/v1/datasets", params={"limit": 1, "cursor": first["next_cursor"]}
    ).json()
    assert second["data"] and second["data"][0]["id"] != first["data"][0]["id"]
    # Any cursor of that grammar is a position; anything else is refused by validation.
    assert httpx.get(f"{auth_off.url}/v1/datasets?cursor=0.a").json()["data"] == []
    assert httpx.get(f"{auth_off.url}/v1/datasets?cursor=abc").status_code == 422


def test_schemathesis_all_checks_and_stateful_links_find_no_failure(
    live_server: LiveServer, tmp_path: Path
) -> None:
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(SCHEMATHESIS_CONFIG),
        "--no-color",
        "run",
        f"{live_server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        str(SEED),
    ]
    if live_server.api_key is not None:
        command += ["-H", f"Authorization: Bearer {live_server.api_key}"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    output = run.stdout + run.stderr
    generated = re.search(r"(\d+) generated", output)
    links = re.search(r"API Links:\s+(\d+) covered / (\d+) selected", output)
    mode = "auth on" if live_server.api_key else "auth off"
    summary = (
        f"schemathesis ({mode}): {generated.group(1) if generated else '?'} cases, "
        f"links {links.group(1) + ' of ' + links.group(2) if links else '?'} covered"
    )
    print(summary)
    assert run.returncode == 0, f"{summary}\n{output[-20000:]}"
    assert "failures" not in output.split("SUMMARY")[-1].lower().replace("0 failures", ""), output
    assert generated and int(generated.group(1)) > 0, output
    assert links and int(links.group(1)) > 0, output


def test_every_operation_is_documented_with_examples_and_problems(auth_on: LiveServer) -> None:
    document = httpx.get(f"{auth_on.url}/openapi.json").json()
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
    # Each create links to the reads and uses of what it made.
    links = document["paths"]["/v1/datasets"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} >= {"get_dataset", "create_job"}
    assert "links" in document["paths"]["/v1/models"]["post"]["responses"]["201"]
    assert "links" in document["paths"]["/v1/jobs"]["post"]["responses"]["202"]
