"""AutoGluon AutoMM predictors as Distillery models, on real predictors AutoMM 1.6.3 saved
(tests/fixtures/automm_teacher*, made by scripts/make_automm_fixture.py; CI has no AutoGluon):
the converted bundle answers as AutoMM's own predict_proba / predict did, nothing pickled is
ever unpickled (df_preprocessor.pkl is read as inert data), and the converted model works as a
distillation teacher and exports to ONNX."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from distillery.automm import bundle_from_automm, sorted_like_automm
from distillery.bundle import read_metadata
from distillery.bundle_checks import CheckpointError
from distillery.distill import teacher_head_logits
from distillery.encoding import trimmed_lengths
from distillery.hyperparams import parse_hyperparameters
from distillery.inert_pickle import Inert, read_inert_pickle
from distillery.onnx import OnnxClassifier
from distillery.predictor import Predictor
from distillery.scripted import ScriptedClassifier, script_predictor
from distillery.training import TrainingData, train
from distillery.variants import ONNX, apply_variant
from tests.factories import qnli_like_frame

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CLASSIFIER, REGRESSOR = FIXTURES / "automm_teacher", FIXTURES / "automm_teacher_regression"
EXPECTED = json.loads((FIXTURES / "automm_teacher_expected.json").read_text())
ROWS = pd.DataFrame(EXPECTED["rows"])
LABELS = ["entailment", "not_entailment"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("automm") / "bundle"
    # No labels: the classes come from df_preprocessor.pkl, read as inert data.
    bundle_from_automm(CLASSIFIER, folder, None, None, {"source": "test"})
    return folder


def planted(tmp_path: Path, source: Path = CLASSIFIER) -> Path:
    folder = tmp_path / "predictor"
    shutil.copytree(source, folder)
    return folder


def test_probabilities_match_automm_predict_proba(classifier: Path) -> None:
    assert EXPECTED["classification"]["class_labels"] == LABELS
    metadata = read_metadata(classifier)
    assert metadata.labels == LABELS and metadata.text_columns == ["question", "sentence"]
    assert metadata.head["pooling"] == "cls" and metadata.max_text_len == 40
    assert "read as inert data" in metadata.lineage["autogluon"]["label_order"]
    assert not [p for p in classifier.rglob("*") if p.suffix in {".pkl", ".ckpt"}]

    predictor = Predictor(classifier)
    # Every check row is longer than 40 tokens: AutoMM's per-column trimming is exercised.
    assert all(len(row["input_ids"]) == 40 for row in predictor.encode(ROWS))
    expected = np.array(EXPECTED["classification"]["predict_proba"])
    assert np.abs(predictor.predict_proba(ROWS) - expected).max() < 1e-4
    assert predictor.predict(ROWS) == [LABELS[i] for i in expected.argmax(axis=1)]


def test_regression_values_match_automm_predict(tmp_path: Path) -> None:
    # AutoMM standardized the target; its scaler, read as inert data, is folded into the head.
    assert "numerical_preprocessing: standardscaler" in (REGRESSOR / "config.yaml").read_text()
    metadata = bundle_from_automm(REGRESSOR, tmp_path / "bundle", None, None, {})
    assert (metadata.problem_type, metadata.labels, metadata.head["pooling"]) == (
        "regression",
        [],
        "mean",
    )
    values = Predictor(tmp_path / "bundle").predict(ROWS)
    assert np.abs(np.array(values) - np.array(EXPECTED["regression"]["predict"])).max() < 1e-4


def test_trimmed_lengths_share_the_budget_as_automm_does() -> None:
    assert trimmed_lengths([3, 4], 10) == [3, 4]
    assert trimmed_lengths([2, 2], 3) == [2, 1]  # the odd token goes to the first column
    assert trimmed_lengths([2, 30], 10) == [2, 8]
    assert trimmed_lengths([30, 30, 1], 10) == [5, 4, 1]


def test_class_order_is_the_label_encoders() -> None:
    assert sorted_like_automm([10, 2, 1], None) == [1, 2, 10]  # values sort, not their names
    assert sorted_like_automm(["pos", "neg", "mid"], "neg") == ["mid", "pos", "neg"]


class _Marker:
    """A pickle that would write a file if it were ever unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.path, "unpickled!"))


def test_a_pickle_planted_as_the_weights_is_refused_unread(tmp_path: Path) -> None:
    folder = planted(tmp_path)
    marker = tmp_path / "marker"
    (folder / "model.ckpt").write_bytes(pickle.dumps({"state_dict": _Marker(marker)}))
    with pytest.raises(CheckpointError, match=r"model.ckpt") as refused:
        bundle_from_automm(folder, tmp_path / "bundle", LABELS, None, {})
    assert refused.value.title == "Pickled weights refused"
    assert not marker.exists() and not (tmp_path / "bundle").exists()


