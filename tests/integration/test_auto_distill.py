"""Auto-distill end to end: a search's trials are ordinary jobs that two real worker processes
run at once; a worker SIGKILLed mid-trial costs that trial one attempt, not the search; a
cancelled search takes its trials with it. Real Celery workers, PostgreSQL and Redis."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import Settings
from tests.conftest import upload_search_inputs, wait_for_job
from tests.integration.test_job_lifecycle import LIFECYCLE, events_of, wait_for_event

pytestmark = pytest.mark.integration


def trials_of(client: TestClient, job_id: str) -> list[dict]:
    return client.get(f"/v1/jobs?parent_job={job_id}").json()["data"]


def wait_until(check, what: str, timeout: float = 120, state=None) -> object:  # type: ignore[no-untyped-def]
    """`check()`'s first truthy value; on timeout, the error says `state()` (what was seen)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise TimeoutError(what if state is None else f"{what}; state: {state()}")


def first_claim(client: TestClient, job_id: str) -> datetime:
    claimed = [e for e in events_of(client, job_id) if e["kind"] == "claimed"]
    return datetime.fromisoformat(claimed[0]["at"])


def test_search_runs_trials_in_parallel_survives_sigkill_and_cancels(
    postgres_redis_settings: Settings, start_worker, tmp_path: Path
) -> None:
    settings = postgres_redis_settings.model_copy(
        update={**LIFECYCLE, "checkpoint_every_steps": 15}
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        started = [pool.submit(start_worker, settings, name) for name in ("a", "b")]
        with TestClient(create_app(settings)) as api:
            train, tuning, teacher = upload_search_inputs(api, tmp_path, 320)
            workers = {name: future.result() for name, future in zip("ab", started, strict=True)}
            body = {
                "kind": "auto_distill",
                "train_dataset": train,
                "tuning_dataset": tuning,
                "teacher_model": teacher,
                "hyperparameters": {
                    # Long enough (about 800 steps, several seconds even on a quiet machine:
                    # 160 steps once took 1.6 s, under the polls' reach) that the trials are
                    # seen overlapping and the victim is still training when the kill lands.
                    "optimization.max_epochs": 40,
                    "optimization.patience": 1000,
                    "optimization.learning_rate": 1e-3,
                    "distiller.augmentation_pair_copies": 0,
                },
                "auto": {
                    "presets": "fast_inference",
                    "max_latency_ms_per_row": 10_000,
                    "max_trials": 2,
                    "students": [],
                    "no_distill": False,
                },
            }
            response = api.post("/v1/jobs", json=body)
            assert response.status_code == 202, response.text
            search = response.json()
            assert search["kind"] == "auto_distill" and search["phase"] == "planning"

            # Both trials running at once, on the two workers.
            def both_running() -> list[dict] | None:
                trials = trials_of(api, search["id"])
                running = [t for t in trials if t["status"] == "running"]
                return trials if len(running) == 2 else None

            trials = wait_until(
                both_running,
                "two trials running at once",
                state=lambda: (
                    api.get(f"/v1/jobs/{search['id']}").json(),
                    trials_of(api, search["id"]),
                ),
            )
            assert isinstance(trials, list) and len(trials) == 2
            assert api.get(f"/v1/jobs/{search['id']}").json()["phase"] == "trials"

            # SIGKILL the worker of one trial once it has a checkpoint.
            victim = trials[0]["id"]
            wait_for_event(api, victim, "checkpoint_saved")
            events = events_of(api, victim)
            holder = next(e for e in events if e["kind"] == "claimed")["data"]["worker"]
            name = holder.split("-", 1)[0]
            workers[name].kill()
            start_worker(settings, "c")

            done = wait_for_job(api, search["id"], timeout=240)
            assert done["status"] == "succeeded", done["error"]
            finished = [api.get(f"/v1/jobs/{t['id']}").json() for t in trials]
            assert [t["status"] for t in finished] == ["succeeded", "succeeded"]
            killed = next(t for t in finished if t["id"] == victim)
            kinds = [e["kind"] for e in events_of(api, victim)]
            assert killed["attempt"] == 2 and "retried" in kinds and "resumed" in kinds
            # Observed overlap: each trial was claimed before the other finished.
            first, second = finished
            assert first_claim(api, first["id"]) < datetime.fromisoformat(second["finished_at"])
            assert first_claim(api, second["id"]) < datetime.fromisoformat(first["finished_at"])

            board = api.get(f"/v1/jobs/{search['id']}/leaderboard").json()
            assert board["best"]["model"] == done["model"]
            assert {r["trial"] for r in board["rows"]} == {t["id"] for t in trials}
            assert board["teacher"]["tuning_accuracy"] is not None
            assert board["frontier"] and board["candidates"]
            assert all(r["latency_ms_per_row"] > 0 for r in board["rows"])
            png = api.get(f"/v1/jobs/{search['id']}/leaderboard", headers={"Accept": "image/png"})
            assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

            # A cancelled search takes every trial with it.
            again = api.post("/v1/jobs", json=body).json()
            wait_until(lambda: len(trials_of(api, again["id"])) == 2, "trials queued")
            cancelled = api.post(f"/v1/jobs/{again['id']}/cancel").json()
            assert cancelled["cancel_requested"] is True
            ended = wait_for_job(api, again["id"], timeout=60)
            assert ended["status"] == "cancelled"
            assert all(
                wait_for_job(api, t["id"], timeout=60)["status"] == "cancelled"
                for t in trials_of(api, again["id"])
            )
