"""The console with auth on: no key goes to the login page; a key signs in to a cookie session
that the live job page polls with; forms refuse a POST without the page's CSRF token; a key sees
only what it owns (another key's job is not found, as in the API); a queued job is cancelled
from its page."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from domain.auth import create_key
from domain.config import Settings
from domain.db import make_engine, make_session_factory
from tests.browser.conftest import Console
from tests.factories import qnli_like_frame

pytestmark = pytest.mark.integration


def make_key(settings: Settings, name: str) -> str:
    engine = make_engine(settings.resolved_database_url())
    try:
        with make_session_factory(engine)() as session:
            return create_key(session, name)[1]
    finally:
        engine.dispose()


def sign_in(page: Page, base_url: str, secret: str) -> None:
    page.goto(f"{base_url}/ui/jobs")
    page.wait_for_url("**/ui/login?next=/ui/jobs")
    page.fill("#api_key", secret)
    page.click("form button[type=submit]")
    page.wait_for_url("**/ui/jobs")


def test_console_with_auth(
    sqlite_settings: Settings, live_server, console_factory, tiny_student_dir: Path
) -> None:
    # No worker: the job stays queued until it is cancelled from its page.
    settings = sqlite_settings.model_copy(
        update={"auth_enabled": True, "allowed_data_roots": [tiny_student_dir.parent]}
    )
    base_url = live_server(settings)
    alice_key, bob_key = make_key(settings, "alice"), make_key(settings, "bob")
    alice: Console = console_factory()
    page = alice.page

    # No key: every console page leads to the login page; a wrong key is refused there.
    page.goto(f"{base_url}/ui/datasets")
    page.wait_for_url("**/ui/login?next=/ui/datasets")
    alice.shoot("20-login")
    page.fill("#api_key", "dk_not-a-key")
    page.click("form button[type=submit]")
    assert "unknown or revoked" in page.locator('.field-error[data-field="api_key"]').inner_text()
    sign_in(page, base_url, alice_key)
    expect(page.locator("header .who")).to_contain_text("alice")
    cookie = next(c for c in alice.context.cookies() if c["name"] == "distillery_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"

    # Alice uploads a table and queues a fine-tune from a checkpoint folder she may read.
    page.goto(f"{base_url}/ui/datasets")
    table = qnli_like_frame(24).to_csv(index=False).encode()
    file = {"name": "a.csv", "mimeType": "text/csv", "buffer": table}
    page.set_input_files("#file", files=[file])
    page.click("#upload-form button[type=submit]")
    page.wait_for_url("**/ui/datasets/ds_*")
    dataset_url = page.url
    page.goto(f"{base_url}/ui/jobs/new?kind=finetune")
    page.fill("#hyperparameters", f"model.hf_text.checkpoint_name={tiny_student_dir}")
    page.click("#job-form button[type=submit]")
    page.wait_for_url("**/ui/jobs/job_*")
    job_url = page.url
    # The page polls with the cookie session (the API itself takes only bearer keys).
    page.wait_for_function("() => window.distilleryLive && window.distilleryLive.polls >= 2")
    expect(page.locator("#job-status")).to_have_text("queued")
    assert page.request.get(f"{base_url}/v1/jobs").status == 401

    # A POST without the page's CSRF token changes nothing.
    refused = page.request.post(f"{job_url}/cancel", form={"csrf_token": "forged"})
    assert refused.status == 403
    page.reload()
    expect(page.locator("#job-status")).to_have_text("queued")
    page.click("#cancel-button")
    page.wait_for_url(job_url)
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(page.locator("#events")).to_contain_text("cancelled")
    expect(page.locator("#cancel-form")).to_be_hidden()
    alice.shoot("21-job-cancelled")

    # Bob sees none of it: Alice's job and dataset are not found, his lists are empty.
    bob: Console = console_factory()
    sign_in(bob.page, base_url, bob_key)
    expect(bob.page.locator(".empty")).to_contain_text("No jobs")
    bob.page.goto(job_url)
    expect(bob.page.locator("h1")).to_have_text("job not found")
    expect(bob.page.locator(".problem")).to_contain_text("404")
    bob.shoot("22-not-found")
    bob.page.goto(dataset_url)
    expect(bob.page.locator("h1")).to_have_text("dataset not found")
    assert bob.page.request.get(f"{job_url}/live.json").status == 404

    # Signing out ends the session.
    page.click("header .who button")
    page.wait_for_url("**/ui/login")
    page.goto(job_url)
    page.wait_for_url("**/ui/login?next=/ui/jobs/job_*")
