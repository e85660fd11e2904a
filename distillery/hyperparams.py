"""AutoMM-style dotted hyperparameter keys -> one typed, validated `TrainingConfig`.

Keys are accepted as AutoGluon's MultiModalPredictor spells them (`optimization.max_epochs`,
`env.batch_size`, `distiller.temperature`, ...), including the older `optim.*` spellings. An
unknown key is an error that lists the known ones: a silently ignored typo would train the wrong
model for hours.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_CHECKPOINT = "sentence-transformers/all-MiniLM-L6-v2"
LR_SCHEDULES = ("linear_decay", "cosine_decay", "constant")
SOFT_LABEL_LOSS_TYPES = ("kl", "cross_entropy", "mse")


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
    max_text_len: int = 128
    learning_rate: float = 5e-5
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
    temperature: float = 5.0
    hard_label_weight: float = 0.1
    soft_label_weight: float = 1.0
    soft_label_loss_type: str = "kl"

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
    "distiller.soft_label_loss_type": ("soft_label_loss_type", _one_of(SOFT_LABEL_LOSS_TYPES)),
}
for _key in [k for k in _SPECS if k.startswith("optimization.")]:
    _SPECS["optim." + _key.removeprefix("optimization.")] = _SPECS[_key]
_SPECS["optim.lr"] = _SPECS["optimization.learning_rate"]

KNOWN_KEYS: tuple[str, ...] = tuple(sorted(_SPECS))
DISTILLER_KEYS: tuple[str, ...] = tuple(k for k in KNOWN_KEYS if k.startswith("distiller."))


def parse_hyperparameters(hyperparameters: Mapping[str, Any] | None) -> TrainingConfig:
    """Validate dotted keys and return the config; raise `HyperparameterError` on the first bad key.

    Two spellings of one setting (`optim.lr` and `optimization.learning_rate`) may not both be
    given: which one wins would be a guess.
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
    config = TrainingConfig(**values)
    if config.per_device_batch_size > config.batch_size:
        raise HyperparameterError(
            "env.per_gpu_batch_size",
            f"{config.per_device_batch_size} is larger than env.batch_size ({config.batch_size})",
        )
    return config


def config_to_hyperparameters(config: TrainingConfig) -> dict[str, Any]:
    """The full resolved config, spelled with canonical keys (for job records and metadata)."""
    canonical = {
        field_name: key for key, (field_name, _) in _SPECS.items() if not key.startswith("optim.")
    }
    return {canonical[f.name]: getattr(config, f.name) for f in fields(config)}
