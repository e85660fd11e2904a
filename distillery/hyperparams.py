"""AutoMM-style dotted hyperparameter keys -> one typed, validated `TrainingConfig`.

Keys are accepted as AutoGluon's MultiModalPredictor spells them (`optimization.max_epochs`,
`env.batch_size`, `distiller.temperature`, ...), including the older `optim.*` spellings. An
unknown key is an error that lists the known ones: a silently ignored typo would train the wrong
model for hours.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

DEFAULT_CHECKPOINT = "sentence-transformers/all-MiniLM-L6-v2"
LR_SCHEDULES = ("linear_decay", "cosine_decay", "constant")
SOFT_LABEL_LOSS_TYPES = ("kl", "cross_entropy", "mse")
FEATURE_LOSS_TYPES = ("mse", "cosine")
SOFTMAX_REGRESSION_LOSS_TYPES = ("mse", "cross_entropy")
INTERMEDIATE_POOLING = ("mean", "cls", "tokens")
TEACHER_MODES = ("auto", "cached", "online")
VALIDATION_METRICS = ("accuracy", "f1", "f1_macro", "roc_auc", "log_loss", "rmse", "mae", "r2")
# Checkpoint name that means "the distill job's own teacher" (to cut a student from it).
TEACHER_CHECKPOINT = "teacher"


class HyperparameterError(ValueError):
    """A hyperparameter is unknown or out of range; `key` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class TrainingConfig:
    checkpoint_name: str = DEFAULT_CHECKPOINT
    # Keep these encoder layers of the checkpoint: an int keeps the first N, a list picks layers
    # by index (DistilBERT-style students cut from a deeper model). None keeps them all.
    layers: int | list[int] | None = None
    # Narrow each kept layer's feed-forward block to this many neurons (the largest by weight);
    # None keeps the checkpoint's width.
    intermediate_size: int | None = None
    max_text_len: int = 128
    # AutoMM's default, for training on labels. 5e-5 (Hugging Face's) left a distilled 2-layer
    # student at its init-only accuracy on QNLI: 0.578 against 0.711 at 1e-4 (bench/results/
    # auto.json's reference job against quality.json's 2-layer seed 0, same rows and epochs).
    # A distill job that learns from the teacher's outputs defaults to DISTILL_LEARNING_RATE.
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    lr_schedule: str = "linear_decay"
    max_epochs: int = 3
    max_steps: int = -1
    patience: int = 10
    val_check_interval: float = 1.0
    gradient_clip_val: float = 1.0
    batch_size: int = 16
    per_device_batch_size: int = 16
    seed: int = 0
    validation_metric: str | None = None
    temperature: float = 5.0
    hard_label_weight: float = 0.1
    soft_label_weight: float = 1.0
    soft_label_loss_type: str = "kl"
    output_feature_loss_type: str = "mse"
    output_feature_loss_weight: float = 0.0
    softmax_regression_loss_type: str = "mse"
    softmax_regression_weight: float = 0.0
    rkd_distance_loss_weight: float = 0.0
    rkd_angle_loss_weight: float = 0.0
    intermediate_loss_type: str = "mse"
    intermediate_loss_weight: float = 0.0
    # Teacher hidden-state index (1 = first layer) for each student layer; None maps uniformly.
    intermediate_layer_map: list[int] | None = None
    intermediate_pooling: str = "mean"
    attention_loss_weight: float = 0.0
    teacher_mode: str = "auto"
    # Noisy copies of each labelled row, labelled by the teacher only (distillery/augment.py).
    # None: the default recipe (distillery/training.py's `made_copies`).
    augmentation_copies: int | None = None
    augmentation_word_probability: float = 0.1
    # Pairs recombined across rows (a question with another row's sentence), teacher-labelled.
    # None: the default recipe, as for augmentation_copies.
    augmentation_pair_copies: int | None = None
    # The teacher's own training rows join the transfer set, unlabelled. None: when the
    # teacher's lineage knows them (it was trained here); True insists, False never.
    transfer_from_teacher_data: bool | None = None

    @property
    def needs_teacher_features(self) -> bool:
        """Feature-level terms on the final layer (cacheable, like the logits)."""
        return any(
            weight > 0
            for weight in (
                self.output_feature_loss_weight,
                self.softmax_regression_weight,
                self.rkd_distance_loss_weight,
                self.rkd_angle_loss_weight,
            )
        )

    @property
    def needs_online_teacher(self) -> bool:
        """Intermediate-layer terms need the teacher's every layer for every batch."""
        return self.intermediate_loss_weight > 0 or self.attention_loss_weight > 0

    @property
    def teacher_runs_online(self) -> bool:
        return self.teacher_mode == "online" or self.needs_online_teacher

    @property
    def gradient_accumulation_steps(self) -> int:
        return max(1, -(-self.batch_size // self.per_device_batch_size))


def _positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _int_or_minus_one(value: Any) -> int:
    if value == -1 and not isinstance(value, bool):
        return -1
    return _positive_int(value)


def _non_negative_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be an integer >= 0, got {value!r}")
    return value


def _number(low: float, high: float, *, low_open: bool = False) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a number, got {value!r}")
        too_low = value <= low if low_open else value < low
        if too_low or value > high:
            bracket = "(" if low_open else "["
            raise ValueError(f"must be in {bracket}{low}, {high}], got {value}")
        return float(value)

    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}; got {value!r}")
        return str(value)

    return check


def _non_empty_string(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value.strip()


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _or_auto(validate: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """None (the default) means the job decides; see the field's comment."""

    def check(value: Any) -> Any:
        return None if value is None else validate(value)

    return check


def _optional_one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value is None else _one_of(choices)(value)

    return check


def _soft_label_loss_type(value: Any) -> str:
    # AutoMM's "" means "pick by problem type"; ours picks KL (MSE for regression, in the loss).
    return "kl" if value == "" else _one_of(SOFT_LABEL_LOSS_TYPES)(value)


def _teacher_layer_list(value: Any) -> list[int] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 1 for i in value)
    ):
        raise ValueError(
            "must be a list with one teacher layer (1 = first) per student layer, e.g. [2, 4, 6]"
        )
    return list(value)


def _layers(value: Any) -> int | list[int] | None:
    if value is None:
        return None
    if isinstance(value, list):
        if not value or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
            raise ValueError("must be a non-empty list of layer indices, e.g. [0, 2, 4]")
        if any(i < 0 for i in value) or len(set(value)) != len(value):
            raise ValueError(f"layer indices must be distinct and >= 0, got {value}")
        return sorted(value)
    return _positive_int(value)


# key -> (TrainingConfig field, validator). Aliases map to the same field.
_SPECS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "model.hf_text.checkpoint_name": ("checkpoint_name", _non_empty_string),
    "model.hf_text.layers": ("layers", _layers),
    "model.hf_text.intermediate_size": ("intermediate_size", _or_auto(_positive_int)),
    "model.hf_text.max_text_len": ("max_text_len", _positive_int),
    "optimization.learning_rate": ("learning_rate", _number(0.0, 1.0, low_open=True)),
    "optimization.weight_decay": ("weight_decay", _number(0.0, 1.0)),
    "optimization.warmup_steps": ("warmup_fraction", _number(0.0, 1.0)),
    "optimization.lr_schedule": ("lr_schedule", _one_of(LR_SCHEDULES)),
    "optimization.max_epochs": ("max_epochs", _positive_int),
    "optimization.max_steps": ("max_steps", _int_or_minus_one),
    "optimization.patience": ("patience", _non_negative_int),
    "optimization.val_check_interval": ("val_check_interval", _number(0.0, 1.0, low_open=True)),
    "optimization.gradient_clip_val": ("gradient_clip_val", _number(0.0, 1e6)),
    "env.batch_size": ("batch_size", _positive_int),
    "env.per_gpu_batch_size": ("per_device_batch_size", _positive_int),
    "env.seed": ("seed", _non_negative_int),
    "distiller.temperature": ("temperature", _number(0.0, 1000.0, low_open=True)),
    "distiller.hard_label_weight": ("hard_label_weight", _number(0.0, 1000.0)),
    "distiller.soft_label_weight": ("soft_label_weight", _number(0.0, 1000.0)),
    "distiller.soft_label_loss_type": ("soft_label_loss_type", _soft_label_loss_type),
    "distiller.output_feature_loss_type": ("output_feature_loss_type", _one_of(FEATURE_LOSS_TYPES)),
    "distiller.output_feature_loss_weight": ("output_feature_loss_weight", _number(0.0, 1000.0)),
    "distiller.softmax_regression_loss_type": (
        "softmax_regression_loss_type",
        _one_of(SOFTMAX_REGRESSION_LOSS_TYPES),
    ),
    "distiller.softmax_regression_weight": ("softmax_regression_weight", _number(0.0, 1000.0)),
    "distiller.rkd_distance_loss_weight": ("rkd_distance_loss_weight", _number(0.0, 1000.0)),
    "distiller.rkd_angle_loss_weight": ("rkd_angle_loss_weight", _number(0.0, 1000.0)),
    "distiller.intermediate_loss_type": ("intermediate_loss_type", _one_of(FEATURE_LOSS_TYPES)),
    "distiller.intermediate_loss_weight": ("intermediate_loss_weight", _number(0.0, 1000.0)),
    "distiller.intermediate_layer_map": ("intermediate_layer_map", _teacher_layer_list),
    "distiller.intermediate_pooling": ("intermediate_pooling", _one_of(INTERMEDIATE_POOLING)),
    "distiller.attention_loss_weight": ("attention_loss_weight", _number(0.0, 1000.0)),
    "distiller.teacher_mode": ("teacher_mode", _one_of(TEACHER_MODES)),
    "distiller.augmentation_copies": ("augmentation_copies", _or_auto(_non_negative_int)),
    "distiller.augmentation_word_probability": (
        "augmentation_word_probability",
        _number(0.0, 0.5),
    ),
    "distiller.augmentation_pair_copies": (
        "augmentation_pair_copies",
        _or_auto(_non_negative_int),
    ),
    "distiller.transfer_from_teacher_data": ("transfer_from_teacher_data", _or_auto(_boolean)),
    "optimization.validation_metric": (
        "validation_metric",
        _optional_one_of(VALIDATION_METRICS),
    ),
}
for _key in [k for k in _SPECS if k.startswith("optimization.")]:
    _SPECS["optim." + _key.removeprefix("optimization.")] = _SPECS[_key]
