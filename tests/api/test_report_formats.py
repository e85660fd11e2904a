"""GET /v1/jobs/{id}/report as JSON, PNG or HTML, chosen by Accept, on a real distill job.

One tiny distill job and two controls (init-only: the student's own starting weights on the
labels alone; no-distill: another start) are trained once for the module by a real Celery
worker on the embedded default; every test then asks the ASGI app for its report.
"""

from __future__ import annotations

import base64
import io
import re
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from matplotlib.image import imread

from app.main import create_app
from domain.config import Settings
from tests.conftest import WorkerProcess, migrate, upload_table, wait_for_job, zip_folder
from tests.factories import qnli_like_frame, save_tiny_bert

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE_NAME = '<img src=x onerror="alert(1)"> teacher'
QUICK = {"optimization.learning_rate": 3e-3, "optimization.max_epochs": 2, "env.batch_size": 16}


class ReportJobs:
    def __init__(
        self, client: TestClient, distill: dict, controls: list[dict], teacher: dict
    ) -> None:
        self.client, self.distill, self.controls, self.teacher = client, distill, controls, teacher
        self.baseline = controls[0]
        self.control_ids = [control["id"] for control in controls]

    def get(self, accept: str | None = None, **params: str | list[str]):
        headers = {"Accept": accept} if accept is not None else {}
        return self.client.get(
            f"/v1/jobs/{self.distill['id']}/report", headers=headers, params=params
        )


@pytest.fixture(scope="module")
def report_jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReportJobs]:
    root = tmp_path_factory.mktemp("report")
    settings = Settings(home=root / "home", task_queue=f"test-{uuid.uuid4().hex[:8]}")
    settings.ensure_local_dirs()
    migrate(settings.resolved_database_url())
    teacher_dir = save_tiny_bert(root / "teacher", layers=2, hidden=32)
    student_dir = save_tiny_bert(root / "student", layers=1, hidden=16)
    worker = WorkerProcess(settings, root / "worker.log")
    try:
        worker.wait_ready()
        with TestClient(create_app(settings)) as client:
            # An uploaded teacher, so a user-chosen (hostile) name reaches the report.
            teacher = client.post(
                "/v1/models",
                files={"file": ("teacher.zip", zip_folder(teacher_dir))},
                data={
                    "text_columns": "question,sentence",
                    "labels": "entailment,not_entailment",
                    "name": HOSTILE_NAME,
                },
            )
            assert teacher.status_code == 201, teacher.text
            train = upload_table(client, qnli_like_frame(64, seed=1), "train.csv")
            tuning = upload_table(client, qnli_like_frame(24, seed=2), "tuning.csv")
            common = {"train_dataset": train["id"], "tuning_dataset": tuning["id"]}
            student = {"model.hf_text.checkpoint_name": str(student_dir), **QUICK}
            distill = client.post(
                "/v1/jobs",
                json={
                    **common,
                    "kind": "distill",
                    "teacher_model": teacher.json()["id"],
                    "hyperparameters": student,
                },
            )
            init_only = client.post(
                "/v1/jobs", json={**common, "kind": "finetune", "hyperparameters": student}
            )
            other_start = {
                **student,
                "model.hf_text.checkpoint_name": teacher.json()["id"],
                "model.hf_text.layers": [0],
            }
            no_distill = client.post(
                "/v1/jobs", json={**common, "kind": "finetune", "hyperparameters": other_start}
            )
            submitted = (distill, init_only, no_distill)
            assert [r.status_code for r in submitted] == [202] * 3, [r.text for r in submitted]
            jobs = [wait_for_job(client, r.json()["id"]) for r in submitted]
            assert [job["status"] for job in jobs] == ["succeeded"] * 3, jobs
            yield ReportJobs(client, jobs[0], jobs[1:], teacher.json())
    finally:
        worker.stop()


def decoded_png(content: bytes) -> np.ndarray:
    assert content.startswith(PNG_MAGIC)
    return imread(io.BytesIO(content), format="png")


