"""An auto-distill search in the console, in a real browser against a live uvicorn and a real
Celery worker on PostgreSQL and Redis: submitted through the job form, its page fills in the
leaderboard without a reload as the trials run and end, stars the chosen student, marks the
no-distill control and the teacher, and shows the accuracy-latency frontier served behind the
console's session; a trial's page links back to its search; the jobs list filters searches and
lists a search's trials."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from domain.config import Settings
from tests.browser.conftest import Console
from tests.conftest import start_api_and_worker, upload_search_inputs

pytestmark = pytest.mark.integration

# One student and its no-distill control, each a few short epochs: the point is the page.
SEARCH_HYPERPARAMETERS = """optimization.max_epochs=3
optimization.learning_rate=1e-3
distiller.augmentation_pair_copies=0"""


def test_search_page(
    postgres_redis_settings: Settings,
    start_worker,
    live_server,
    console_factory,
    tmp_path: Path,
) -> None:
    base_url = start_api_and_worker(postgres_redis_settings, start_worker, live_server)
    api = httpx.Client(base_url=base_url, timeout=30)
    train, tuning, teacher = upload_search_inputs(api, tmp_path, 160)

    # Submitted through the console's form: one student (a cut of the teacher) and its
    # labels-only control; a latency budget far above what tiny students take (a tenth of a
    # millisecond), yet near enough for the frontier's log axis to stay readable.
    console: Console = console_factory()
    page = console.page
    page.goto(f"{base_url}/ui/jobs")
    page.click("text=New auto-distill search")
    page.wait_for_url("**/ui/jobs/new?kind=auto_distill")
    expect(page.locator("#auto-settings")).to_be_visible()
    page.select_option("#teacher_model", teacher)
    page.select_option("#train_dataset", train)
    page.select_option("#tuning_dataset", tuning)
    page.fill("#hyperparameters", SEARCH_HYPERPARAMETERS)
    page.select_option("#auto-presets", "fast_inference")
    page.fill("#auto-max_latency_ms_per_row", "5")
    page.fill("#auto-max_trials", "1")
    page.uncheck("#auto-packaged_students")
    expect(page.locator("#auto-no_distill")).to_be_checked()
    console.shoot("29-search-form")
    page.click("#job-form button[type=submit]")
    page.wait_for_url("**/ui/jobs/job_*")
    search = page.url.rsplit("/", 1)[1]
    expect(page.locator("h1")).to_contain_text("Auto-distill search")
    page.evaluate("window.sameDocument = true")

    # Planned: the trials appear in the leaderboard while the search runs, before they end.
    rows = page.locator("#leaderboard tbody tr")
    expect(rows.first).to_be_visible(timeout=180_000)
    first_statuses = rows.locator("td.trial-status .badge").all_inner_texts()
    assert set(first_statuses) - {"succeeded"}, first_statuses
    expect(page.locator("#job-status")).to_have_text("running")
    console.shoot("30-search-running")

    expect(page.locator("#job-status")).to_have_text("succeeded", timeout=300_000)
    assert page.evaluate("window.sameDocument") is True
    live = page.evaluate("window.distilleryLive")
    assert live["leaderboardRefreshes"] >= 2, live
    # Two trials (the student and its labels-only control), each with its int8 variant.
    expect(page.locator("#leaderboard tbody tr[data-variant=float]")).to_have_count(2)
    statuses = rows.locator("td.trial-status .badge").all_inner_texts()
    assert set(statuses) == {"succeeded"}, statuses
    chosen = page.locator("#leaderboard tr.chosen")
    expect(chosen).to_have_count(1)
    expect(chosen).to_contain_text("★ chosen")
    expect(page.locator("#leaderboard tr.control").first).to_contain_text("control")
    expect(page.locator("#leaderboard tfoot tr.reference")).to_contain_text("teacher")
    model = page.locator("#model-link").inner_text()
    expect(page.locator("#search-chosen")).to_contain_text(model)
    # The frontier is drawn, from the console's own URL (the page holds no API key).
    frontier = page.locator("#frontier")
    expect(frontier).to_have_attribute(
        "src", re.compile(rf"^/ui/jobs/{search}/frontier\.png\?v=\w+$")
    )
    page.wait_for_function(
        "() => { const i = document.getElementById('frontier'); return i && i.complete"
        " && i.naturalWidth > 0; }"
    )
    page.click("#candidates summary")
    console.shoot("31-search-succeeded")

    # The chosen trial's page says whose trial it is, and leads back.
    chosen.locator("td.trial-name a").first.click()
    page.wait_for_url("**/ui/jobs/job_*")
    trial = page.url.rsplit("/", 1)[1]
    assert trial != search
    expect(page.locator("#trial-of")).to_contain_text(search)
    expect(page.locator("h1")).to_contain_text("Distillation")
    console.shoot("32-search-trial")
    page.click(f'#trial-of a[href="/ui/jobs/{search}"]')
    page.wait_for_url(f"**/ui/jobs/{search}")

    # The jobs list: searches by kind, each with its trial count, which lists its trials.
    page.goto(f"{base_url}/ui/jobs")
    page.select_option("#filter-kind", "auto_distill")
    page.click("#job-filters button")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    expect(page.locator(f'#jobs tr[data-job="{search}"]')).to_contain_text("2 trials")
    console.shoot("33-jobs-searches")
    page.click(f'#jobs tr[data-job="{search}"] a:has-text("2 trials")')
    page.wait_for_url(f"**/ui/jobs?parent_job={search}")
    expect(page.locator("#jobs tbody tr")).to_have_count(2)
    expect(page.locator(f'#jobs tr[data-job="{trial}"]')).to_contain_text(f"trial of {search}")
    console.shoot("34-search-trials")
