import pytest

from distillery.hyperparams import (
    DISTILL_LEARNING_RATE,
    KNOWN_KEYS,
    HyperparameterError,
    config_to_hyperparameters,
    parse_hyperparameters,
)


def test_defaults_and_automm_keys() -> None:
    config = parse_hyperparameters(
        {
            "model.hf_text.checkpoint_name": "/models/x",
            "optimization.max_epochs": 2,
            "optim.lr": 1e-4,
            "env.batch_size": 32,
            "env.per_gpu_batch_size": 8,
            "distiller.temperature": 2,
        }
    )
    assert config.checkpoint_name == "/models/x"
    assert config.max_epochs == 2
    assert config.learning_rate == 1e-4
    assert config.gradient_accumulation_steps == 4
    assert config.temperature == 2.0
    assert parse_hyperparameters(None).soft_label_loss_type == "kl"


def test_learning_rate_default_depends_on_what_the_job_learns_from() -> None:
    """Labels alone take AutoMM's 1e-4; a distill job learning from the teacher's outputs takes
    the rate bench/quality.py chose for it, unless a rate is given in either spelling."""
    assert parse_hyperparameters({}).learning_rate == 1e-4
    assert parse_hyperparameters({}, distill=True).learning_rate == DISTILL_LEARNING_RATE == 3e-4
    labels_only = {"distiller.soft_label_weight": 0.0, "distiller.hard_label_weight": 1.0}
    assert parse_hyperparameters(labels_only, distill=True).learning_rate == 1e-4
    assert parse_hyperparameters({"optim.lr": 2e-5}, distill=True).learning_rate == 2e-5
    given = {"optimization.learning_rate": 1e-4}
    assert parse_hyperparameters(given, distill=True).learning_rate == 1e-4


def test_unknown_key_lists_known_keys_and_suggests() -> None:
    with pytest.raises(HyperparameterError) as error:
        parse_hyperparameters({"optimization.max_epoch": 2})
    assert error.value.key == "optimization.max_epoch"
    assert "did you mean 'optimization.max_epochs'" in str(error.value)
    assert all(key in str(error.value) for key in KNOWN_KEYS)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("optimization.max_epochs", -1),
        ("optimization.max_epochs", 0),
        ("optimization.max_epochs", "2"),
        ("optimization.max_epochs", True),
        ("optimization.learning_rate", 0),
        ("distiller.soft_label_loss_type", "hinge"),
        ("model.hf_text.layers", [1, 1]),
        ("model.hf_text.checkpoint_name", ""),
    ],
)
def test_bad_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(HyperparameterError) as error:
        parse_hyperparameters({key: value})
    assert error.value.key == key


def test_two_spellings_of_one_setting_are_refused() -> None:
    with pytest.raises(HyperparameterError, match="given twice"):
        parse_hyperparameters({"optim.lr": 1e-4, "optimization.learning_rate": 2e-4})


def test_micro_batch_larger_than_batch_is_refused() -> None:
    with pytest.raises(HyperparameterError) as error:
        parse_hyperparameters({"env.batch_size": 8, "env.per_gpu_batch_size": 16})
    assert error.value.key == "env.per_gpu_batch_size"


def test_resolved_config_round_trips() -> None:
    config = parse_hyperparameters({"model.hf_text.layers": [0, 2], "optimization.max_epochs": 3})
    assert parse_hyperparameters(config_to_hyperparameters(config)) == config
