"""The job plan at POST /v1/jobs: every check a job's training would make is made before it is
queued (a 422 naming the field), and the plan that passed is what the row stores."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from domain.orm import Job
from tests.api.test_api import assert_problem, teacher, train_dataset
from tests.factories import qnli_like_frame

__all__ = ["teacher", "train_dataset"]  # fixtures shared with test_api


def jobs_in_database(client: TestClient) -> list[Job]:
    with client.app.state.session_factory() as session:  # type: ignore[attr-defined]
        return list(session.query(Job))


def submit(client: TestClient, **body: object) -> object:
    return client.post("/v1/jobs", json=body)


def finetune(client: TestClient, train: dict, student_dir: Path, hyperparameters: dict) -> object:
    return submit(
        client,
        kind="finetune",
        train_dataset=train["id"],
        hyperparameters={"model.hf_text.checkpoint_name": str(student_dir), **hyperparameters},
    )


def test_a_validation_metric_of_another_problem_type_is_a_422_and_nothing_is_queued(
    client: TestClient, train_dataset: dict, tiny_student_dir: Path
) -> None:
    response = finetune(
        client, train_dataset, tiny_student_dir, {"optimization.validation_metric": "rmse"}
    )
    body = assert_problem(
        response, 422, field="hyperparameters.optimization.validation_metric", says="binary"
    )
    assert "accuracy" in body["detail"]
    assert jobs_in_database(client) == []


def test_a_batch_size_below_the_default_per_gpu_batch_size_is_accepted(
    client: TestClient, train_dataset: dict, tiny_student_dir: Path
) -> None:
    response = finetune(client, train_dataset, tiny_student_dir, {"env.batch_size": 8})
    assert response.status_code == 202, response.text
    (job,) = jobs_in_database(client)
    # The stored plan is what the worker runs: 8 rows per step, on one device, no accumulation.
    assert job.plan is not None
    assert job.plan["config"]["batch_size"] == 8
    assert job.plan["config"]["per_device_batch_size"] == 8
    assert job.plan["problem_type"] == "binary"
    assert job.plan["labels"] == ["entailment", "not_entailment"]


def test_an_explicit_per_gpu_batch_size_larger_than_the_batch_is_still_refused(
    client: TestClient, train_dataset: dict
) -> None:
    response = submit(
        client,
        kind="finetune",
        train_dataset=train_dataset["id"],
        hyperparameters={"env.batch_size": 8, "env.per_gpu_batch_size": 16},
    )
    assert_problem(response, 422, field="hyperparameters.env.per_gpu_batch_size")


def test_teacher_data_from_an_uploaded_teacher_is_a_422(
    client: TestClient, train_dataset: dict, teacher: dict, tiny_student_dir: Path
) -> None:
    response = submit(
        client,
        kind="distill",
        train_dataset=train_dataset["id"],
        teacher_model=teacher["id"],
        hyperparameters={
            "model.hf_text.checkpoint_name": str(tiny_student_dir),
            "distiller.transfer_from_teacher_data": True,
        },
    )
    assert_problem(
        response,
        422,
        field="hyperparameters.distiller.transfer_from_teacher_data",
        says="not trained by this service",
    )
    assert jobs_in_database(client) == []


@pytest.mark.parametrize(
    "hyperparameters",
    [
        {"distiller.transfer_from_teacher_data": True},
        {"distiller.augmentation_pair_copies": 1},
        {"distiller.augmentation_copies": 1},
    ],
)
def test_teacher_only_settings_are_refused_on_finetune_jobs(
    client: TestClient, train_dataset: dict, hyperparameters: dict
) -> None:
    (key,) = hyperparameters
    response = submit(
        client, kind="finetune", train_dataset=train_dataset["id"], hyperparameters=hyperparameters
    )
    assert_problem(response, 422, field=f"hyperparameters.{key}", says="distill jobs only")


def test_a_teacher_that_does_not_fit_is_refused_before_anything_is_queued(
    client: TestClient, teacher: dict, tiny_student_dir: Path
) -> None:
    # The teacher reads question and sentence; this table has only one text column.
    frame = qnli_like_frame(30).drop(columns=["sentence"])
    dataset = client.post(
        "/v1/datasets", files={"file": ("one-column.csv", frame.to_csv(index=False).encode())}
    ).json()
    response = submit(
        client,
        kind="distill",
        train_dataset=dataset["id"],
        teacher_model=teacher["id"],
        hyperparameters={"model.hf_text.checkpoint_name": str(tiny_student_dir)},
    )
    assert_problem(response, 422, field="teacher_model", says="sentence")
    assert jobs_in_database(client) == []
