"""The AutoMM tutorial's flow through the Python client, against a live server and a real Celery
worker (embedded default: SQLite): a folder AutoGluon's MultiModalPredictor.save() wrote is
uploaded as it is, answers as AutoMM did, and teaches a student in a distill job."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distillery_client import Client
from domain.config import Settings
from tests.conftest import start_api_and_worker

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PREDICTOR = FIXTURES / "automm_teacher"
EXPECTED = json.loads((FIXTURES / "automm_teacher_expected.json").read_text())


def test_an_automm_predictor_teaches_a_student_through_the_client(
    sqlite_settings: Settings,
    start_worker,
    live_server,
    qnli_tables: dict,
    tiny_student_dir: Path,
) -> None:
    url = start_api_and_worker(sqlite_settings, start_worker, live_server)
    with Client(url=url, api_key=None, timeout=60) as client:
        # The folder as AutoMM saved it, nothing else: the text columns come from its
        # assets.json, the class names from df_preprocessor.pkl read as inert data.
        teacher = client.upload_model(PREDICTOR)
        assert teacher.labels == EXPECTED["classification"]["class_labels"]
        assert teacher.text_columns == ["question", "sentence"]
        rows = pd.DataFrame(EXPECTED["rows"])
        probabilities = teacher.predict_proba(rows)[teacher.labels].to_numpy()
        expected = np.array(EXPECTED["classification"]["predict_proba"])
        assert np.abs(probabilities - expected).max() < 1e-4

        job = client.fit(
            qnli_tables["train"],
            tuning_data=qnli_tables["tuning"],
            teacher=teacher,
            hyperparameters={
                "model.hf_text.checkpoint_name": str(tiny_student_dir),
                "optimization.max_epochs": 1,
                "env.batch_size": 16,
            },
        )
        assert job.kind == "distill"
        job.wait(progress=False, poll_seconds=0.2, timeout=240)
        assert job.status == "succeeded", job.data.get("error")
        assert "soft_loss" in job.metrics(kind="train").columns
        student = job.model
        assert student.lineage["teacher_model"] == teacher.id
        assert student.num_parameters < teacher.num_parameters
        assert set(student.predict(qnli_tables["test"].head(4))) <= set(teacher.labels)
