"""HTTP through the real ASGI app on the embedded default (SQLite, SQLAlchemy broker)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from tests.conftest import upload_model_folder, upload_table
from tests.factories import qnli_like_frame

PROBLEM = "application/problem+json"


def assert_problem(response, status: int, field: str | None = None, says: str = "") -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if field is not None:
        assert body["field"] == field, body
    assert says in body["detail"], body
    return body


@pytest.fixture
def teacher(client: TestClient, tiny_teacher_dir: Path) -> dict:
    return upload_model_folder(client, tiny_teacher_dir)


@pytest.fixture
def train_dataset(client: TestClient) -> dict:
    return upload_table(client, qnli_like_frame(40), "train.csv")


def test_dataset_upload_infers_roles(client: TestClient) -> None:
    dataset = upload_table(client, qnli_like_frame(30), "qnli.parquet", name="qnli")
    assert dataset["row_count"] == 30 and dataset["format"] == "parquet"
    assert dataset["text_columns"] == ["question", "sentence"]
    assert dataset["problem_type"] == "binary"
    assert sum(dataset["label_counts"].values()) == 30
    assert client.get(f"/v1/datasets/{dataset['id']}").json() == dataset


def test_checkpoint_upload_registers_and_predicts(
    client: TestClient, tiny_teacher_dir: Path, teacher: dict
) -> None:
    assert teacher["labels"] == ["entailment", "not_entailment"]
    assert teacher["source"] == "upload" and teacher["num_parameters"] > 0
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(tiny_teacher_dir, arcname="checkpoint")
    response = client.post(
        "/v1/models",
        files={"file": ("teacher.tar.gz", buffer.getvalue())},
        data={"text_columns": "question,sentence", "labels": "entailment,not_entailment"},
    )
    assert response.status_code == 201, response.text
    rows = qnli_like_frame(3)[["question", "sentence"]].to_dict(orient="records")
    predicted = client.post(f"/v1/models/{teacher['id']}/predict", json={"rows": rows})
    assert predicted.status_code == 200, predicted.text
    assert len(predicted.json()["predictions"]) == 3
    assert predicted.json()["probabilities"] is None


def test_job_is_queued_with_its_inputs(
    client: TestClient, train_dataset: dict, teacher: dict, tiny_student_dir: Path
) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "kind": "distill",
            "train_dataset": train_dataset["id"],
            "teacher_model": teacher["id"],
            "hyperparameters": {"model.hf_text.checkpoint_name": str(tiny_student_dir)},
        },
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["attempt"] == 0
    assert job["label"] == "label" and job["text_columns"] == ["question", "sentence"]
    assert client.get(f"/v1/jobs/{job['id']}").json()["id"] == job["id"]


def test_unknown_ids_are_404(client: TestClient, train_dataset: dict) -> None:
    assert_problem(client.get("/v1/datasets/ds_missing"), 404, says="ds_missing")
    assert_problem(client.get("/v1/models/mdl_missing"), 404)
    assert_problem(client.get("/v1/jobs/job_missing"), 404)
    assert_problem(client.post("/v1/models/mdl_missing/predict", json={"rows": [{"a": "b"}]}), 404)
    assert_problem(
        client.post("/v1/jobs", json={"kind": "finetune", "train_dataset": "ds_x"}),
        404,
        field="train_dataset",
    )
    assert_problem(
        client.post(
            "/v1/jobs",
            json={
                "kind": "distill",
                "train_dataset": train_dataset["id"],
                "teacher_model": "mdl_gone",
            },
        ),
        404,
        field="teacher_model",
    )


def test_missing_label_column(client: TestClient) -> None:
    content = qnli_like_frame(10).to_csv(index=False).encode()
    response = client.post(
        "/v1/datasets", files={"file": ("t.csv", content)}, data={"label": "lable"}
    )
    assert_problem(response, 422, field="label", says="columns are: question, sentence, label")


def test_job_label_not_in_dataset(client: TestClient, train_dataset: dict) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "kind": "finetune",
            "train_dataset": train_dataset["id"],
            "label": "answer",
        },
    )
    assert_problem(response, 422, field="label", says="answer")


def test_teacher_with_other_labels_is_refused(client: TestClient, teacher: dict) -> None:
    frame = qnli_like_frame(30)
    frame["label"] = ["yes", "no", "maybe"] * 10
    dataset = upload_table(client, frame, "three.csv")
    response = client.post(
        "/v1/jobs",
        json={
            "kind": "distill",
            "train_dataset": dataset["id"],
            "teacher_model": teacher["id"],
        },
    )
    assert_problem(response, 422, field="teacher_model", says="differ")


def test_unknown_hyperparameter(client: TestClient, train_dataset: dict) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "kind": "finetune",
            "train_dataset": train_dataset["id"],
            "hyperparameters": {"optimization.max_epoch": 2},
        },
    )
    body = assert_problem(response, 422, field="hyperparameters.optimization.max_epoch")
    assert "optimization.max_epochs" in body["detail"]


@pytest.mark.parametrize(
    ("hyperparameters", "field"),
    [
        ({"optimization.max_epochs": -1}, "hyperparameters.optimization.max_epochs"),
        (
            {"model.hf_text.checkpoint_name": "bert-base-uncased"},
            "hyperparameters.model.hf_text.checkpoint_name",
        ),
        ({"distiller.temperature": 2.0}, "hyperparameters.distiller.temperature"),
        # Wider than the checkpoint's feed-forward layers: known only once its config is read.
        (
            {"model.hf_text.intermediate_size": 100_000},
            "hyperparameters.model.hf_text.intermediate_size",
        ),
    ],
)
def test_bad_hyperparameter_values(
    client: TestClient, train_dataset: dict, hyperparameters: dict, field: str
) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "kind": "finetune",
            "train_dataset": train_dataset["id"],
            "hyperparameters": hyperparameters,
        },
    )
    assert_problem(response, 422, field=field)


def test_request_validation_is_problem_json(client: TestClient) -> None:
    body = assert_problem(
        client.post("/v1/jobs", json={"train_dataset": "ds_x"}), 422, field="kind"
    )
    assert body["errors"][0]["field"] == "kind"


def test_unsupported_file_type_is_415(client: TestClient) -> None:
    response = client.post("/v1/datasets", files={"file": ("data.xlsx", b"PK\x03\x04junk")})
    assert_problem(response, 415, field="file", says=".xlsx")


def test_predict_names_missing_text_columns(client: TestClient, teacher: dict) -> None:
    response = client.post(
        f"/v1/models/{teacher['id']}/predict", json={"rows": [{"question": "what is the river ?"}]}
    )
    assert_problem(response, 422, field="text_columns", says="sentence")


def zip_with(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("members", "says"),
    [
        ({"../escape.txt": b"x", "config.json": b"{}"}, "leaves the archive"),
        ({"config.json": b"{}", "pytorch_model.bin": b"pickle"}, "convert them to safetensors"),
        ({"readme.txt": b"hello"}, "no config.json"),
    ],
)
def test_bad_checkpoint_archives(client: TestClient, members: dict, says: str) -> None:
    response = client.post(
        "/v1/models",
        files={"file": ("m.zip", zip_with(members))},
        data={"text_columns": "question,sentence"},
    )
    assert_problem(response, 422, says=says)


def test_evaluate_scores_a_dataset(client: TestClient, teacher: dict, train_dataset: dict) -> None:
    response = client.post(
        f"/v1/models/{teacher['id']}/evaluate", json={"dataset": train_dataset["id"]}
    )
    assert response.status_code == 200, response.text
    metrics = response.json()["metrics"]
    assert 0.0 <= metrics["accuracy"] <= 1.0 and "f1" in metrics and "roc_auc" in metrics


def test_healthz_names_the_embedded_default(client: TestClient) -> None:
    health = client.get("/healthz").json()
    assert health == {
        "status": "ok",
        "version": health["version"],
        "database": "sqlite",
        "broker": "sqla+sqlite",
        "auth": "off",
    }


def test_tables_from_other_tools_keep_their_labels(client: TestClient) -> None:
    frame = pd.DataFrame({"text": ["a fairly long sentence"] * 6, "label": [0, 1] * 3})
    dataset = upload_table(client, frame, "ints.jsonl")
    assert dataset["label_counts"] == {"0": 3, "1": 3}
