"""The console's creating forms over HTTP, through the ASGI app: each page's form carries a
one-time key, so the same form posted twice (a double click, the browser's resubmit) makes one
dataset or one job; a fresh form, another form's key or another user's key makes its own. An
auto-distill search's console views (leaderboard, frontier PNG, trials in the jobs list) are
behind the same session and ownership checks as every other page."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.ui import pages_datasets
from domain.auth import create_key
from domain.config import Settings
from domain.db import make_engine, make_session_factory
from domain.orm import Job
from tests.api.test_api import teacher, train_dataset
from tests.conftest import upload_table, zip_folder
from tests.factories import qnli_like_frame

__all__ = ["teacher", "train_dataset"]  # fixtures shared with test_api


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden {name} field in the page"
    return found.group(1)


def form_of(client: TestClient | httpx.Client, path: str) -> dict[str, str]:
    """A freshly loaded form's hidden fields: the CSRF token and the one-time key."""
    response = client.get(path)
    assert response.status_code == 200, response.text
    return {name: hidden(response.text, name) for name in ("csrf_token", "idempotency_key")}


def csv_file(rows: int = 20, seed: int = 0) -> dict:
    content = qnli_like_frame(rows, seed=seed).to_csv(index=False).encode()
    return {"file": ("train.csv", content, "text/csv")}


def post_upload(client: TestClient, fields: dict[str, str], **extra: str) -> httpx.Response:
    return client.post(
        "/ui/datasets",
        files=csv_file(),
        data={**fields, "name": "qnli", **extra},
        follow_redirects=False,
    )


def test_the_upload_form_posted_twice_stores_one_dataset(client: TestClient) -> None:
    form = form_of(client, "/ui/datasets")
    first = post_upload(client, form)
    again = post_upload(client, form)
    assert first.status_code == again.status_code == 303, first.text
    assert first.headers["location"].startswith("/ui/datasets/ds_")
    assert again.headers["location"] == first.headers["location"]
    assert len(client.get("/v1/datasets").json()["data"]) == 1

    # The same form sent again with other values is refused above the form, storing nothing.
    changed = post_upload(client, form, name="another name")
    assert changed.status_code == 422
    assert 'data-field="_form"' in changed.text and "reload the page" in changed.text
    assert len(client.get("/v1/datasets").json()["data"]) == 1

    # Each load of the page is a new form: the same file uploaded from it is a second dataset.
    fresh = form_of(client, "/ui/datasets")
    assert fresh["idempotency_key"] != form["idempotency_key"]
    second = post_upload(client, fresh)
    assert second.status_code == 303
    assert second.headers["location"] != first.headers["location"]
    assert len(client.get("/v1/datasets").json()["data"]) == 2


def job_fields(form: dict[str, str], dataset: str, checkpoint: Path, **extra: str) -> dict:
    return {
        **form,
        "kind": "finetune",
        "train_dataset": dataset,
        "hyperparameters": f"model.hf_text.checkpoint_name={checkpoint}\noptimization.max_epochs=1",
        "accelerator": "any",
        **extra,
    }


def test_the_job_form_posted_twice_queues_one_job(
    client: TestClient, train_dataset: dict, tiny_student_dir: Path
) -> None:
    form = form_of(client, "/ui/jobs/new")
    fields = job_fields(form, train_dataset["id"], tiny_student_dir)
    first = client.post("/ui/jobs/new", data=fields, follow_redirects=False)
    again = client.post("/ui/jobs/new", data=fields, follow_redirects=False)
    assert first.status_code == again.status_code == 303, first.text
    assert again.headers["location"] == first.headers["location"]
    assert len(client.get("/v1/jobs").json()["data"]) == 1

    # A key is one form's: the upload form's key sent with a job is a new job, not the upload.
    upload_key = form_of(client, "/ui/datasets")
    assert post_upload(client, upload_key).status_code == 303
    other = client.post(
        "/ui/jobs/new",
        data=job_fields(upload_key, train_dataset["id"], tiny_student_dir),
        follow_redirects=False,
    )
    assert other.status_code == 303 and other.headers["location"].startswith("/ui/jobs/job_")
    assert other.headers["location"] != first.headers["location"]
    assert len(client.get("/v1/jobs").json()["data"]) == 2


