"""The job plan (distillery/plan.py) on its own: what it refuses, and what it stores."""

from __future__ import annotations

from typing import Any

import pytest

from distillery.backbones import BackboneError, CheckpointShape
from distillery.hyperparams import HyperparameterError
from distillery.plan import JobPlan, PlanError, TeacherFacts, plan_job

TEACHER = TeacherFacts(
    problem_type="binary",
    labels=["no", "yes"],
    text_columns=["question", "sentence"],
    training_rows="ds_teacher",
    training_columns=["question", "sentence", "label"],
)


def plan(kind: str = "distill", hyperparameters: dict[str, Any] | None = None, **given: Any):
    facts: dict[str, Any] = {
        "label": "label",
        "text_columns": ["question", "sentence"],
        "problem_type": "binary",
        "labels": ["yes", "no"],
        "train_columns": ["question", "sentence", "label"],
        "teacher": TEACHER if kind == "distill" else None,
        "has_unlabeled": False,
        "checkpoint_shape": lambda name: CheckpointShape(layers=6, intermediate_size=1536),
    }
    return plan_job(kind, hyperparameters or {}, **{**facts, **given})


def test_the_plan_round_trips_through_json_as_it_was() -> None:
    made = plan(hyperparameters={"model.hf_text.layers": [0, 2], "env.batch_size": 8})
    assert JobPlan.from_json(made.to_json()) == made
    assert made.config.per_device_batch_size == 8
    # The student adopts the teacher's label order.
    assert made.labels == ["no", "yes"]


def test_each_job_kind_gets_its_own_default_learning_rate() -> None:
    """The plan stores the resolved rate, so the worker trains at what the plan shows."""
    assert plan().config.learning_rate == 3e-4
    assert plan(kind="finetune").config.learning_rate == 1e-4
    stored = JobPlan.from_json(plan().to_json())
    assert stored.config.learning_rate == 3e-4


def test_teacher_rows_join_when_asked_and_known() -> None:
    asked = plan(hyperparameters={"distiller.transfer_from_teacher_data": True})
    assert asked.teacher_training_rows == "ds_teacher"
    refused = plan(hyperparameters={"distiller.transfer_from_teacher_data": False})
    assert refused.teacher_training_rows is None


def test_teacher_rows_that_lack_a_column_are_refused() -> None:
    narrow = TeacherFacts("binary", ["no", "yes"], ["question", "sentence"], "ds_t", ["question"])
    with pytest.raises(HyperparameterError) as error:
        plan(teacher=narrow, hyperparameters={"distiller.transfer_from_teacher_data": True})
    assert error.value.key == "distiller.transfer_from_teacher_data"
    assert "sentence" in str(error.value)


def test_pair_copies_need_two_text_columns() -> None:
    with pytest.raises(HyperparameterError) as error:
        plan(
            kind="finetune",
            text_columns=["question"],
            hyperparameters={"distiller.augmentation_pair_copies": 1},
        )
    assert error.value.key == "distiller.augmentation_pair_copies"
    one_column = TeacherFacts("binary", ["no", "yes"], ["question"])
    with pytest.raises(HyperparameterError, match="two or more text columns"):
        plan(
            teacher=one_column,
            text_columns=["question"],
            hyperparameters={"distiller.augmentation_pair_copies": 1},
        )


def test_checkpoint_problems_too_many_layers_and_too_wide_feed_forward_name_their_key() -> None:
    def unusable(name: str) -> CheckpointShape:
        raise BackboneError(f"no checkpoint '{name}'")

    with pytest.raises(HyperparameterError) as error:
        plan(checkpoint_shape=unusable)
    assert error.value.key == "model.hf_text.checkpoint_name"
    with pytest.raises(HyperparameterError) as error:
        plan(hyperparameters={"model.hf_text.layers": [0, 6]})
    assert error.value.key == "model.hf_text.layers"
    with pytest.raises(HyperparameterError, match="have 1536 neurons") as error:
        plan(hyperparameters={"model.hf_text.intermediate_size": 2048})
    assert error.value.key == "model.hf_text.intermediate_size"
    unnamed_width = CheckpointShape(layers=6, intermediate_size=None)
    with pytest.raises(HyperparameterError, match="cannot be narrowed") as error:
        plan(
            hyperparameters={"model.hf_text.intermediate_size": 768},
            checkpoint_shape=lambda name: unnamed_width,
        )
    assert error.value.key == "model.hf_text.intermediate_size"
    assert (
        plan(hyperparameters={"model.hf_text.intermediate_size": 768}).config.intermediate_size
        == 768
    )


def test_a_teacher_of_another_problem_type_is_a_plan_error_on_teacher_model() -> None:
    with pytest.raises(PlanError) as error:
        plan(problem_type="multiclass", labels=["no", "yes"])
    assert error.value.field == "teacher_model"
    with pytest.raises(PlanError) as error:
        plan(kind="distill", teacher=None)
    assert error.value.title == "Teacher required"
