"""A distill job run by a real Celery worker leaves its student with a scored int8 variant; an
ONNX Runtime variant is made on request and serves what the float model does."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from fastapi.testclient import TestClient
from transformers import AutoTokenizer

from app.main import create_app
from domain.config import Settings
from tests.conftest import upload_table, wait_for_job, zip_folder

pytestmark = pytest.mark.integration


def test_distill_job_makes_an_int8_variant(
    sqlite_settings: Settings,
    start_worker,
    qnli_tables: dict,
    tiny_teacher_dir: Path,
    tiny_student_dir: Path,
    tmp_path: Path,
) -> None:
    start_worker(sqlite_settings)
    with TestClient(create_app(sqlite_settings)) as client:
        train = upload_table(client, qnli_tables["train"], "train.csv")
        tuning = upload_table(client, qnli_tables["tuning"], "tuning.csv")
        teacher = client.post(
            "/v1/models",
            files={"file": ("teacher.zip", zip_folder(tiny_teacher_dir))},
            data={"text_columns": "question,sentence", "labels": "entailment,not_entailment"},
        ).json()
        job = client.post(
            "/v1/jobs",
            json={
                "kind": "distill",
                "train_dataset": train["id"],
                "tuning_dataset": tuning["id"],
                "teacher_model": teacher["id"],
                "hyperparameters": {
                    "model.hf_text.checkpoint_name": str(tiny_student_dir),
                    "optimization.max_epochs": 1,
                },
            },
        )
        assert job.status_code == 202, job.text
        finished = wait_for_job(client, job.json()["id"])
        assert finished["status"] == "succeeded", finished["error"]
        student_id = finished["model"]

        variants = client.get(f"/v1/models/{student_id}/variants").json()["data"]
        assert [v["kind"] for v in variants] == ["int8"]
        comparison = variants[0]["comparison"]
        assert variants[0]["dataset"] == tuning["id"]
        assert comparison["rows"] == tuning["row_count"]
        assert "accuracy_drop_points" in comparison and 0 <= comparison["agreement"] <= 1
        latency = comparison["cpu_latency"]
        assert latency["float"]["batched_ms_per_row"] > 0
        assert latency["variant"]["batched_ms_per_row"] > 0
        assert comparison["cpu_speedup_batched"] > 0
        # Made, not chosen: the float model stays the default until someone says otherwise.
        assert variants[0]["is_default"] is False

        rows = qnli_tables["test"][["question", "sentence"]].head(4).to_dict("records")
        served = client.post(
            f"/v1/models/{student_id}/predict", params={"variant": "int8"}, json={"rows": rows}
        )
        assert served.status_code == 200, served.text
        assert len(served.json()["predictions"]) == 4

        # ONNX Runtime: made on request like int8, and it answers as the float model does.
        float_probabilities = client.post(
            f"/v1/models/{student_id}/predict_proba", json={"rows": rows}
        ).json()["probabilities"]
        made = client.post(f"/v1/models/{student_id}/variants", json={"kind": "onnx"})
        assert made.status_code in (200, 201), made.text
        assert made.json()["comparison"]["agreement"] == 1.0
        onnx = client.post(
            f"/v1/models/{student_id}/predict_proba",
            params={"variant": "onnx"},
            json={"rows": rows},
        )
        assert onnx.status_code == 200, onnx.text
        for ours, theirs in zip(onnx.json()["probabilities"], float_probabilities, strict=True):
            assert ours == pytest.approx(theirs, abs=1e-4)

        # ONNX out: the graphs and tokenizer, runnable with onnxruntime and no Distillery.
        download = client.get(f"/v1/models/{student_id}/download", params={"format": "onnx"})
        assert download.status_code == 200, download.text
        with tarfile.open(fileobj=io.BytesIO(download.content)) as archive:
            archive.extractall(tmp_path, filter="data")
        folder = tmp_path / student_id
        for name in ("model.onnx", "model-int8.onnx", "distillery.json", "tokenizer.json"):
            assert (folder / name).is_file(), name
        check = json.loads((folder / "onnx-check.json").read_text())
        assert check["rows"] == tuning["row_count"] and check["fp32_max_abs_difference"] <= 1e-4
        # A tiny random-ish model has near ties; a real student's agreement is what the note
        # and bench/serve.py report.
        assert check["int8_argmax_agreement"] >= 0.95
        recorded = client.get(f"/v1/models/{student_id}").json()["metrics"]["onnx"]
        assert recorded["fp32_max_abs_difference"] == check["fp32_max_abs_difference"]
        tokenizer = AutoTokenizer.from_pretrained(folder)
        session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
        encoded = tokenizer(
            [r["question"] for r in rows], [r["sentence"] for r in rows],
            padding=True, truncation=True, max_length=64, return_tensors="np",
        )
        feeds = {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()}
        (logits,) = session.run(["logits"], feeds)
        labels = json.loads((folder / "distillery.json").read_text())["labels"]
        exported = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        for ours, theirs in zip(exported, float_probabilities, strict=True):
            assert list(ours) == pytest.approx([theirs[label] for label in labels], abs=1e-4)
