"""API keys: each key sees only what it created (404 for the rest), an admin key sees everything,
revoked and unknown keys are refused, and the CLI makes and revokes keys."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.main import create_app
from distillery_cli import main as cli_main
from domain.auth import create_key, hash_secret
from domain.config import Settings, get_settings
from domain.orm import ApiKey
from tests.conftest import upload_table, zip_folder
from tests.factories import qnli_like_frame


@pytest.fixture
def auth_settings(sqlite_settings: Settings) -> Settings:
    return sqlite_settings.model_copy(update={"auth_enabled": True})


@pytest.fixture
def auth_client(auth_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(auth_settings)) as test_client:
        yield test_client


@pytest.fixture
def cli_env(auth_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The `distillery` command reads settings from the environment: point it at this test's."""
    monkeypatch.setenv("DISTILLERY_HOME", str(auth_settings.home))
    monkeypatch.setenv("DISTILLERY_AUTH_ENABLED", "true")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def bearer(client: TestClient, name: str, *, admin: bool = False) -> dict[str, str]:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        _, secret = create_key(session, name, is_admin=admin)
    return {"Authorization": f"Bearer {secret}"}


def test_everything_one_key_creates_is_invisible_to_another(
    auth_client: TestClient, tiny_teacher_dir: Path, tiny_student_dir: Path
) -> None:
    alice, bob = bearer(auth_client, "alice"), bearer(auth_client, "bob")
    auth_client.headers.update(alice)
    dataset = upload_table(auth_client, qnli_like_frame(30), "train.csv")
    model = auth_client.post(
        "/v1/models",
        files={"file": ("teacher.zip", zip_folder(tiny_teacher_dir))},
        data={"text_columns": "question,sentence", "labels": "entailment,not_entailment"},
    ).json()
    job = auth_client.post(
        "/v1/jobs",
        json={
            "kind": "distill",
            "train_dataset": dataset["id"],
            "teacher_model": model["id"],
            "hyperparameters": {"model.hf_text.checkpoint_name": model["id"]},
        },
    )
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]

    # Alice sees her own things.
    assert auth_client.get(f"/v1/datasets/{dataset['id']}").status_code == 200
    assert auth_client.get(f"/v1/models/{model['id']}").status_code == 200
    assert auth_client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert [d["id"] for d in auth_client.get("/v1/datasets").json()["data"]] == [dataset["id"]]

    # To Bob every one of them is a 404, exactly like an id that never existed.
    auth_client.headers.update(bob)
    for path in (
        f"/v1/datasets/{dataset['id']}",
        f"/v1/models/{model['id']}",
        f"/v1/models/{model['id']}/download",
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/events",
        f"/v1/jobs/{job_id}/metrics",
        f"/v1/jobs/{job_id}/report",
    ):
        response = auth_client.get(path)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["title"].endswith("not found")
    for response in (
        auth_client.delete(f"/v1/datasets/{dataset['id']}"),
        auth_client.delete(f"/v1/models/{model['id']}"),
        auth_client.post(f"/v1/models/{model['id']}/predict", json={"rows": [{"question": "a"}]}),
        auth_client.post(f"/v1/models/{model['id']}/evaluate", json={"dataset": dataset["id"]}),
        auth_client.post(f"/v1/jobs/{job_id}/cancel"),
    ):
        assert response.status_code == 404, response.text
    assert auth_client.get("/v1/datasets").json() == {"data": [], "next_cursor": None}
    assert auth_client.get("/v1/models").json() == {"data": [], "next_cursor": None}
    assert auth_client.get("/v1/jobs").json() == {"data": [], "next_cursor": None}
    refused = auth_client.post(
        "/v1/jobs",
        json={"kind": "distill", "train_dataset": dataset["id"], "teacher_model": model["id"]},
    )
    assert refused.status_code == 404 and refused.json()["field"] == "train_dataset"

    # Bob's own upload is his alone; an admin key sees both owners' datasets.
    bobs = upload_table(auth_client, qnli_like_frame(20), "bob.csv")
    auth_client.headers.update(bearer(auth_client, "ops", admin=True))
    listed = {d["id"] for d in auth_client.get("/v1/datasets").json()["data"]}
    assert listed == {dataset["id"], bobs["id"]}
    assert auth_client.get(f"/v1/jobs/{job_id}").status_code == 200


