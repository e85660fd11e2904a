"""The job plan: everything a training job will do, built and validated in one place before
anything is queued, and stored so the worker runs it as it is instead of parsing it again.

`plan_job` makes every check that needs no training: the hyperparameters parse, the
validation metric fits the problem type, a distill job's teacher fits the data (label space,
problem type, columns), distiller settings only on distill jobs, the student's checkpoint has
the layers asked for, and the teacher's own training rows exist when they are to join the
transfer set. The caller (the service) resolves names to facts first (datasets, models,
checkpoint folders); this module knows nothing of where they are stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from distillery.backbones import BackboneError, CheckpointShape
from distillery.hyperparams import (
    DISTILLER_KEYS,
    HyperparameterError,
    TrainingConfig,
    parse_hyperparameters,
)
from distillery.training import made_copies, selection_metric

JOB_KINDS = ("finetune", "distill")
CHECKPOINT_KEY = "model.hf_text.checkpoint_name"
LAYERS_KEY = "model.hf_text.layers"
INTERMEDIATE_SIZE_KEY = "model.hf_text.intermediate_size"
TEACHER_DATA_KEY = "distiller.transfer_from_teacher_data"


class PlanError(ValueError):
    """The job cannot run as asked (not a hyperparameter: those raise HyperparameterError);
    `field` names the request field at fault."""

    def __init__(self, field: str, title: str, message: str) -> None:
        super().__init__(message)
        self.field, self.title = field, title


@dataclass(frozen=True)
class TeacherFacts:
    """What a plan needs to know of a teacher model."""

    problem_type: str
    labels: list[str]
    text_columns: list[str]
    # The teacher's own training rows, when it was trained by this service: an opaque
    # reference (the service's dataset id) and the columns those rows have.
    training_rows: str | None = None
    training_columns: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JobPlan:
    kind: str
    config: TrainingConfig
    label: str
    text_columns: list[str]
    problem_type: str
    # Class names in the order of the student's outputs (a teacher's own order when distilling).
    labels: list[str]
    # Columns the transfer set's rows need: the student's and the teacher's inputs.
    transfer_columns: list[str] = field(default_factory=list)
    # The teacher's training rows that join the transfer set, unlabelled (TeacherFacts).
    teacher_training_rows: str | None = None
    # An auto-distill search's resolved settings (distillery.auto.SearchSpec.to_json()); its
    # trials are ordinary distill jobs with plans of their own.
    auto: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "config": asdict(self.config)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> JobPlan:
        """The plan `to_json` stored: rebuilt as it was, not validated again."""
        return cls(**{**raw, "config": TrainingConfig(**raw["config"])})


def _check_teacher(
    teacher: TeacherFacts, problem_type: str, labels: Sequence[str], train_columns: Sequence[str]
) -> None:
    unfit = "Teacher does not fit"
    classification = "regression" not in (teacher.problem_type, problem_type)
    if classification and sorted(teacher.labels) != sorted(labels):
        raise PlanError(
            "teacher_model",
            unfit,
            f"the teacher's labels ({', '.join(sorted(teacher.labels))}) differ "
            f"from the dataset's ({', '.join(sorted(labels))})",
        )
    if teacher.problem_type != problem_type:
        raise PlanError(
            "teacher_model",
            unfit,
            f"the teacher does {teacher.problem_type}, the dataset's label is {problem_type}",
        )
    missing = [c for c in teacher.text_columns if c not in train_columns]
    if missing:
        raise PlanError(
            "teacher_model",
            unfit,
            f"the teacher reads column(s) {', '.join(missing)}, which the training dataset lacks",
        )


def _teacher_rows(
    teacher: TeacherFacts, transfer_columns: list[str], wanted: bool | None
) -> str | None:
    """The teacher's training rows that join the transfer set: `wanted` True insists on them
    (an error when they are unknown or do not fit), None takes them when they are known and
    fit, False never."""
    if wanted is False:
        return None
    fits = all(c in teacher.training_columns for c in transfer_columns)
    if wanted is None:
        return teacher.training_rows if fits else None
    if teacher.training_rows is None:
        raise HyperparameterError(
            TEACHER_DATA_KEY,
            "the teacher was not trained by this service (uploaded, or its training data was "
            "deleted), so its training rows are unknown; set it to false, or register those "
            "rows as a dataset and name it as unlabeled_dataset",
        )
    if not fits:
        missing = [c for c in transfer_columns if c not in teacher.training_columns]
        raise HyperparameterError(
            TEACHER_DATA_KEY,
            f"the teacher's training rows lack column(s) {', '.join(missing)}, which the "
            "student or teacher reads",
        )
    return teacher.training_rows


def _check_shape(config: TrainingConfig, shape: CheckpointShape) -> None:
    wanted = (
        config.layers
        if isinstance(config.layers, int)
        else (max(config.layers) + 1 if config.layers else None)
    )
    if wanted is not None and shape.layers is not None and wanted > shape.layers:
        raise HyperparameterError(
            LAYERS_KEY,
            f"the checkpoint has {shape.layers} encoder layers; asked for {config.layers}",
        )
    if config.intermediate_size is None:
        return
    if shape.intermediate_size is None:
        raise HyperparameterError(
            INTERMEDIATE_SIZE_KEY,
            "the checkpoint's architecture names no feed-forward width, so it cannot be narrowed",
        )
    if config.intermediate_size > shape.intermediate_size:
        raise HyperparameterError(
            INTERMEDIATE_SIZE_KEY,
            f"the checkpoint's feed-forward layers have {shape.intermediate_size} neurons; "
            f"asked for {config.intermediate_size}",
        )


def plan_job(
    kind: str,
    hyperparameters: Mapping[str, Any],
    *,
    label: str,
    text_columns: list[str],
    problem_type: str,
    labels: list[str],
    train_columns: Sequence[str],
    teacher: TeacherFacts | None,
    has_unlabeled: bool,
    checkpoint_shape: Callable[[str], CheckpointShape],
) -> JobPlan:
    """Validate a job and return its plan; raise HyperparameterError (a key at fault) or
    PlanError (another field) on the first problem.

    `checkpoint_shape(name)` resolves the student's checkpoint and reads its depth and
    feed-forward width (None where the architecture does not say); it may raise BackboneError,
    OSError or ValueError for a checkpoint that cannot be used."""
    if kind not in JOB_KINDS:
        raise PlanError("kind", "Unknown job kind", f"kind must be one of {', '.join(JOB_KINDS)}")
    config = parse_hyperparameters(hyperparameters, distill=kind == "distill")
    if kind == "distill":
        if teacher is None:
            raise PlanError(
                "teacher_model", "Teacher required", "a distill job needs teacher_model"
            )
        _check_teacher(teacher, problem_type, labels, train_columns)
    else:
        if teacher is not None:
            raise PlanError(
                "teacher_model",
                "Unexpected teacher",
                "a finetune job trains without a teacher; use kind=distill",
            )
        given = [k for k in hyperparameters if k in DISTILLER_KEYS]
        if given:
            raise HyperparameterError(given[0], "distiller settings apply to distill jobs only")
        if has_unlabeled:
            raise PlanError(
                "unlabeled_dataset",
                "Transfer set needs a teacher",
                "unlabelled rows learn only from a teacher; use kind=distill",
            )
    # The check the training loop makes when it picks its best checkpoint, made now.
    selection_metric(config, problem_type)
    # The refusals the training loop makes (pairs on a one-column task), now; the row counts
    # that pick the default recipe do not matter to them.
    made_copies(
        config,
        text_columns,
        has_teacher=teacher is not None,
        labelled_rows=0,
        has_transfer_set=has_unlabeled,
    )
    transfer_columns = sorted(set(text_columns) | set(teacher.text_columns if teacher else []))
    teacher_rows = None
    if teacher is not None:
        teacher_rows = _teacher_rows(teacher, transfer_columns, config.transfer_from_teacher_data)
    try:
        shape = checkpoint_shape(config.checkpoint_name)
    except (BackboneError, OSError, ValueError) as exc:
        raise HyperparameterError(CHECKPOINT_KEY, str(exc)) from None
    _check_shape(config, shape)
    return JobPlan(
        kind=kind,
        config=config,
        label=label,
        text_columns=list(text_columns),
        problem_type=problem_type,
        # The student adopts the teacher's label order, so their logits line up.
        labels=list(teacher.labels) if teacher is not None else list(labels),
        transfer_columns=transfer_columns,
        teacher_training_rows=teacher_rows,
    )