def test_json_is_the_default_and_names_every_side(report_jobs: ReportJobs) -> None:
    for accept in (None, "application/json", "*/*", "text/html;q=0.2, application/*"):
        response = report_jobs.get(accept, baseline_job=report_jobs.control_ids)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "application/json"
        assert "Accept" in response.headers["vary"]
    report = response.json()
    assert report["job"] == report_jobs.distill["id"] and report["rows"] == 24
    assert report["names"]["teacher"] == HOSTILE_NAME
    init_only, no_distill = report["baselines"]
    assert [init_only["job"], no_distill["job"]] == report_jobs.control_ids
    # Named by where each starts: the distilled student's own start, or another one.
    assert [init_only["control"], no_distill["control"]] == ["init-only", "no-distill"]
    assert init_only["parameters"] == report["student"]["parameters"]
    assert no_distill["parameters"] != report["student"]["parameters"]
    for control in (init_only, no_distill):
        assert control["size_bytes"] > 0 and 0.0 <= control["f1"] <= 1.0
        gain = 100 * (report["student"]["accuracy"] - control["accuracy"])
        assert control["gain_points"] == pytest.approx(gain)
        assert "distillation_ratio" in control
    # A control named twice counts once; none named, the report has no controls.
    twice = report_jobs.get(baseline_job=[report_jobs.control_ids[0]] * 2).json()
    assert [b["job"] for b in twice["baselines"]] == report_jobs.control_ids[:1]
    assert report_jobs.get().json()["baselines"] == []


def test_png_figures_by_query(report_jobs: ReportJobs) -> None:
    shapes = {}
    for figure in ("curves", "bars", "overview"):
        response = report_jobs.get(
            "image/png", figure=figure, baseline_job=report_jobs.control_ids
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        pixels = decoded_png(response.content)
        assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50
        shapes[figure] = pixels.shape[:2]
    # The overview stacks the curves above the bars.
    assert shapes["overview"][0] > max(shapes["curves"][0], shapes["bars"][0])
    default = report_jobs.get("image/*")
    assert default.headers["content-type"] == "image/png"
    assert decoded_png(default.content).shape[:2] == shapes["overview"]


def test_html_page_embeds_both_figures_and_escapes_names(report_jobs: ReportJobs) -> None:
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
    response = report_jobs.get(browser, baseline_job=report_jobs.control_ids)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in images)
    assert HOSTILE_NAME not in page and "onerror=&quot;alert(1)&quot;" in page
    assert report_jobs.distill["id"] in page
    assert "<th>init-only<br>" in page and "<th>no-distill<br>" in page
    assert "gain over control (points)" in page


def test_unacceptable_media_type_is_a_406_problem(report_jobs: ReportJobs) -> None:
    for accept in ("text/csv", "application/pdf, image/jpeg", "image/png;q=0"):
        response = report_jobs.get(accept)
        assert response.status_code == 406, (accept, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["field"] == "Accept"
        assert "image/png" in problem["detail"] and "text/html" in problem["detail"]


def test_bad_figure_and_jobs_without_a_report_keep_their_problems(
    report_jobs: ReportJobs,
) -> None:
    bad = report_jobs.get("image/png", figure="pie")
    assert bad.status_code == 422 and bad.json()["field"] == "figure"
    # The baseline is a fine-tune job: no report in any format.
    for accept in ("application/json", "image/png", "text/html"):
        response = report_jobs.client.get(
            f"/v1/jobs/{report_jobs.baseline['id']}/report", headers={"Accept": accept}
        )
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"


def test_openapi_documents_the_report_media_types(report_jobs: ReportJobs) -> None:
    operation = report_jobs.client.get("/openapi.json").json()["paths"]["/v1/jobs/{job_id}/report"][
        "get"
    ]
    assert set(operation["responses"]["200"]["content"]) == {
        "application/json",
        "image/png",
        "text/html",
    }
    assert "406" in operation["responses"]
    assert {p["name"] for p in operation["parameters"]} >= {"baseline_job", "figure"}
