"""Datasets and models as resources: list with cursors, describe, download, delete."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pandas as pd
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import Settings
from tests.conftest import upload_model_folder, upload_table
from tests.factories import qnli_like_frame


def test_dataset_detail_has_schema_and_preview(client: TestClient) -> None:
    frame = qnli_like_frame(12)
    frame["score"] = range(12)
    frame.loc[0, "sentence"] = "long " * 400
    dataset = upload_table(client, frame, "train.csv", name="qnli")
    assert dataset["column_details"] == [
        {"name": "question", "dtype": "large_string", "role": "text"},
        {"name": "sentence", "dtype": "large_string", "role": "text"},
        {"name": "label", "dtype": "large_string", "role": "label"},
        {"name": "score", "dtype": "int64", "role": "other"},
    ]
    assert len(dataset["preview"]) == 5
    assert dataset["preview"][1] == frame.iloc[1].to_dict()
    assert len(dataset["preview"][0]["sentence"]) == 201  # cut, with an ellipsis
    assert client.get(f"/v1/datasets/{dataset['id']}").json() == dataset


def test_delimiter_and_encoding_are_detected_or_given(client: TestClient) -> None:
    frame = qnli_like_frame(10)
    semicolons = frame.to_csv(index=False, sep=";").encode()
    sniffed = client.post("/v1/datasets", files={"file": ("t.csv", semicolons)}).json()
    assert sniffed["columns"] == ["question", "sentence", "label"]
    pipes = frame.to_csv(index=False, sep="|").encode()
    given = client.post("/v1/datasets", files={"file": ("t.txt", pipes)}, data={"delimiter": "|"})
    assert given.status_code == 201 and given.json()["row_count"] == 10
    latin = frame.assign(question="où est le café ?").to_csv(index=False).encode("latin-1")
    decoded = client.post(
        "/v1/datasets", files={"file": ("t.csv", latin)}, data={"encoding": "latin-1"}
    )
    assert decoded.status_code == 201, decoded.text
    assert decoded.json()["preview"][0]["question"] == "où est le café ?"
    utf16 = frame.to_csv(index=False).encode("utf-16")
    wide = client.post(
        "/v1/datasets", files={"file": ("t.csv", utf16)}, data={"encoding": "utf-16"}
    )
    assert wide.status_code == 201, wide.text


def test_jsonl_with_nested_and_mixed_columns_is_stored_as_text(client: TestClient) -> None:
    rows = pd.DataFrame(
        {
            "text": ["a long enough sentence"] * 4,
            "meta": [{"source": "web"}, [1, 2], 3, None],
            "label": ["a", "b", "a", "b"],
        }
    )
    dataset = upload_table(client, rows, "nested.jsonl")
    assert dataset["preview"][0]["meta"] == '{"source": "web"}'
    assert dataset["preview"][2]["meta"] == "3"


def test_lists_page_with_cursors(client: TestClient) -> None:
    created = [upload_table(client, qnli_like_frame(10), f"t{i}.csv")["id"] for i in range(5)]
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/datasets", params=params).json()
        assert len(page["data"]) <= 2
        seen += [d["id"] for d in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(created))


def test_delete_dataset_refused_while_a_job_uses_it(
    client: TestClient, tiny_student_dir: Path
) -> None:
    dataset = upload_table(client, qnli_like_frame(20), "train.csv")
    job = client.post(
        "/v1/jobs",
        json={
            "kind": "finetune",
            "train_dataset": dataset["id"],
            "hyperparameters": {"model.hf_text.checkpoint_name": str(tiny_student_dir)},
        },
    )
    assert job.status_code == 202, job.text
    refused = client.delete(f"/v1/datasets/{dataset['id']}")
    assert refused.status_code == 409
    assert refused.json()["jobs"] == [job.json()["id"]]
    assert job.json()["id"] in refused.json()["detail"]

    unused = upload_table(client, qnli_like_frame(20), "other.csv")
    assert client.delete(f"/v1/datasets/{unused['id']}").status_code == 204
    assert client.get(f"/v1/datasets/{unused['id']}").status_code == 404
    assert client.delete(f"/v1/datasets/{unused['id']}").status_code == 404
    store = client.app.state.store  # type: ignore[attr-defined]
    assert not store.path(f"datasets/{unused['id']}.parquet").exists()


def test_model_download_and_delete(
    client: TestClient, tiny_teacher_dir: Path, tiny_student_dir: Path
) -> None:
    teacher = upload_model_folder(client, tiny_teacher_dir)
    listed = client.get("/v1/models").json()
    assert [m["id"] for m in listed["data"]] == [teacher["id"]]

    download = client.get(f"/v1/models/{teacher['id']}/download")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(download.content), mode="r:gz") as archive:
        names = set(archive.getnames())
    assert {f"{teacher['id']}/config.json", f"{teacher['id']}/distillery.json"} <= names
    assert f"{teacher['id']}/model.safetensors" in names

    # Used as a teacher by a queued job: kept.
    dataset = upload_table(client, qnli_like_frame(20), "train.csv")
    job = client.post(
        "/v1/jobs",
        json={
            "kind": "distill",
            "train_dataset": dataset["id"],
            "teacher_model": teacher["id"],
            "hyperparameters": {"model.hf_text.checkpoint_name": str(tiny_student_dir)},
        },
    )
    assert job.status_code == 202, job.text
    assert client.delete(f"/v1/models/{teacher['id']}").status_code == 409

    # The downloaded archive uploads again as a new model, which can go.
    again = client.post(
        "/v1/models",
        files={"file": ("bundle.tar.gz", download.content)},
        data={"text_columns": "question,sentence"},
    )
    assert again.status_code == 201, again.text
    assert again.json()["labels"] == ["entailment", "not_entailment"]
    assert client.delete(f"/v1/models/{again.json()['id']}").status_code == 204
    assert client.get(f"/v1/models/{again.json()['id']}").status_code == 404


def test_register_a_server_side_file(sqlite_settings: Settings, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    qnli_like_frame(15).to_parquet(shared / "train.parquet", index=False)
    settings = sqlite_settings.model_copy(update={"allowed_data_roots": [shared]})
    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/datasets/from-path", json={"path": str(shared / "train.parquet"), "name": "x"}
        )
        assert response.status_code == 201, response.text
        assert response.json()["row_count"] == 15 and response.json()["format"] == "parquet"
        missing = client.post("/v1/datasets/from-path", json={"path": str(shared / "nope.csv")})
        assert missing.status_code == 422 and missing.json()["field"] == "path"
