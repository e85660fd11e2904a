"""The web console in a real browser, against a live uvicorn and a real Celery worker on
PostgreSQL and Redis: upload through the form, fine-tune a teacher, distill a student and watch
its curves grow across polls and its status reach `succeeded` without a reload, open its report
with both controls, and predict one row in the playground. Bad input through the forms shows the
server's own message next to the field, and creates nothing."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest
from playwright.sync_api import Page, expect

from domain.config import Settings
from tests.browser.conftest import Console
from tests.conftest import start_api_and_worker, wait_for_job
from tests.factories import qnli_like_frame

pytestmark = pytest.mark.integration

# Short runs on tiny models: the point is the console, not the models.
TEACHER_HYPERPARAMETERS = """optimization.max_epochs=12
optimization.learning_rate=3e-3
env.batch_size=16"""
# Small batches, frequent validation, no early stop and enough epochs (768 steps, a point every
# 10) that training outlasts several of the page's polls (0.3 s apart while it runs) even on a
# quiet machine, where 320 steps once all landed between two 0.75 s polls: the curves must be
# seen growing.
STUDENT_HYPERPARAMETERS = """optimization.max_epochs=24
optimization.patience=1000
optimization.learning_rate=3e-3
optimization.val_check_interval=0.25
env.batch_size=4
distiller.augmentation_pair_copies=0
distiller.transfer_from_teacher_data=false"""


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def upload(page: Page, base_url: str, filename: str, content: bytes, **fields: str) -> None:
    page.goto(f"{base_url}/ui/datasets")
    file = {"name": filename, "mimeType": "text/csv", "buffer": content}
    page.set_input_files("#file", files=[file])
    for name, value in fields.items():
        page.fill(f"#{name}", value)
    page.click("#upload-form button[type=submit]")


def field_error(page: Page, field: str) -> str:
    locator = page.locator(f'.field-error[data-field="{field}"]')
    expect(locator).to_be_visible()
    return locator.inner_text()


def submit_job(
    page: Page,
    base_url: str,
    kind: str,
    *,
    train: str,
    tuning: str,
    hyperparameters: str,
    teacher: str | None = None,
    shoot: Console | None = None,
) -> None:
    page.goto(f"{base_url}/ui/jobs/new?kind={kind}")
    page.check(f'input[name=kind][value="{kind}"]')
    if teacher is not None:
        page.select_option("#teacher_model", teacher)
    page.select_option("#train_dataset", train)
    page.select_option("#tuning_dataset", tuning)
    page.fill("#hyperparameters", hyperparameters)
    if shoot is not None:
        shoot.shoot(f"05-{kind}-form")
    page.click("#job-form button[type=submit]")


def wait_for_status(page: Page, status: str, timeout_s: float = 240) -> None:
    expect(page.locator("#job-status")).to_have_text(status, timeout=timeout_s * 1000)


def job_id_of(page: Page) -> str:
    page.wait_for_url("**/ui/jobs/job_*")
    return page.url.rsplit("/", 1)[1]


def test_console_workflow(
    postgres_redis_settings: Settings,
    start_worker,
    live_server,
    console_factory,
    tiny_teacher_dir: Path,
    tiny_student_dir: Path,
) -> None:
    base_url = start_api_and_worker(postgres_redis_settings, start_worker, live_server)
    api = httpx.Client(base_url=base_url, timeout=30)
    console: Console = console_factory()
    page = console.page

    # The front page links to the console and the API docs; the docs link back.
    page.goto(f"{base_url}/")
    console.shoot("01-front")
    page.click("text=Web console")
    page.wait_for_url("**/ui/jobs")
    expect(page.locator(".empty")).to_contain_text("No jobs")
    assert "[/ui](/ui)" in api.get("/openapi.json").json()["info"]["description"]

    # Bad input through the upload form: the server's message next to the field, nothing made.
    train, tuning = qnli_like_frame(128, seed=1), qnli_like_frame(32, seed=2)
    upload(page, base_url, "train.csv", csv_bytes(train), label="lable")
    assert "label column 'lable' not found" in field_error(page, "label")
    expect(page.locator("#label")).to_have_value("lable")
    upload(page, base_url, "notes.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "not a table" in field_error(page, "file")
    console.shoot("02-datasets-refused")
    assert api.get("/v1/datasets").json()["data"] == []

    # A good upload opens the dataset: columns with roles, label distribution, first rows.
    upload(page, base_url, "train.csv", csv_bytes(train), name="qnli train")
    page.wait_for_url("**/ui/datasets/ds_*")
    train_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("h1")).to_contain_text("qnli train")
    expect(page.locator("#columns")).to_contain_text("question")
    expect(page.locator("#columns tr", has_text="label")).to_contain_text("label")
    expect(page.locator("#label-distribution tr")).to_have_count(2)
    expect(page.locator("#preview tbody tr")).to_have_count(5)
    console.shoot("03-dataset")
    upload(page, base_url, "tuning.csv", csv_bytes(tuning), name="qnli tuning")
    page.wait_for_url("**/ui/datasets/ds_*")
    tuning_id = page.url.rsplit("/", 1)[1]
    page.goto(f"{base_url}/ui/datasets")
    expect(page.locator("#datasets tbody tr")).to_have_count(2)
    console.shoot("04-datasets")

    # A bad hyperparameter: the API's refusal next to the box, no job made.
    submit_job(
        page,
        base_url,
        "finetune",
        train=train_id,
        tuning=tuning_id,
        hyperparameters="optimization.max_epoch=2",
    )
    assert "did you mean 'optimization.max_epochs'" in field_error(page, "hyperparameters")
    expect(page.locator("#hyperparameters")).to_have_value("optimization.max_epoch=2")
    console.shoot("05-job-form-refused")
    assert api.get("/v1/jobs").json()["data"] == []

    # Fine-tune the teacher through the form; its page follows it to the end.
    submit_job(
        page,
        base_url,
        "finetune",
        train=train_id,
        tuning=tuning_id,
        hyperparameters=f"model.hf_text.checkpoint_name={tiny_teacher_dir}\n"
        + TEACHER_HYPERPARAMETERS,
    )
    teacher_job = job_id_of(page)
    wait_for_status(page, "succeeded")
    teacher_model = page.locator("#model-link").inner_text()

    # Distill a student from it.
    submit_job(
        page,
        base_url,
        "distill",
        teacher=teacher_model,
        train=train_id,
        tuning=tuning_id,
        hyperparameters=f"model.hf_text.checkpoint_name={tiny_student_dir}\n"
        + STUDENT_HYPERPARAMETERS,
        shoot=console,
    )
    distill_job = job_id_of(page)
    # The init-only control (the student's own start, labels alone) queues behind it.
    control = api.post(
        "/v1/jobs",
        json={
            "kind": "finetune",
            "train_dataset": train_id,
            "tuning_dataset": tuning_id,
            "hyperparameters": {
                "model.hf_text.checkpoint_name": str(tiny_student_dir),
                "optimization.max_epochs": 2,
            },
        },
    )
    assert control.status_code == 202, control.text
    # Marks this document: if the page reloaded, the mark would be gone.
    page.evaluate("window.sameDocument = true")
    expect(page.locator("#chart-train")).not_to_have_attribute("data-points", "0", timeout=240_000)
    console.shoot("06-distill-running")
    wait_for_status(page, "succeeded")
    assert page.evaluate("window.sameDocument") is True
    history = page.evaluate("window.distilleryLive.history")
    # Kept beside the screenshots: what each poll saw, for when this check fails somewhere.
    (console.screenshots / "07-distill-polls.json").write_text(json.dumps(history))
    train_points = [entry["train"] for entry in history]
    assert train_points == sorted(train_points), train_points
    # Grown on the open page, without a reload: seen part-drawn, then with more points, while
    # the job was still running.
    while_running = {entry["train"] for entry in history if entry["status"] == "running"}
    assert len(while_running - {0}) >= 2, history
    assert history[-1]["validation"] > 0
    expect(page.locator("#events")).to_contain_text("succeeded")
    expect(page.locator("#cancel-form")).to_be_hidden()
    console.shoot("07-distill-succeeded")
    student_model = page.locator("#model-link").inner_text()

    # The report: figures and numbers, with both controls ticked.
    assert wait_for_job(api, control.json()["id"])["status"] == "succeeded"
    page.click("#report-link")
    page.wait_for_url(f"**/ui/jobs/{distill_job}/report")
    page.check(f'input[name=baseline_job][value="{teacher_job}"]')
    page.check(f'input[name=baseline_job][value="{control.json()["id"]}"]')
    page.click("#controls-form button[type=submit]")
    report = page.frame_locator("#report-frame")
    expect(report.locator("h1")).to_contain_text("distill")
    expect(report.locator("table").first).to_contain_text("init-only")
    expect(report.locator("table").first).to_contain_text("no-distill")
    expect(report.locator("img")).to_have_count(2)
    console.shoot("08-report")

    # The student's page: lineage, its int8 variant's measured drop, and the playground.
    page.goto(f"{base_url}/ui/models/{student_model}")
    expect(page.locator("#lineage")).to_contain_text(teacher_model)
    expect(page.locator("#variants")).to_contain_text("int8")
    row = train.iloc[0]
    page.fill('textarea[data-column="question"]', str(row["question"]))
    page.fill('textarea[data-column="sentence"]', str(row["sentence"]))
    page.click("#predict-form button[type=submit]")
    expect(page.locator("#probabilities tr")).to_have_count(2)
    predicted = page.locator("#prediction .predicted").inner_text()
    assert predicted in {"entailment", "not_entailment"}
    console.shoot("09-model-playground")
    # The download link serves the bundle to the browser's session.
    href = page.locator("a", has_text="Download bundle").get_attribute("href")
    bundle = page.request.get(f"{base_url}{href}")
    assert bundle.ok and bundle.headers["content-type"] == "application/gzip"
    assert bundle.body()[:2] == b"\x1f\x8b"
    page.goto(f"{base_url}/ui/models")
    expect(page.locator("#models tbody tr")).to_have_count(3)
    console.shoot("10-models")

    # The jobs list, filtered by status and kind.
    page.goto(f"{base_url}/ui/jobs")
    page.select_option("#filter-kind", "distill")
    page.select_option("#filter-status", "succeeded")
    page.click("#job-filters button")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(page.locator(f'#jobs tr[data-job="{distill_job}"]')).to_be_visible()
    page.goto(f"{base_url}/ui/jobs")
    expect(page.locator("#jobs tbody tr")).to_have_count(3)
    console.shoot("11-jobs")