def test_the_preprocessor_pickle_is_read_as_inert_data(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    inert = read_inert_pickle(pickle.dumps({"labels": _Marker(marker)}))
    assert isinstance(inert["labels"], Inert) and inert["labels"].name == "pathlib.Path.write_text"
    assert not marker.exists()

    # A df_preprocessor.pkl that is not AutoMM's: nothing runs, the labels must be sent.
    folder = planted(tmp_path)
    (folder / "df_preprocessor.pkl").write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(CheckpointError, match="could not be read") as unnamed:
        bundle_from_automm(folder, tmp_path / "a", None, None, {})
    assert unnamed.value.field == "labels" and not marker.exists()
    with pytest.raises(CheckpointError, match=r"3 names but assets.json says .* 2 outputs"):
        bundle_from_automm(folder, tmp_path / "b", [*LABELS, "other"], None, {})
    metadata = bundle_from_automm(folder, tmp_path / "c", LABELS[::-1], None, {})
    assert metadata.labels == LABELS  # sorted, as AutoMM's label encoder sorts them
    assert "the request's class names" in metadata.lineage["autogluon"]["label_order"]
    assert not marker.exists()

    scaled = planted(tmp_path / "scaled", REGRESSOR)
    (scaled / "df_preprocessor.pkl").unlink()
    with pytest.raises(CheckpointError, match="standardscaler"):
        bundle_from_automm(scaled, tmp_path / "d", None, None, {})


def test_missing_or_unsupported_pieces_are_named(tmp_path: Path) -> None:
    folder = planted(tmp_path)
    with pytest.raises(CheckpointError, match="the predictor's classes are") as other:
        bundle_from_automm(folder, tmp_path / "b", ["yes", "no"], None, {})
    assert other.value.field == "labels"
    with pytest.raises(CheckpointError, match="text_columns lists text") as columns:
        bundle_from_automm(folder, tmp_path / "c", LABELS, ["text"], {})
    assert columns.value.field == "text_columns"

    (folder / "hf_text" / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match=r"hf_text/pytorch_model.bin"):
        bundle_from_automm(folder, tmp_path / "d", LABELS, None, {})
    (folder / "hf_text" / "pytorch_model.bin").unlink()
    (folder / "model.ckpt").unlink()
    with pytest.raises(CheckpointError, match=r"model.ckpt .* is missing"):
        bundle_from_automm(folder, tmp_path / "e", LABELS, None, {})
    (folder / "hf_text" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"hf_text/config.json is missing"):
        bundle_from_automm(folder, tmp_path / "f", LABELS, None, {})


def test_the_converted_predictor_teaches_a_student(
    classifier: Path, tiny_student_dir: Path
) -> None:
    teacher = Predictor(classifier)
    features = torch.randn(3, teacher.model.config.hidden_size)
    # The softmax-regression term runs features through AutoMM's own head, not a BERT pooler.
    assert torch.equal(teacher_head_logits(teacher.model, features), teacher.model.head(features))
    data = TrainingData(
        train=qnli_like_frame(48, seed=1),
        tuning=qnli_like_frame(16, seed=2),
        text_columns=["question", "sentence"],
        label_column="label",
        problem_type="binary",
        labels=LABELS,
    )
    config = parse_hyperparameters(
        {
            "optimization.max_epochs": 1,
            "env.batch_size": 16,
            "distiller.softmax_regression_weight": 0.5,
            "distiller.intermediate_loss_weight": 0.5,  # the teacher online, hidden states
        }
    )
    result = train(config, data, tiny_student_dir, teacher=teacher)
    logged = [entry for entry in result.history if entry["kind"] == "train"]
    terms = ("soft_loss", "softmax_regression_loss", "intermediate_loss")
    assert logged and all(entry[term] >= 0 for entry in logged for term in terms)
    assert result.info["teacher_mode"] == "online"
    assert result.info["intermediate_layer_map"] == [2]  # the teacher's 2 layers, student's 1


def test_the_converted_predictor_exports_to_onnx(classifier: Path) -> None:
    expected = Predictor(classifier).raw_outputs(ROWS)
    predictor = Predictor(classifier)
    apply_variant(predictor, ONNX)
    assert isinstance(predictor.model, OnnxClassifier)
    assert np.abs(predictor.raw_outputs(ROWS) - expected).max() < 1e-4


def test_the_converted_predictor_serves_as_torchscript(classifier: Path) -> None:
    expected = Predictor(classifier).raw_outputs(ROWS)
    predictor = Predictor(classifier)
    assert script_predictor(predictor)
    assert isinstance(predictor.model, ScriptedClassifier)
    assert np.abs(predictor.raw_outputs(ROWS) - expected).max() < 1e-5
