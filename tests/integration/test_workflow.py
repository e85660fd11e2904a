"""The whole distillation workflow over HTTP, with a real Celery worker process.

Run on both deployments: PostgreSQL + Redis, and the embedded default (SQLite + kombu's
SQLAlchemy broker on SQLite). A tiny teacher is fine-tuned in the service, a smaller student is
distilled from it and also fine-tuned without it, then all three are evaluated and the student
serves predictions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import Settings
from tests.conftest import upload_table, wait_for_job

pytestmark = pytest.mark.integration

FAST = {
    "optimization.learning_rate": 3e-3,
    "optimization.max_epochs": 12,
    "env.batch_size": 16,
}


def run_workflow(
    settings: Settings, start_worker, qnli_tables: dict, teacher_dir: Path, student_dir: Path
) -> None:
    start_worker(settings)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").json()["status"] == "ok"
        train = upload_table(client, qnli_tables["train"], "train.csv")
        tuning = upload_table(client, qnli_tables["tuning"], "tuning.tsv")
        test = upload_table(client, qnli_tables["test"], "test.jsonl")
        assert train["problem_type"] == "binary"
        assert train["text_columns"] == ["question", "sentence"]

        teacher_job = client.post(
            "/v1/jobs",
            json={
                "kind": "finetune",
                "train_dataset": train["id"],
                "tuning_dataset": tuning["id"],
                "label": "label",
                "hyperparameters": {"model.hf_text.checkpoint_name": str(teacher_dir), **FAST},
            },
        )
        assert teacher_job.status_code == 202, teacher_job.text
        assert teacher_job.json()["status"] == "queued"
        teacher_job = wait_for_job(client, teacher_job.json()["id"])
        assert teacher_job["status"] == "succeeded", teacher_job["error"]
        assert teacher_job["attempt"] == 1 and teacher_job["progress"] == 1.0
        teacher_id = teacher_job["model"]

        student_hp = {"model.hf_text.checkpoint_name": str(student_dir), **FAST}
        distill = client.post(
            "/v1/jobs",
            json={
                "kind": "distill",
                "train_dataset": train["id"],
                "tuning_dataset": tuning["id"],
                "teacher_model": teacher_id,
                "hyperparameters": {**student_hp, "distiller.temperature": 2.0},
            },
        )
        nodistill = client.post(
            "/v1/jobs",
            json={
                "kind": "finetune",
                "train_dataset": train["id"],
                "tuning_dataset": tuning["id"],
                "hyperparameters": student_hp,
            },
        )
        assert distill.status_code == 202, distill.text
        assert nodistill.status_code == 202, nodistill.text
        distill_job = wait_for_job(client, distill.json()["id"])
        nodistill_job = wait_for_job(client, nodistill.json()["id"])
        assert distill_job["status"] == "succeeded", distill_job["error"]
        assert nodistill_job["status"] == "succeeded", nodistill_job["error"]
        assert distill_job["metrics"]["info"]["teacher_mode"] == "cached"
        logged = client.get(f"/v1/jobs/{distill_job['id']}/metrics?kind=train").json()["data"]
        assert logged and all("soft_loss" in entry["values"] for entry in logged)

        report = client.get(
            f"/v1/jobs/{distill_job['id']}/report?baseline_job={nodistill_job['id']}"
        ).json()
        assert report["rows"] == 40 and 0.0 <= report["agreement"] <= 1.0
        assert report["student"]["parameters"] < report["teacher"]["parameters"]
        assert report["student"]["cpu_latency"]["batched_ms_per_row"] > 0
        assert "ece" in report["teacher"]
        assert [b["job"] for b in report["baselines"]] == [nodistill_job["id"]]
        # The ratio is None where teacher and control score alike (tiny models may); the points
        # gained are always there.
        control = report["baselines"][0]
        assert "distillation_ratio" in control and control["gain_points"] is not None

        # A transfer set (an unlabelled dataset and the teacher's own training rows), and a
        # student cut from the teacher's own layers.
        unlabeled = upload_table(
            client, qnli_tables["test"].drop(columns=["label"]), "unlabeled.csv"
        )
        cut = client.post(
            "/v1/jobs",
            json={
                "kind": "distill",
                "train_dataset": train["id"],
                "tuning_dataset": tuning["id"],
                "unlabeled_dataset": unlabeled["id"],
                "teacher_model": teacher_id,
                "hyperparameters": {
                    **FAST,
                    "model.hf_text.checkpoint_name": "teacher",
                    "model.hf_text.layers": [1],
                    "optimization.max_epochs": 2,
                    # The teacher was trained here: its training rows join the transfer set.
                    "distiller.transfer_from_teacher_data": True,
                    "distiller.augmentation_pair_copies": 0,
                },
            },
        )
        assert cut.status_code == 202, cut.text
        cut_job = wait_for_job(client, cut.json()["id"])
        assert cut_job["status"] == "succeeded", cut_job["error"]
        info = cut_job["metrics"]["info"]
        assert info["augmented_rows"] == 0, info
        assert info["unlabeled_rows"] == 80 + train["row_count"], info
        assert cut_job["hyperparameters"]["distiller.transfer_from_teacher_data"] is True
        # The teacher's outputs on train and tuning rows were cached by the first distill job.
        assert cut_job["metrics"]["info"]["teacher_outputs"] == ["cache", "computed", "cache"]
        cut_model = client.get(f"/v1/models/{cut_job['model']}").json()
        assert (
            cut_model["num_parameters"]
            < client.get(f"/v1/models/{teacher_id}").json()["num_parameters"]
        )

        student = client.get(f"/v1/models/{distill_job['model']}").json()
        teacher = client.get(f"/v1/models/{teacher_id}").json()
        assert student["lineage"]["teacher_model"] == teacher_id
        assert student["num_parameters"] < teacher["num_parameters"]
        assert student["labels"] == teacher["labels"]

        scores = {}
        for name, model_id in [
            ("teacher", teacher_id),
            ("distilled", distill_job["model"]),
            ("nodistill", nodistill_job["model"]),
        ]:
            response = client.post(f"/v1/models/{model_id}/evaluate", json={"dataset": test["id"]})
            assert response.status_code == 200, response.text
            assert response.json()["row_count"] == 80
            scores[name] = response.json()["metrics"]["accuracy"]
        # The rule behind the tiny data set is learnable: a trained teacher gets it right.
        assert scores["teacher"] >= 0.9, scores

        rows = qnli_tables["test"][["question", "sentence"]].head(5).to_dict(orient="records")
        predicted = client.post(
            f"/v1/models/{distill_job['model']}/predict",
            json={"rows": rows, "return_probabilities": True},
        )
        assert predicted.status_code == 200, predicted.text
        body = predicted.json()
        assert len(body["predictions"]) == 5
        assert set(body["predictions"]) <= {"entailment", "not_entailment"}
        for probabilities, label in zip(body["probabilities"], body["predictions"], strict=True):
            assert abs(sum(probabilities.values()) - 1.0) < 1e-4
            assert max(probabilities, key=probabilities.get) == label


def test_workflow_on_postgres_and_redis(
    postgres_redis_settings: Settings,
    start_worker,
    qnli_tables,
    tiny_teacher_dir,
    tiny_student_dir,
) -> None:
    run_workflow(
        postgres_redis_settings, start_worker, qnli_tables, tiny_teacher_dir, tiny_student_dir
    )


def test_workflow_on_embedded_default(
    sqlite_settings: Settings, start_worker, qnli_tables, tiny_teacher_dir, tiny_student_dir
) -> None:
    assert sqlite_settings.resolved_broker_url().startswith("sqla+sqlite")
    run_workflow(sqlite_settings, start_worker, qnli_tables, tiny_teacher_dir, tiny_student_dir)