def test_keys_are_required_and_checked(auth_client: TestClient) -> None:
    missing = auth_client.get("/v1/datasets")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["content-type"] == "application/problem+json"
    assert (
        auth_client.get("/v1/datasets", headers={"Authorization": "Basic abc"}).status_code == 401
    )
    assert (
        auth_client.get("/v1/datasets", headers={"Authorization": "Bearer dk_nope"}).status_code
        == 401
    )
    # Health and the API description stay open.
    assert auth_client.get("/healthz").json()["auth"] == "on"
    assert auth_client.get("/openapi.json").status_code == 200


def test_keys_are_stored_hashed_and_revocable(auth_client: TestClient, cli_env: None) -> None:
    factory = auth_client.app.state.session_factory  # type: ignore[attr-defined]
    with factory() as session:
        key, secret = create_key(session, "ci")
    assert secret.startswith("dk_") and len(secret) > 40
    with factory() as session:
        stored = session.scalars(select(ApiKey)).one()
        assert stored.secret_sha256 == hash_secret(secret) and secret not in stored.secret_sha256
        assert stored.prefix == secret[:11]
    headers = {"Authorization": f"Bearer {secret}"}
    assert auth_client.get("/v1/models", headers=headers).status_code == 200
    cli_main(["keys", "revoke", key.id])
    assert auth_client.get("/v1/models", headers=headers).status_code == 401


def test_cli_creates_keys(
    auth_settings: Settings, cli_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_main(["keys", "create", "--name", "notebook", "--admin"])
    printed = capsys.readouterr().out
    secret = printed.strip().splitlines()[-1]
    assert secret.startswith("dk_") and "admin" in printed
    with TestClient(create_app(auth_settings)) as client:
        response = client.get("/v1/jobs/job_x", headers={"Authorization": f"Bearer {secret}"})
        assert response.status_code == 404
    cli_main(["keys", "list"])
    listing = capsys.readouterr().out
    assert "notebook" in listing and secret not in listing
    with pytest.raises(SystemExit, match="no key with id"):
        cli_main(["keys", "revoke", "key_missing"])


def test_auth_off_says_so(client: TestClient, sqlite_settings: Settings, caplog) -> None:
    assert client.get("/healthz").json()["auth"] == "off"
    with caplog.at_level(logging.WARNING, logger="distillery.api"):
        create_app(sqlite_settings)
    assert "AUTH IS OFF" in caplog.text


def test_models_from_jobs_belong_to_the_jobs_owner(
    auth_client: TestClient, tiny_teacher_dir: Path
) -> None:
    """publish_trained (the worker's call) gives the job's owner the model it produced."""
    from distillery.backbones import load_classifier
    from distillery.bundle import BundleMetadata
    from domain.models import publish_trained
    from domain.orm import Job

    alice = bearer(auth_client, "alice")
    auth_client.headers.update(alice)
    train = upload_table(auth_client, qnli_like_frame(20), "a.csv")
    job = auth_client.post(
        "/v1/jobs",
        json={
            "kind": "finetune",
            "train_dataset": train["id"],
            "hyperparameters": {"model.hf_text.checkpoint_name": "all-MiniLM-L6-v2"},
        },
    ).json()
    store = auth_client.app.state.store  # type: ignore[attr-defined]
    metadata = BundleMetadata(problem_type="binary", labels=["a", "b"], text_columns=["question"])
    with auth_client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        row = session.get(Job, job["id"])
        assert row is not None
        model, _ = publish_trained(
            session, store, load_classifier(tiny_teacher_dir, num_labels=2), metadata, row
        )
    assert auth_client.get(f"/v1/models/{model.id}").status_code == 200
    auth_client.headers.update(bearer(auth_client, "bob"))
    assert auth_client.get(f"/v1/models/{model.id}").status_code == 404
