"""An AutoGluon AutoMM predictor folder through the real ASGI app: uploaded as an archive or
registered from a server path it becomes a Distillery model and answers predict_proba over
HTTP as AutoMM's own predict_proba did; a pickle planted where the weights belong is a 422
naming the file."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import Settings
from tests.api.test_api import assert_problem
from tests.conftest import zip_folder

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PREDICTOR = FIXTURES / "automm_teacher"
EXPECTED = json.loads((FIXTURES / "automm_teacher_expected.json").read_text())
FORM = {"text_columns": "question,sentence"}


def test_an_automm_predictor_archive_is_registered_and_predicts_as_automm(
    client: TestClient,
) -> None:
    response = client.post(
        "/v1/models", files={"file": ("ag_teacher.zip", zip_folder(PREDICTOR))}, data=FORM
    )
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["architecture"] == "AutoMMHFTextClassifier"
    assert model["labels"] == EXPECTED["classification"]["class_labels"]
    assert model["text_columns"] == ["question", "sentence"]
    automm = model["lineage"]["autogluon"]
    assert automm["version"] == "1.6.3" and "read as inert data" in automm["label_order"]
    pickles = ["data_processors.pkl", "df_preprocessor.pkl", "eval_metric.pkl"]
    assert automm["never_unpickled"] == pickles

    assert_predicts_as_automm(client, model)

    # Its bundle, downloaded and uploaded again, keeps AutoMM's head and text packing.
    bundle = client.get(f"/v1/models/{model['id']}/download")
    assert bundle.status_code == 200
    again = client.post(
        "/v1/models",
        files={"file": ("again.tar.gz", bundle.content)},
        data={"text_columns": "question,sentence"},
    )
    assert again.status_code == 201, again.text
    assert again.json()["labels"] == model["labels"]
    assert again.json()["architecture"] == "AutoMMHFTextClassifier"
    assert_predicts_as_automm(client, again.json())


def assert_predicts_as_automm(client: TestClient, model: dict) -> None:
    answered = client.post(
        f"/v1/models/{model['id']}/predict_proba", json={"rows": EXPECTED["rows"]}
    )
    assert answered.status_code == 200, answered.text
    labels = model["labels"]
    got = np.array([[row[label] for label in labels] for row in answered.json()["probabilities"]])
    assert np.abs(got - np.array(EXPECTED["classification"]["predict_proba"])).max() < 1e-4


def test_a_pickle_planted_as_the_weights_is_a_422_naming_the_file(
    client: TestClient, tmp_path: Path
) -> None:
    folder = tmp_path / "ag_teacher"
    shutil.copytree(PREDICTOR, folder)
    (folder / "model.ckpt").write_bytes(pickle.dumps({"state_dict": print}, protocol=2))
    response = client.post(
        "/v1/models", files={"file": ("ag_teacher.zip", zip_folder(folder))}, data=FORM
    )
    body = assert_problem(response, 422, field="file", says="model.ckpt")
    assert body["title"] == "Pickled weights refused"
    assert "weights_only=True" in body["detail"] and str(tmp_path) not in body["detail"]

    other = client.post(
        "/v1/models",
        files={"file": ("ag_teacher.zip", zip_folder(PREDICTOR))},
        data={**FORM, "labels": "yes,no"},
    )
    assert_problem(other, 422, field="labels", says="the predictor's classes are")


def test_an_automm_predictor_folder_is_registered_from_a_server_path(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shutil.copytree(PREDICTOR, shared / "ag_teacher")
    settings = sqlite_settings.model_copy(update={"allowed_data_roots": [shared]})
    with TestClient(create_app(settings)) as client:
        # No text_columns: the predictor's own, from its assets.json.
        body = {"path": str(shared / "ag_teacher"), "labels": ["not_entailment", "entailment"]}
        # The labels may be sent too, in any order: they must be the predictor's classes.
        response = client.post("/v1/models/from-path", json=body)
        assert response.status_code == 201, response.text
        model = response.json()
        assert model["text_columns"] == ["question", "sentence"]
        assert model["lineage"]["path"] == body["path"]
        assert_predicts_as_automm(client, model)

        planted = shared / "planted"
        shutil.copytree(PREDICTOR, planted)
        (planted / "model.ckpt").write_bytes(pickle.dumps({"state_dict": print}, protocol=2))
        refused = client.post("/v1/models/from-path", json={**body, "path": str(planted)})
        assert_problem(refused, 422, field="file", says="model.ckpt")

        (planted / "model.ckpt").unlink()
        (planted / "model.ckpt").symlink_to(PREDICTOR / "model.ckpt")
        linked = client.post("/v1/models/from-path", json={**body, "path": str(planted)})
        assert_problem(linked, 422, field="path", says="'model.ckpt' is a link")
        outside = client.post("/v1/models/from-path", json={**body, "path": str(PREDICTOR)})
        assert_problem(outside, 403, field="path", says="outside the folders")