_SPECS["optim.lr"] = _SPECS["optimization.learning_rate"]
_SPECS["distiller.softmax_regression_loss_weight"] = _SPECS["distiller.softmax_regression_weight"]

KNOWN_KEYS: tuple[str, ...] = tuple(sorted(_SPECS))
DISTILLER_KEYS: tuple[str, ...] = tuple(k for k in KNOWN_KEYS if k.startswith("distiller."))

# Recombined pairs per labelled row a distill job makes unless told. Measured on one seed only
# (bench/quality.py's transfer-set arms use it): 4 copies lifted a 2-layer QNLI student 3 points.
AUTO_PAIR_COPIES = 2
# With no transfer set, a distill job's few labels make rows for the teacher to label, as many as
# bench/quality.py's transfer set holds: 6 recombined pairs and 4 noisy copies per labelled row.
# bench/terms.py ranked that first on the tuning rows of the narrowed 1+4 MiniLM cut (0.795,
# against 0.765 for 2 noisy copies and 0.75 for 2 pairs alone), and bench/quality.py's
# labels-only arm of that cut uses it.
LABELS_ONLY_PAIR_COPIES = 6
LABELS_ONLY_NOISY_COPIES = 4
# Above this many labelled rows the labels are a transfer set of their own, and 11 rows per
# label (against 3) would cost too much: a bound on cost, not a measured optimum.
LABELS_ONLY_MAX_ROWS = 10_000
# A distill job's learning rate unless told, where the teacher's outputs count. bench/quality.py's
# grid {1e-4, 3e-4}, chosen on tuning rows, took 3e-4 for every distilled arm of the 1+4 cut of
# MiniLM-L6 on 3 seeds (4-9 points better on the tuning rows, labels only) and 1e-4 for the
# labels-only controls in 11 runs of 12. A likely reason, not measured: soft targets are a
# smoother signal than 800 hard labels, so a larger step does not overfit them.
DISTILL_LEARNING_RATE = 3e-4


