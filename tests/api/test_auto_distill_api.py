"""POST /v1/jobs with kind auto_distill: bad budgets and searches are a 422 naming the field;
a good one is queued in phase planning, and its leaderboard is served (JSON and PNG)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.test_api import assert_problem, teacher, train_dataset
from tests.conftest import upload_table
from tests.factories import qnli_like_frame

__all__ = ["teacher", "train_dataset"]  # fixtures shared with test_api


@pytest.fixture
def search(client: TestClient, train_dataset: dict, teacher: dict) -> dict:
    tuning = upload_table(client, qnli_like_frame(20, seed=2), "tuning.csv")
    return {
        "kind": "auto_distill",
        "train_dataset": train_dataset["id"],
        "tuning_dataset": tuning["id"],
        "teacher_model": teacher["id"],
        "auto": {"presets": "fast_inference", "time_limit": 600},
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"auto": {"min_speedup": 0.5}}, "auto.min_speedup"),
        ({"auto": {"max_latency_ms_per_row": -1}}, "auto.max_latency_ms_per_row"),
        ({"auto": {"max_size_mb": 0}}, "auto.max_size_mb"),
        ({"auto": {"time_limit": 0}}, "auto.time_limit"),
        ({"auto": {"max_trials": 0}}, "auto.max_trials"),
        ({"auto": {"presets": "fastest"}}, "auto.presets"),
        ({"auto": {"scheduler": "hyperband"}}, "auto.scheduler"),
        ({"auto": {"students": ["/no/such/folder"]}}, "auto.students.0"),
        ({"tuning_dataset": None}, "tuning_dataset"),
        ({"teacher_model": None}, "teacher_model"),
        (
            {"hyperparameters": {"model.hf_text.checkpoint_name": "teacher"}},
            "hyperparameters.model.hf_text.checkpoint_name",
        ),
        ({"kind": "distill"}, "auto"),
    ],
)
def test_a_bad_search_is_a_422_naming_the_field(
    client: TestClient, search: dict, change: dict, field: str
) -> None:
    response = client.post("/v1/jobs", json={**search, **change})
    assert_problem(response, 422, field=field)


def test_a_search_is_queued_planning_and_has_a_leaderboard(
    client: TestClient, search: dict, train_dataset: dict, tiny_student_dir: Path
) -> None:
    response = client.post("/v1/jobs", json=search)
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["kind"] == "auto_distill" and job["phase"] == "planning"
    board = client.get(f"/v1/jobs/{job['id']}/leaderboard").json()
    assert board["rows"] == [] and board["presets"] == "fast_inference"
    # The preset filled in the budget the request left out.
    assert board["budget"]["min_speedup"] == 3.0 and board["budget"]["latency_mode"] == "batched"
    png = client.get(f"/v1/jobs/{job['id']}/leaderboard", headers={"Accept": "image/png"})
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    listed = client.get("/v1/jobs?kind=auto_distill").json()["data"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert client.get(f"/v1/jobs?parent_job={job['id']}").json()["data"] == []
    # A queued search is cancelled at once.
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"

    other = client.post(
        "/v1/jobs",
        json={
            "kind": "finetune",
            "train_dataset": train_dataset["id"],
            "hyperparameters": {"model.hf_text.checkpoint_name": str(tiny_student_dir)},
        },
    ).json()
    assert_problem(client.get(f"/v1/jobs/{other['id']}/leaderboard"), 422, field="job_id")


def test_client_and_cli_show_a_finished_search(
    client: TestClient, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A search finished in the database (tests/unit/test_auto_lifecycle.py's rows): the
    client's leaderboard() is a DataFrame, `distillery jobs leaderboard` prints its table."""
    import argparse

    from distillery_cli.jobs import jobs_leaderboard
    from distillery_client import Client
    from domain.auto_distill import advance, children
    from tests.unit.test_auto_lifecycle import queue_trials, succeed

    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        search = queue_trials(session)
        first, second = children(session, search.id)
        succeed(session, first, 0.8, 2.0)
        succeed(session, second, 0.85, 20.0)
        assert advance(session, search.id) == "succeeded"
        search_id, first_id = search.id, first.id

    def through_app(request: httpx.Request) -> httpx.Response:
        answer = client.request(
            request.method, str(request.url), headers=request.headers, content=request.content
        )
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    remote = Client("http://testserver", transport=httpx.MockTransport(through_app))
    job = remote.job(search_id)
    assert job.status == "succeeded" and job.model_id == f"mdl_{first_id}"
    board = job.leaderboard()
    # Best first: the 0.85 trial (which misses the 5 ms budget), then the one chosen.
    assert list(board["tuning_accuracy"])[:2] == [0.85, 0.8]
    assert board.iloc[-1]["name"] == "teacher"
    assert bool(board.set_index("name").loc[first_id, "within_budget"]) is True
    assert [t.id for t in job.trials()] != []
    # The report of a search: its leaderboard, the chosen trial's report, the frontier drawn.
    report = client.get(f"/v1/jobs/{search_id}/report").json()
    assert report["best"]["trial"] == first_id and report["chosen_report"]["job"] == first_id
    drawn = client.get(f"/v1/jobs/{search_id}/report", headers={"Accept": "image/png"})
    assert drawn.content.startswith(b"\x89PNG")
    args = argparse.Namespace(job_id=search_id, png=None, json=False)
    assert jobs_leaderboard(remote, args) == 0
    out = capsys.readouterr().out
    assert "TUNING_ACC" in out and f"best within budget: {first_id}" in out
    png = tmp_path / "frontier.png"
    assert jobs_leaderboard(remote, argparse.Namespace(job_id=search_id, png=str(png))) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
