"""The Python client (`distillery.client`) against a live server: a real uvicorn process and a
real Celery worker process on PostgreSQL and Redis, tiny BERTs the test builds itself.

fit -> wait (with its progress bar) -> model -> predict / predict_proba / evaluate, a distill
job from the teacher's job, its report, download and re-upload, and the server's problems
raised as DistilleryError.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pandas as pd
import pytest

from distillery_client import Client, Dataset, DistilleryError, Job, JobFailedError, RemoteModel
from domain.config import Settings
from tests.conftest import start_api_and_worker

pytestmark = pytest.mark.integration

FAST = {"optimization.learning_rate": 3e-3, "env.batch_size": 16}
LABELS = {"entailment", "not_entailment"}


def test_fit_wait_predict_evaluate_and_distill(
    postgres_redis_settings: Settings,
    start_worker,
    live_server,
    qnli_tables: dict,
    tiny_teacher_dir: Path,
    tiny_student_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = start_api_and_worker(postgres_redis_settings, start_worker, live_server)
    train, tuning, test = qnli_tables["train"], qnli_tables["tuning"], qnli_tables["test"]

    with Client(url=url, api_key=None, timeout=60) as client:
        assert client.health()["database"] == "postgresql"

        # A DataFrame goes up as a dataset with its schema inferred.
        uploaded = client.upload_dataset(train, name="qnli-train", label="label")
        assert isinstance(uploaded, Dataset)
        assert (uploaded.name, uploaded.row_count) == ("qnli-train", 160)
        assert uploaded.problem_type == "binary"
        assert uploaded.text_columns == ["question", "sentence"]
        assert uploaded.label_counts.keys() == LABELS
        assert client.dataset(uploaded.id).preview[0]["question"] == train.iloc[0]["question"]
        assert uploaded.id in [dataset.id for dataset in client.datasets()]

        # fit() on DataFrames uploads them and queues a fine-tune job.
        teacher_job = client.fit(
            train,
            tuning_data=tuning,
            hyperparameters={
                "model.hf_text.checkpoint_name": str(tiny_teacher_dir),
                "optimization.max_epochs": 3,
                **FAST,
            },
            label="label",
            name="teacher",
        )
        assert isinstance(teacher_job, Job) and teacher_job.kind == "finetune"
        assert teacher_job.status in ("queued", "running")
        names = {dataset.name for dataset in client.datasets()}
        assert {"teacher-train", "teacher-tuning"} <= names

        capsys.readouterr()
        assert teacher_job.wait(progress=True, poll_seconds=0.2, timeout=240) is teacher_job
        bar = capsys.readouterr().err
        # The bar is drawn from the job: its id, steps out of the total, epoch and loss.
        assert teacher_job.id in bar and "/30" in bar, bar
        assert "epoch " in bar and "loss=" in bar, bar
        assert "succeeded" in bar, bar
        assert teacher_job.status == "succeeded" and teacher_job.progress == 1.0

        metrics = teacher_job.metrics()
        assert isinstance(metrics, pd.DataFrame)
        assert {"at", "step", "epoch", "kind", "loss", "learning_rate"} <= set(metrics.columns)
        assert set(metrics["kind"]) == {"train", "validation"}
        assert metrics.loc[metrics["kind"] == "train", "step"].max() == 30
        assert len(teacher_job.metrics(kind="validation")) == 3
        kinds = [event["kind"] for event in teacher_job.events()]
        assert kinds[0] == "queued" and "training_started" in kinds and kinds[-1] == "succeeded"

        teacher = teacher_job.model
        assert isinstance(teacher, RemoteModel)
        assert set(teacher.labels) == LABELS
        assert teacher.text_columns == ["question", "sentence"]

        # predict / predict_proba / evaluate return pandas objects aligned with the input.
        shuffled = test.sample(frac=1.0, random_state=0)
        predictions = teacher.predict(shuffled)
        assert isinstance(predictions, pd.Series)
        assert list(predictions.index) == list(shuffled.index)
        assert set(predictions) <= LABELS
        probabilities = teacher.predict_proba(shuffled)
        assert list(probabilities.columns) == teacher.labels
        assert list(probabilities.index) == list(shuffled.index)
        assert ((probabilities.sum(axis=1) - 1.0).abs() < 1e-4).all()
        assert (probabilities.idxmax(axis=1) == predictions).all()
        datasets_before = len(client.datasets())
        scores = teacher.evaluate(test)
        assert set(scores) >= {"accuracy", "f1", "roc_auc"}
        assert scores["accuracy"] == pytest.approx((predictions == shuffled["label"]).mean())
        # The temporary dataset evaluate() uploaded is gone again.
        assert len(client.datasets()) == datasets_before

        # Distill: a Dataset and an id as data, the teacher given as its job.
        student_job = client.fit(
            uploaded,
            tuning_data=teacher_job.data["tuning_dataset"],
            teacher=teacher_job,
            hyperparameters={
                "model.hf_text.checkpoint_name": str(tiny_student_dir),
                "optimization.max_epochs": 2,
                "distiller.temperature": 2.0,
                **FAST,
            },
        )
        assert student_job.kind == "distill"
        student_job.wait(progress=False, poll_seconds=0.2, timeout=240)
        assert "soft_loss" in student_job.metrics(kind="train").columns
        report = student_job.report()
        assert isinstance(report, dict)
        assert report["job"] == student_job.id and report["model"] == student_job.model_id
        assert report["student"]["parameters"] < report["teacher"]["parameters"]
        # Any succeeded fine-tune job on the same tuning rows can be a control; the teacher's
        # starts elsewhere than the student, so it is a no-distill one.
        controlled = student_job.report(baseline=[teacher_job])
        assert isinstance(controlled, dict)
        assert [(b["job"], b["control"]) for b in controlled["baselines"]] == [
            (teacher_job.id, "no-distill")
        ]
        png = student_job.report(format="png", figure="bars")
        assert isinstance(png, bytes) and png.startswith(b"\x89PNG\r\n\x1a\n")
        student = student_job.model
        assert student.lineage["teacher_model"] == teacher.id
        # The int8 variant made after the distill job: listed, and scored when asked by name.
        assert [variant["kind"] for variant in student.variants()] == ["int8"]
        int8_scores = student.evaluate(test, variant="int8")
        assert 0.0 <= int8_scores["accuracy"] <= 1.0
        assert student.id in [model.id for model in client.models()]

        # Download, unpack and register the bundle again: the same label map comes back.
        archive = student.download(tmp_path)
        assert archive == tmp_path / f"{student.id}.tar.gz"
        with tarfile.open(archive) as bundle:
            assert any(name.endswith("config.json") for name in bundle.getnames())
        folder = student.download(tmp_path / "bundle", extract=True)
        assert (folder / "config.json").is_file()
        again = client.upload_model(folder, name="roundtrip", text_columns=student.text_columns)
        assert again.name == "roundtrip" and again.labels == student.labels
        assert list(again.predict(test.head(8))) == list(student.predict(test.head(8)))

        # The server's problems come back as DistilleryError with status, title, detail, field.
        with pytest.raises(DistilleryError) as missing:
            client.model("mdl_missing")
        assert missing.value.status == 404 and "mdl_missing" in str(missing.value)
        with pytest.raises(DistilleryError) as unknown_key:
            client.fit(uploaded, hyperparameters={"optimization.max_epoch": 2})
        assert unknown_key.value.status == 422
        assert "optimization.max_epoch" in unknown_key.value.detail
        assert unknown_key.value.field is not None and "hyperparameters" in unknown_key.value.field
        assert f"(field: {unknown_key.value.field})" in str(unknown_key.value)
        with pytest.raises(DistilleryError) as no_report:
            teacher_job.report()
        assert no_report.value.status == 422

        # A cancelled job makes wait() raise, carrying the job's final state.
        long_job = client.fit(
            uploaded,
            hyperparameters={
                "model.hf_text.checkpoint_name": str(tiny_student_dir),
                "optimization.max_epochs": 500,
                "optimization.patience": 1000,
            },
        )
        long_job.cancel()
        with pytest.raises(JobFailedError) as cancelled:
            long_job.wait(progress=False, poll_seconds=0.2, timeout=120)
        assert cancelled.value.job.status == "cancelled"
        assert long_job.id in str(cancelled.value)


def test_an_unreachable_server_is_a_distillery_error() -> None:
    with (
        Client(url="http://127.0.0.1:9", timeout=5) as nowhere,
        pytest.raises(DistilleryError) as unreachable,
    ):
        nowhere.health()
    assert unreachable.value.status is None
    assert "unreachable" in str(unreachable.value).lower()
    assert "127.0.0.1:9/healthz" in unreachable.value.detail
