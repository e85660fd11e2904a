"""The distillation engine on tiny models: every loss term, layer maps, teacher-output cache,
transfer sets, and teacher and student with different architectures and tokenizers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from distillery.augment import augmented_copies, recombined_pairs
from distillery.bundle import BundleMetadata, save_bundle
from distillery.distill import teacher_head_logits, teacher_outputs_for, uniform_layer_map
from distillery.hyperparams import (
    AUTO_PAIR_COPIES,
    LABELS_ONLY_MAX_ROWS,
    LABELS_ONLY_NOISY_COPIES,
    LABELS_ONLY_PAIR_COPIES,
    HyperparameterError,
    TrainingConfig,
    parse_hyperparameters,
)
from distillery.predictor import Predictor
from distillery.teacher_cache import TeacherCache
from distillery.training import MadeCopies, TrainingData, made_copies, train
from tests.factories import qnli_like_frame, save_tiny_bert, save_tiny_mpnet

LABELS = ["entailment", "not_entailment"]
COLUMNS = ["question", "sentence"]
FAST = {"optimization.learning_rate": 3e-3, "optimization.max_epochs": 6, "env.batch_size": 16}


def data(rows: int = 96, unlabeled: pd.DataFrame | None = None) -> TrainingData:
    return TrainingData(
        train=qnli_like_frame(rows, seed=1),
        tuning=qnli_like_frame(32, seed=2),
        text_columns=COLUMNS,
        label_column="label",
        problem_type="binary",
        labels=LABELS,
        unlabeled=unlabeled,
    )


def trained_bundle(backbone: Path, folder: Path) -> Path:
    # Ten epochs: a confident teacher, whose soft labels carry a clear signal.
    config = parse_hyperparameters({**FAST, "optimization.max_epochs": 12})
    result = train(config, data(160), backbone)
    metadata = BundleMetadata("binary", LABELS, COLUMNS)
    return save_bundle(result.backbone.model, result.backbone.tokenizer, metadata, folder)


@pytest.fixture(scope="module")
def bert_teacher(tiny_teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_bundle(tiny_teacher_dir, tmp_path_factory.mktemp("bert") / "bundle")


@pytest.fixture(scope="module")
def mpnet_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    checkpoint = save_tiny_mpnet(tmp_path_factory.mktemp("mpnet-checkpoint"))
    return trained_bundle(checkpoint, tmp_path_factory.mktemp("mpnet") / "bundle")


def test_uniform_layer_map() -> None:
    assert uniform_layer_map(3, 6) == [2, 4, 6]
    assert uniform_layer_map(2, 12) == [6, 12]
    assert uniform_layer_map(1, 2) == [2]
    assert uniform_layer_map(6, 6) == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("hyperparameters", "term"),
    [
        ({"distiller.output_feature_loss_weight": 1.0}, "feature_loss"),
        (
            {
                "distiller.output_feature_loss_weight": 1.0,
                "distiller.output_feature_loss_type": "cosine",
            },
            "feature_loss",
        ),
        ({"distiller.softmax_regression_weight": 1.0}, "softmax_regression_loss"),
        (
            {
                "distiller.softmax_regression_weight": 1.0,
                "distiller.softmax_regression_loss_type": "cross_entropy",
            },
            "softmax_regression_loss",
        ),
        ({"distiller.rkd_distance_loss_weight": 1.0}, "rkd_distance_loss"),
        ({"distiller.rkd_angle_loss_weight": 1.0}, "rkd_angle_loss"),
        ({"distiller.intermediate_loss_weight": 1.0}, "intermediate_loss"),
        (
            {"distiller.intermediate_loss_weight": 1.0, "distiller.intermediate_pooling": "tokens"},
            "intermediate_loss",
        ),
        (
            {
                "distiller.intermediate_loss_weight": 1.0,
                "distiller.intermediate_pooling": "cls",
                "distiller.intermediate_loss_type": "cosine",
            },
            "intermediate_loss",
        ),
        ({"distiller.attention_loss_weight": 1.0}, "attention_loss"),
        ({"distiller.teacher_mode": "online"}, "soft_loss"),
    ],
)
def test_every_loss_term_trains_and_is_logged(
    bert_teacher: Path, tiny_student_dir: Path, hyperparameters: dict, term: str
) -> None:
    # Student 16 wide, teacher 32: every feature term goes through a trained adaptor.
    config = parse_hyperparameters({**FAST, "optimization.max_epochs": 2, **hyperparameters})
    result = train(config, data(), tiny_student_dir, teacher=Predictor(bert_teacher))
    logged = [entry for entry in result.history if entry["kind"] == "train"]
    assert logged and all(term in entry and entry[term] >= 0 for entry in logged)
    assert all("hard_loss" in entry and "soft_loss" in entry for entry in logged)
    assert result.info["teacher_mode"] == ("online" if config.teacher_runs_online else "cached")
    if config.needs_online_teacher:
        assert result.info["intermediate_layer_map"] == [2]
    validation = [entry for entry in result.history if entry["kind"] == "validation"]
    assert all("teacher_agreement" in entry for entry in validation)


def test_adaptor_learns_with_the_student(bert_teacher: Path, tiny_student_dir: Path) -> None:
    config = parse_hyperparameters(
        {**FAST, "distiller.output_feature_loss_weight": 1.0, "distiller.soft_label_weight": 0.0}
    )
    result = train(config, data(), tiny_student_dir, teacher=Predictor(bert_teacher))
    feature_losses = [e["feature_loss"] for e in result.history if e["kind"] == "train"]
    assert feature_losses[-1] < feature_losses[0]


def test_token_level_terms_need_a_shared_tokenizer(
    mpnet_teacher: Path, tiny_student_dir: Path
) -> None:
    config = parse_hyperparameters(
        {
            **FAST,
            "distiller.intermediate_loss_weight": 1.0,
            "distiller.intermediate_pooling": "tokens",
        }
    )
    with pytest.raises(HyperparameterError, match="share a tokenizer"):
        train(config, data(), tiny_student_dir, teacher=Predictor(mpnet_teacher))


def test_attention_loss_needs_equal_head_counts(bert_teacher: Path, tmp_path: Path) -> None:
    three_heads = save_tiny_bert(tmp_path / "student", layers=1, hidden=24, heads=3)
    config = parse_hyperparameters({**FAST, "distiller.attention_loss_weight": 1.0})
    with pytest.raises(HyperparameterError, match="equal head counts"):
        train(config, data(), three_heads, teacher=Predictor(bert_teacher))


@pytest.fixture(scope="module")
def bert_student_24(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 24 wide: narrower than either teacher, so adaptors are in play, and (unlike the 16-wide
    # student) wide enough to learn the tiny task reliably.
    return save_tiny_bert(tmp_path_factory.mktemp("student24"), layers=1, hidden=24, heads=2)


def test_mpnet_teacher_distills_into_a_bert_student(
    mpnet_teacher: Path, bert_student_24: Path
) -> None:
    """Different architectures, widths and tokenizers: each side reads its own tokens."""
    teacher = Predictor(mpnet_teacher)
    assert teacher.model.config.model_type == "mpnet"
    config = parse_hyperparameters(
        {
            **FAST,
            "optimization.max_epochs": 10,
            "distiller.temperature": 1.0,
            "distiller.hard_label_weight": 0.5,
            "distiller.softmax_regression_weight": 0.5,
            # 2 pairs per row, not the labels-only recipe's 10 made rows: a smaller test.
            "distiller.augmentation_pair_copies": 2,
        }
    )
    result = train(config, data(160), bert_student_24, teacher=teacher)
    assert result.backbone.model.config.model_type == "bert"
    assert result.tuning_metrics["teacher_agreement"] >= 0.9
    assert result.tuning_metrics["accuracy"] >= 0.9


def test_every_term_runs_across_tokenizers(mpnet_teacher: Path, bert_student_24: Path) -> None:
    config = parse_hyperparameters(
        {
            **FAST,
            "distiller.output_feature_loss_weight": 0.5,
            "distiller.softmax_regression_weight": 0.5,
            "distiller.rkd_distance_loss_weight": 0.5,
            "distiller.rkd_angle_loss_weight": 0.5,
            "distiller.intermediate_loss_weight": 0.5,  # mean-pooled: token counts differ
        }
    )
    result = train(config, data(), bert_student_24, teacher=Predictor(mpnet_teacher))
    logged = [entry for entry in result.history if entry["kind"] == "train"]
    for term in (
        "feature_loss",
        "softmax_regression_loss",
        "rkd_distance_loss",
        "rkd_angle_loss",
        "intermediate_loss",
    ):
        assert logged[-1][term] < logged[0][term], term
    assert result.info["intermediate_layer_map"] == [2]  # 1 student layer <- last of 2


def test_teacher_head_reproduces_the_teachers_logits(
    bert_teacher: Path, mpnet_teacher: Path
) -> None:
    for folder in (bert_teacher, mpnet_teacher):
        teacher = Predictor(folder)
        rows = teacher.tokenizer(
            ["what is the river ?"], ["the river flows ."], return_tensors="pt"
        )
        with torch.no_grad():
            output = teacher.model(**rows, output_hidden_states=True)
            rebuilt = teacher_head_logits(teacher.model, output.hidden_states[-1][:, 0])
        assert torch.allclose(rebuilt, output.logits, atol=1e-5)


def test_transfer_set_rows_learn_only_from_the_teacher(
    bert_teacher: Path, tiny_student_dir: Path
) -> None:
    unlabeled = qnli_like_frame(64, seed=9).drop(columns=["label"])
    config = parse_hyperparameters({**FAST, "optimization.max_epochs": 2})
    result = train(
        config, data(32, unlabeled=unlabeled), tiny_student_dir, teacher=Predictor(bert_teacher)
    )
    # The default recipe adds recombined pairs of the labelled rows to the transfer set.
    assert result.info["augmented_rows"] == AUTO_PAIR_COPIES * 32
    assert result.info["unlabeled_rows"] == 64 + AUTO_PAIR_COPIES * 32
    assert result.info["train_rows"] == 32 + 64 + AUTO_PAIR_COPIES * 32
    with pytest.raises(HyperparameterError, match="distill job"):
        train(config, data(32, unlabeled=unlabeled), tiny_student_dir)
    # Without a teacher the default makes no rows (and refuses nothing).
    fine_tuned = train(config, data(32), tiny_student_dir)
    assert fine_tuned.info["train_rows"] == 32


def test_augmented_copies_are_noisy_deterministic_and_never_empty() -> None:
    frame = qnli_like_frame(40, seed=4)
    copies = augmented_copies(frame, COLUMNS, copies=3, word_probability=0.2, seed=7)
    assert list(copies.columns) == COLUMNS and len(copies) == 3 * 40
    assert copies.equals(augmented_copies(frame, COLUMNS, 3, 0.2, seed=7))
    assert not copies.equals(augmented_copies(frame, COLUMNS, 3, 0.2, seed=8))
    # About one word in ten changes: most rows of ~11 words differ, some survive as they were.
    light = augmented_copies(frame, COLUMNS, copies=3, word_probability=0.05, seed=7)
    originals = pd.concat([frame[COLUMNS]] * 3, ignore_index=True)
    changed = (light != originals).any(axis=1).mean()
    assert 0.4 < changed < 0.95
    assert (copies.map(lambda text: len(text.split())) > 0).all().all()
    vocabulary = {word for text in frame["question"] for word in text.split()}
    assert {w for text in copies["question"] for w in text.split()} <= vocabulary
    unchanged = augmented_copies(frame, COLUMNS, copies=1, word_probability=0.0, seed=7)
    assert unchanged.equals(frame[COLUMNS].reset_index(drop=True))


def test_augmented_rows_join_the_transfer_set(bert_teacher: Path, tiny_student_dir: Path) -> None:
    config = parse_hyperparameters(
        {
            **FAST,
            "optimization.max_epochs": 1,
            "distiller.augmentation_copies": 2,
            "distiller.augmentation_pair_copies": 0,
        }
    )
    unlabeled = qnli_like_frame(10, seed=9).drop(columns=["label"])
    result = train(
        config, data(32, unlabeled=unlabeled), tiny_student_dir, teacher=Predictor(bert_teacher)
    )
    assert result.info["augmented_rows"] == 64
    assert result.info["unlabeled_rows"] == 10 + 64
    assert result.info["train_rows"] == 32 + 10 + 64
    with pytest.raises(HyperparameterError, match="distill job"):
        train(config, data(32), tiny_student_dir)


class TestTeacherCache:
    def outputs(self, teacher: Predictor, frame: pd.DataFrame, cache: TeacherCache, **overrides):
        kwargs = {
            "need_features": False,
            "cache": cache,
            "teacher_fingerprint": "teacher-a",
            "batch_size": 16,
            "device": torch.device("cpu"),
            **overrides,
        }
        return teacher_outputs_for(teacher, frame, COLUMNS, **kwargs)

    def test_hit_miss_and_invalidation(self, bert_teacher: Path, tmp_path: Path) -> None:
        teacher, cache = Predictor(bert_teacher), TeacherCache(tmp_path / "cache")
        frame = qnli_like_frame(20, seed=3)
        first = self.outputs(teacher, frame, cache)
        again = self.outputs(teacher, frame, cache)
        assert (first.source, again.source) == ("computed", "cache")
        assert torch.equal(first.outputs.logits, again.outputs.logits)
        assert torch.allclose(
            first.outputs.logits, torch.from_numpy(teacher.raw_outputs(frame)), atol=1e-5
        )
        # Any change to what the outputs depend on is a miss.
        changed = frame.copy()
        changed.loc[0, "sentence"] = "the king ruled ."
        assert self.outputs(teacher, changed, cache).source == "computed"
        assert self.outputs(teacher, frame, cache, teacher_fingerprint="teacher-b").source == (
            "computed"
        )
        teacher.max_text_len = 8  # the length the predictor encodes with
        assert self.outputs(teacher, frame, cache).source == "computed"

    def test_features_and_corrupt_entries(self, bert_teacher: Path, tmp_path: Path) -> None:
        teacher, cache = Predictor(bert_teacher), TeacherCache(tmp_path / "cache")
        frame = qnli_like_frame(20, seed=3)
        self.outputs(teacher, frame, cache)
        with_features = self.outputs(teacher, frame, cache, need_features=True)
        assert with_features.outputs.features is not None
        assert with_features.outputs.features.shape == (20, 32)
        for entry in (tmp_path / "cache").glob("*.safetensors"):
            entry.write_bytes(b"not a tensor file")
        assert self.outputs(teacher, frame, cache).source == "computed"
        assert self.outputs(teacher, frame, cache).source == "cache"

    def test_a_second_job_reuses_the_first_jobs_outputs(
        self, bert_teacher: Path, tiny_student_dir: Path, tmp_path: Path
    ) -> None:
        cache = TeacherCache(tmp_path / "cache")
        config = parse_hyperparameters({**FAST, "optimization.max_epochs": 1})
        kwargs = {
            "teacher": Predictor(bert_teacher),
            "teacher_cache": cache,
            "teacher_fingerprint": "mdl_teacher",
        }
        first = train(config, data(), tiny_student_dir, **kwargs)
        second = train(config, data(), tiny_student_dir, **kwargs)
        # Train rows, the default recipe's recombined pairs (the same for the same seed), tuning.
        assert first.info["teacher_outputs"] == ["computed", "computed", "computed"]
        assert second.info["teacher_outputs"] == ["cache", "cache", "cache"]
        assert first.tuning_metrics == second.tuning_metrics


def test_recombined_pairs_pair_each_question_with_another_rows_near_miss() -> None:
    frame = pd.DataFrame(
        {
            "question": ["who built the bridge ?", "when did the river flood ?", "what is a cat ?"],
            "sentence": [
                "the river flooded in 1990 .",
                "a cat is a small animal .",
                "engineers built the bridge .",
            ],
            "label": ["entailment", "not_entailment", "entailment"],
        }
    )
    pairs = recombined_pairs(frame, COLUMNS, copies=1, seed=0)
    assert list(pairs.columns) == COLUMNS
    assert list(pairs["question"]) == list(frame["question"])
    # Each question meets the other row's sentence that shares its words.
    assert list(pairs["sentence"]) == [
        "engineers built the bridge .",
        "the river flooded in 1990 .",
        "a cat is a small animal .",
    ]


def test_recombined_pairs_are_deterministic_label_free_and_never_self_pairs() -> None:
    frame = qnli_like_frame(60, seed=4)
    frame["sentence"] = [f"{text} ({row})" for row, text in enumerate(frame["sentence"])]
    pairs = recombined_pairs(frame, COLUMNS, copies=3, seed=7)
    assert len(pairs) == 180 and list(pairs.columns) == COLUMNS
    assert pairs.equals(recombined_pairs(frame, COLUMNS, 3, seed=7))
    assert (pairs.map(lambda text: len(text.split())) > 0).all().all()
    assert set(pairs["sentence"]) <= set(frame["sentence"])
    originals = pd.concat([frame[COLUMNS]] * 3, ignore_index=True)
    assert (pairs["sentence"] != originals["sentence"]).all()
    # Copies of one row meet different partners.
    assert (pairs["sentence"].iloc[:60].to_numpy() != pairs["sentence"].iloc[60:120]).mean() > 0.9
    with pytest.raises(ValueError, match="two or more text columns"):
        recombined_pairs(frame, ["question"], copies=1, seed=0)


def test_default_recipe_makes_more_rows_where_a_distill_job_has_only_its_labels() -> None:
    default = parse_hyperparameters({})
    pairs = ["question", "sentence"]

    def copies(config: TrainingConfig = default, **facts: Any) -> MadeCopies:
        given = {"has_teacher": True, "labelled_rows": 800, "has_transfer_set": False, **facts}
        return made_copies(config, pairs, **given)

    labels_only = MadeCopies(LABELS_ONLY_NOISY_COPIES, LABELS_ONLY_PAIR_COPIES)
    assert copies() == labels_only
    assert copies(labelled_rows=LABELS_ONLY_MAX_ROWS) == labels_only
    # A transfer set, or labels plentiful enough to be one: pairs only.
    assert copies(has_transfer_set=True) == MadeCopies(0, AUTO_PAIR_COPIES)
    assert copies(labelled_rows=LABELS_ONLY_MAX_ROWS + 1) == MadeCopies(0, AUTO_PAIR_COPIES)
    # Either key named: the rest of the recipe is the plain one.
    named_pairs = parse_hyperparameters({"distiller.augmentation_pair_copies": 0})
    assert copies(named_pairs) == MadeCopies(0, 0)
    named_noise = parse_hyperparameters({"distiller.augmentation_copies": 1})
    assert copies(named_noise) == MadeCopies(1, AUTO_PAIR_COPIES)
    # No teacher to label them, or one text column: nothing made unless asked.
    assert copies(has_teacher=False) == MadeCopies(0, 0)
    assert made_copies(
        default, ["question"], has_teacher=True, labelled_rows=800, has_transfer_set=False
    ) == MadeCopies(0, 0)


def test_recombined_pairs_join_the_transfer_set(bert_teacher: Path, tiny_student_dir: Path) -> None:
    config = parse_hyperparameters(
        {**FAST, "optimization.max_epochs": 1, "distiller.augmentation_pair_copies": 2}
    )
    result = train(config, data(32), tiny_student_dir, teacher=Predictor(bert_teacher))
    assert result.info["augmented_rows"] == 64
    assert result.info["train_rows"] == 32 + 64
    with pytest.raises(HyperparameterError, match="distill job") as refused:
        train(config, data(32), tiny_student_dir)
    assert refused.value.key == "distiller.augmentation_pair_copies"
    one_column = data(32)
    one_column.text_columns = ["question"]
    with pytest.raises(HyperparameterError, match="two or more text columns"):
        train(config, one_column, tiny_student_dir, teacher=Predictor(bert_teacher))
    # Unasked, a one-column task simply gets no pairs.
    default = parse_hyperparameters({**FAST, "optimization.max_epochs": 1})
    result = train(default, one_column, tiny_student_dir, teacher=Predictor(bert_teacher))
    assert result.info["augmented_rows"] == 0