def parse_hyperparameters(
    hyperparameters: Mapping[str, Any] | None, *, distill: bool = False
) -> TrainingConfig:
    """Validate dotted keys and return the config; raise `HyperparameterError` on the first bad key.

    Two spellings of one setting (`optim.lr` and `optimization.learning_rate`) may not both be
    given: which one wins would be a guess. `distill` (a distill job's keys) picks that job
    kind's defaults where they differ: the learning rate, when the teacher's outputs count.
    """
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, raw in (hyperparameters or {}).items():
        if key not in _SPECS:
            close = difflib.get_close_matches(key, KNOWN_KEYS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise HyperparameterError(
                key, f"unknown hyperparameter; {hint}known keys are: {', '.join(KNOWN_KEYS)}"
            )
        field_name, validate = _SPECS[key]
        if field_name in given_as:
            raise HyperparameterError(key, f"given twice, also as '{given_as[field_name]}'")
        try:
            values[field_name] = validate(raw)
        except ValueError as exc:
            raise HyperparameterError(key, str(exc)) from None
        given_as[field_name] = key
    if "per_device_batch_size" not in values:
        # As AutoMM does: the per-device default never exceeds the batch size, so
        # {"env.batch_size": 8} alone means 8 rows per step on one device.
        batch_size = values.get("batch_size", TrainingConfig.batch_size)
        values["per_device_batch_size"] = min(TrainingConfig.per_device_batch_size, batch_size)
    config = TrainingConfig(**values)
    if distill and "learning_rate" not in values and config.soft_label_weight > 0:
        config = replace(config, learning_rate=DISTILL_LEARNING_RATE)
    if config.teacher_mode == "cached" and config.needs_online_teacher:
        raise HyperparameterError(
            "distiller.teacher_mode",
            "intermediate-layer and attention losses need the teacher online; use auto or online",
        )
    if config.per_device_batch_size > config.batch_size:
        raise HyperparameterError(
            "env.per_gpu_batch_size",
            f"{config.per_device_batch_size} is larger than env.batch_size ({config.batch_size})",
        )
    return config


def config_to_hyperparameters(config: TrainingConfig) -> dict[str, Any]:
    """The full resolved config, spelled with canonical keys (for job records and metadata)."""
    # The first spelling registered for a field is its canonical one (aliases come later).
    canonical: dict[str, str] = {}
    for key, (field_name, _) in _SPECS.items():
        canonical.setdefault(field_name, key)
    return {canonical[f.name]: getattr(config, f.name) for f in fields(config)}