def test_a_refused_form_can_be_corrected_and_sent_with_its_key(
    client: TestClient, train_dataset: dict, tiny_student_dir: Path
) -> None:
    form = form_of(client, "/ui/jobs/new")
    bad = job_fields(form, train_dataset["id"], tiny_student_dir, label="lable")
    refused = client.post("/ui/jobs/new", data=bad, follow_redirects=False)
    assert refused.status_code == 422 and 'data-field="label"' in refused.text
    assert client.get("/v1/jobs").json()["data"] == []
    fixed = client.post(
        "/ui/jobs/new",
        data=job_fields(form, train_dataset["id"], tiny_student_dir),
        follow_redirects=False,
    )
    assert fixed.status_code == 303, fixed.text
    assert len(client.get("/v1/jobs").json()["data"]) == 1


def test_a_resubmit_while_the_first_is_running_waits_for_it(
    sqlite_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A double click: the second post arrives while the first is still storing the upload.
    The API would answer 409; the form waits for the first and opens the same dataset."""
    app = create_app(sqlite_settings)
    started, release = threading.Event(), threading.Event()
    real_ingest = pages_datasets.ingest_dataset

    def held_ingest(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.set()
        release.wait(timeout=30)
        return real_ingest(*args, **kwargs)

    monkeypatch.setattr(pages_datasets, "ingest_dataset", held_ingest)

    async def scenario() -> tuple[httpx.Response, httpx.Response, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as console:
            page = await console.get("/ui/datasets")
            form = {name: hidden(page.text, name) for name in ("csrf_token", "idempotency_key")}

            def post() -> asyncio.Task[httpx.Response]:
                return asyncio.create_task(
                    console.post("/ui/datasets", files=csv_file(), data={**form, "name": "a"})
                )

            first = post()
            while not started.is_set():
                await asyncio.sleep(0.01)
            second = post()
            await asyncio.sleep(0.5)  # the second is waiting on the first's key by now
            assert not second.done()
            release.set()
            answers = await first, await second
            listed = await console.get("/v1/datasets")
            return answers[0], answers[1], len(listed.json()["data"])

    first, second, stored = asyncio.run(scenario())
    assert first.status_code == second.status_code == 303, second.text
    assert first.headers["location"] == second.headers["location"]
    assert stored == 1


@pytest.fixture
def auth_settings(sqlite_settings: Settings, tiny_student_dir: Path) -> Settings:
    return sqlite_settings.model_copy(
        update={"auth_enabled": True, "allowed_data_roots": [tiny_student_dir.parent]}
    )


def make_key(settings: Settings, name: str) -> str:
    engine = make_engine(settings.resolved_database_url())
    try:
        with make_session_factory(engine)() as session:
            return create_key(session, name)[1]
    finally:
        engine.dispose()


@pytest.fixture
def two_users(auth_settings: Settings) -> Iterator[tuple[TestClient, TestClient, str, str]]:
    """Alice's and Bob's signed-in consoles (one app, two cookie jars) and their API keys."""
    alice_key, bob_key = make_key(auth_settings, "alice"), make_key(auth_settings, "bob")
    app = create_app(auth_settings)
    with TestClient(app) as alice, TestClient(app) as bob:
        for console, secret in ((alice, alice_key), (bob, bob_key)):
            login = console.get("/ui/login")
            signed_in = console.post(
                "/ui/login",
                data={"api_key": secret, "csrf_token": hidden(login.text, "csrf_token")},
                follow_redirects=False,
            )
            assert signed_in.status_code == 303, signed_in.text
        yield alice, bob, alice_key, bob_key


def test_another_users_key_is_theirs_alone(
    two_users: tuple[TestClient, TestClient, str, str],
) -> None:
    """Keys are per user, as the API's are: Bob posting the very key Alice's form carried
    (copied, or guessed) stores his own dataset and is never sent to hers."""
    alice, bob, alice_key, bob_key = two_users
    alice_form = form_of(alice, "/ui/datasets")
    alices = post_upload(alice, alice_form)
    bob_form = {**form_of(bob, "/ui/datasets"), "idempotency_key": alice_form["idempotency_key"]}
    bobs = post_upload(bob, bob_form)
    assert alices.status_code == bobs.status_code == 303, bobs.text
    assert bobs.headers["location"] != alices.headers["location"]
    assert bob.get(alices.headers["location"]).status_code == 404
    for secret in (alice_key, bob_key):
        listed = alice.get("/v1/datasets", headers={"Authorization": f"Bearer {secret}"})
        assert len(listed.json()["data"]) == 1


def test_a_search_in_the_console_and_its_frontier_behind_the_session(
    two_users: tuple[TestClient, TestClient, str, str], tiny_teacher_dir: Path
) -> None:
    alice, bob, alice_key, _ = two_users
    api = {"Authorization": f"Bearer {alice_key}"}
    alice.headers.update(api)
    train = upload_table(alice, qnli_like_frame(40), "train.csv")["id"]
    tuning = upload_table(alice, qnli_like_frame(20, seed=2), "tuning.csv")["id"]
    teacher = alice.post(
        "/v1/models",
        files={"file": ("teacher.zip", zip_folder(tiny_teacher_dir))},
        data={"text_columns": "question,sentence", "labels": "entailment,not_entailment"},
    ).json()["id"]
    search = alice.post(
        "/v1/jobs",
        json={
            "kind": "auto_distill",
            "train_dataset": train,
            "tuning_dataset": tuning,
            "teacher_model": teacher,
            "auto": {"presets": "fast_inference", "time_limit": 600},
        },
    ).json()
    del alice.headers["Authorization"]  # the console from here on: its session cookie only

    # Queued, no worker: the page shows the search's budget and that it is still planning.
    page = alice.get(f"/ui/jobs/{search['id']}")
    assert page.status_code == 200
    assert 'id="auto-distill"' in page.text and 'id="leaderboard-view"' in page.text
    assert "&gt;= 3.0x the teacher" in page.text and "Measuring every candidate" in page.text
    assert 'id="chart-train"' not in page.text
    live = alice.get(f"/ui/jobs/{search['id']}/live.json").json()
    assert live["search"]["trials"] == [] and live["search"]["version"]
    assert f'data-version="{live["search"]["version"]}"' in page.text
    part = alice.get(f"/ui/jobs/{search['id']}/leaderboard")
    assert part.status_code == 200 and part.text.lstrip().startswith('<div id="leaderboard-view"')
    png = alice.get(f"/ui/jobs/{search['id']}/frontier.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG") and png.headers["cache-control"] == "no-store"

    # The jobs list filters by kind and counts a search's trials; ?parent_job lists them.
    # As the filter form sends it: status "any" is blank.
    listed = alice.get("/ui/jobs?status=&kind=auto_distill")
    assert listed.status_code == 200
    assert search["id"] in listed.text and "0 trials" in listed.text
    assert 'value="auto_distill" selected' in listed.text
    trials = alice.get(f"/ui/jobs?parent_job={search['id']}")
    assert trials.status_code == 200 and "The trials of the auto-distill search" in trials.text

    # Another key's search is not found, page, part, image and trials list alike; without a
    # session the image is a redirect to the login page, never the figure.
    for path in ("", "/leaderboard", "/frontier.png", "/live.json"):
        assert bob.get(f"/ui/jobs/{search['id']}{path}").status_code == 404, path
    assert bob.get(f"/ui/jobs?parent_job={search['id']}").status_code == 404
    with TestClient(alice.app) as anonymous:
        image = anonymous.get(f"/ui/jobs/{search['id']}/frontier.png", follow_redirects=False)
        assert image.status_code == 303 and image.headers["location"].startswith("/ui/login")


def test_a_frontier_of_a_job_that_is_no_search_is_refused(
    client: TestClient, train_dataset: dict, tiny_student_dir: Path
) -> None:
    form = form_of(client, "/ui/jobs/new")
    made = client.post(
        "/ui/jobs/new",
        data=job_fields(form, train_dataset["id"], tiny_student_dir),
        follow_redirects=False,
    )
    job_url = made.headers["location"]
    refused = client.get(f"{job_url}/frontier.png")
    assert refused.status_code == 422 and "only auto_distill jobs" in refused.text
    page = client.get(job_url)
    assert 'id="chart-train"' in page.text and 'id="auto-distill"' not in page.text


def test_the_job_form_submits_a_search(
    client: TestClient, train_dataset: dict, teacher: dict
) -> None:
    """kind auto_distill: the form's search settings become the API's `auto` object; a bad one
    is refused next to its box with the API's message, and nothing is queued."""
    tuning = upload_table(client, qnli_like_frame(20, seed=2), "tuning.csv")["id"]
    page = client.get("/ui/jobs/new?kind=auto_distill")
    assert 'id="auto-settings"' in page.text and 'data-kind="auto_distill"' in page.text
    fields = {
        "csrf_token": hidden(page.text, "csrf_token"),
        "idempotency_key": hidden(page.text, "idempotency_key"),
        "kind": "auto_distill",
        "teacher_model": teacher["id"],
        "train_dataset": train_dataset["id"],
        "tuning_dataset": tuning,
        "hyperparameters": "optimization.max_epochs=1",
        "accelerator": "any",
        "auto.presets": "fast_inference",
        "auto.latency_mode": "batched",
        "auto.max_latency_ms_per_row": "5",
        "auto.max_trials": "1",
        "auto.scheduler": "FIFO",
        "auto.min_speedup": "",
        "auto.students": "",
        # auto.packaged_students left unticked: cuts of the teacher only.
        "auto.int8": "on",
    }
    refused = client.post(
        "/ui/jobs/new", data={**fields, "auto.min_speedup": "0.5"}, follow_redirects=False
    )
    assert refused.status_code == 422
    assert 'data-field="auto.min_speedup"' in refused.text
    assert 'id="auto-min_speedup" name="auto.min_speedup" inputmode="decimal" value="0.5"' in (
        refused.text
    )
    missing = client.post(
        "/ui/jobs/new", data={**fields, "auto.students": "/no/such/folder"}, follow_redirects=False
    )
    assert missing.status_code == 422 and 'data-field="auto.students"' in missing.text
    assert client.get("/v1/jobs").json()["data"] == []

    made = client.post("/ui/jobs/new", data=fields, follow_redirects=False)
    assert made.status_code == 303, made.text
    search = made.headers["location"].rsplit("/", 1)[1]
    job = client.get(f"/v1/jobs/{search}").json()
    assert job["kind"] == "auto_distill" and job["teacher_model"] == teacher["id"]
    board = client.get(f"/v1/jobs/{search}/leaderboard").json()
    assert board["budget"]["max_latency_ms_per_row"] == 5 and board["budget"]["min_speedup"] is None
    assert board["max_trials"] == 1 and board["presets"] == "fast_inference"
    # The plan the worker will run: cuts of the teacher only, int8 ticked, no control trial.
    app: Any = client.app
    with app.state.session_factory() as session:
        plan = session.get(Job, search).plan["auto"]
    assert plan["students"] == [] and plan["int8"] is True and plan["no_distill"] is False
    assert plan["scheduler"] == "FIFO"
