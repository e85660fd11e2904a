"""Real torch training of tiny models: fine-tune, distill, layer cuts, bundles."""

from pathlib import Path

import pytest
import torch

from distillery.backbones import (
    BackboneError,
    keep_layers,
    load_classifier,
    narrow_feed_forward,
    resolve_checkpoint,
)
from distillery.bundle import BundleMetadata, read_metadata, save_bundle
from distillery.hyperparams import parse_hyperparameters
from distillery.predictor import Predictor
from distillery.training import (
    CheckpointPolicy,
    TrainingCallbacks,
    TrainingCancelled,
    TrainingData,
    train,
)
from tests.factories import qnli_like_frame

LABELS = ["entailment", "not_entailment"]
FAST = {"optimization.learning_rate": 3e-3, "optimization.max_epochs": 12, "env.batch_size": 16}


def qnli_data(rows: int = 160) -> TrainingData:
    return TrainingData(
        train=qnli_like_frame(rows, seed=1),
        tuning=qnli_like_frame(40, seed=2),
        text_columns=["question", "sentence"],
        label_column="label",
        problem_type="binary",
        labels=LABELS,
    )


@pytest.fixture(scope="module")
def trained_teacher(tiny_teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = train(parse_hyperparameters(FAST), qnli_data(), tiny_teacher_dir)
    metadata = BundleMetadata(
        "binary", LABELS, ["question", "sentence"], metrics={"tuning": result.tuning_metrics}
    )
    folder = tmp_path_factory.mktemp("bundles") / "teacher"
    return save_bundle(result.backbone.model, result.backbone.tokenizer, metadata, folder)


def test_finetune_learns_and_bundle_round_trips(trained_teacher: Path) -> None:
    predictor = Predictor(trained_teacher)
    test = qnli_like_frame(80, seed=3)
    assert predictor.evaluate(test, "label")["accuracy"] >= 0.9
    assert read_metadata(trained_teacher).labels == LABELS
    assert set(predictor.predict(test.head(4))) <= set(LABELS)


def test_training_is_reproducible_on_cpu(tiny_student_dir: Path) -> None:
    config = parse_hyperparameters({**FAST, "optimization.max_epochs": 1})
    first = train(config, qnli_data(64), tiny_student_dir)
    second = train(config, qnli_data(64), tiny_student_dir)

    def losses(result):
        return [entry["loss"] for entry in result.history if entry["kind"] == "train"]

    assert losses(first) == losses(second)
    for a, b in zip(
        first.backbone.model.parameters(), second.backbone.model.parameters(), strict=True
    ):
        assert torch.equal(a, b)


def test_distill_records_soft_loss(trained_teacher: Path, tiny_student_dir: Path) -> None:
    config = parse_hyperparameters(
        {**FAST, "distiller.temperature": 2.0, "distiller.augmentation_pair_copies": 2}
    )
    result = train(config, qnli_data(), tiny_student_dir, teacher=Predictor(trained_teacher))
    logged = [entry for entry in result.history if entry["kind"] == "train"]
    assert all("soft_loss" in entry and "hard_loss" in entry for entry in logged)
    assert result.info["teacher_mode"] == "cached"
    # Train rows, the recombined pairs, tuning rows; no cache.
    assert result.info["teacher_outputs"] == ["computed", "computed", "computed"]
    assert logged[-1]["soft_loss"] < logged[0]["soft_loss"]


def test_cancellation_stops_the_loop(tiny_student_dir: Path) -> None:
    class StopAtOnce(TrainingCallbacks):
        def should_stop(self) -> bool:
            return True

    with pytest.raises(TrainingCancelled, match="step 1"):
        train(parse_hyperparameters(FAST), qnli_data(64), tiny_student_dir, callbacks=StopAtOnce())


def test_a_spent_time_budget_ends_training_with_the_best_weights_so_far(
    tiny_student_dir: Path,
) -> None:
    class WrapUpAtStepThree(TrainingCallbacks):
        steps = 0

        def should_wrap_up(self) -> bool:
            self.steps += 1
            return self.steps >= 3

    # Validation would come at the end of each 4-step epoch: step 3 is scored as it wraps up.
    config = parse_hyperparameters({**FAST, "optimization.patience": 100})
    result = train(config, qnli_data(64), tiny_student_dir, callbacks=WrapUpAtStepThree())
    assert result.info["steps_run"] == 3 and result.info["wrapped_up_at_step"] == 3
    assert result.info["early_stopped"] is True
    validations = [entry for entry in result.history if entry["kind"] == "validation"]
    assert [entry["step"] for entry in validations] == [3]
    assert result.best_step == 3 and result.tuning_metrics is not None


def test_a_validation_asked_for_can_end_the_run_at_its_step(tiny_student_dir: Path) -> None:
    class StopAtTheFirstRung(TrainingCallbacks):
        """A search's early stopping: a validation it asked for decides the trial stops."""

        decided_at: int | None = None

        def validation_fractions(self) -> tuple[float, ...]:
            return (0.05,)

        def on_validation(
            self, step: int, epoch: float, values: dict[str, float], best_score: float
        ) -> None:
            self.decided_at = step

        def should_wrap_up(self) -> bool:
            return self.decided_at is not None

    # 48 steps of 4 per epoch: the rung's step 2 is no epoch's end, so only the request
    # validates there; the run ends at that very step, not one later.
    config = parse_hyperparameters({**FAST, "optimization.patience": 100})
    callbacks = StopAtTheFirstRung()
    result = train(config, qnli_data(64), tiny_student_dir, callbacks=callbacks)
    assert result.info["total_steps"] == 48 and callbacks.decided_at == 2
    assert result.info["steps_run"] == 2 and result.info["wrapped_up_at_step"] == 2
    validations = [entry for entry in result.history if entry["kind"] == "validation"]
    assert [entry["step"] for entry in validations] == [2] and result.best_step == 2


def test_keep_layers_copies_the_chosen_blocks(tiny_teacher_dir: Path) -> None:
    full = load_classifier(tiny_teacher_dir, num_labels=2).model
    cut = load_classifier(tiny_teacher_dir, num_labels=2, layers=[1]).model
    assert cut.config.num_hidden_layers == 1
    assert len(cut.bert.encoder.layer) == 1
    for a, b in zip(
        cut.bert.encoder.layer[0].parameters(), full.bert.encoder.layer[1].parameters(), strict=True
    ):
        assert torch.equal(a, b)
    with pytest.raises(BackboneError, match="has 2 encoder layers"):
        keep_layers(full, [0, 5])


def test_narrowing_drops_the_weakest_feed_forward_neurons_first(trained_teacher: Path) -> None:
    model = load_classifier(trained_teacher, num_labels=2, layers=[1]).model.eval()
    block = model.bert.encoder.layer[0]
    width = block.intermediate.dense.out_features
    # Neurons whose output weights are zero add nothing to the block: dropping exactly those
    # must leave the model's answers as they were.
    dead = torch.arange(0, width, 3)
    with torch.no_grad():
        block.output.dense.weight[:, dead] = 0.0
    encoded = {"input_ids": torch.tensor([[2, 7, 9, 11, 3]]), "attention_mask": torch.ones(1, 5)}
    before = model(**encoded).logits
    narrow_feed_forward(model, width - len(dead))
    assert model.config.intermediate_size == width - len(dead)
    assert block.intermediate.dense.out_features == width - len(dead)
    torch.testing.assert_close(model(**encoded).logits, before)
    with pytest.raises(BackboneError, match=f"the checkpoint has {width - len(dead)}"):
        narrow_feed_forward(model, width)


def test_a_narrowed_student_trains_saves_and_loads_as_its_own_checkpoint(
    trained_teacher: Path, tmp_path: Path
) -> None:
    keys = {**FAST, "optimization.max_epochs": 1, "model.hf_text.layers": [0]}
    config = parse_hyperparameters({**keys, "model.hf_text.intermediate_size": 16})
    result = train(config, qnli_data(32), trained_teacher)
    metadata = BundleMetadata("binary", LABELS, ["question", "sentence"])
    folder = save_bundle(result.backbone.model, result.backbone.tokenizer, metadata, tmp_path)
    loaded = Predictor(folder).model
    assert loaded.config.intermediate_size == 16
    assert loaded.bert.encoder.layer[0].output.dense.in_features == 16


def test_unknown_checkpoint_names_are_refused_without_a_hub() -> None:
    with pytest.raises(BackboneError, match="model hubs are not used"):
        resolve_checkpoint("bert-base-uncased")


class CrashAfterCheckpoints(TrainingCallbacks):
    """Simulates a worker dying right after its n-th checkpoint."""

    def __init__(self, crash_after: int) -> None:
        self.crash_after, self.saved = crash_after, 0

    def on_checkpoint(self, step: int, epoch: float) -> None:
        self.saved += 1
        if self.saved == self.crash_after:
            raise RuntimeError(f"worker lost after step {step}")


def test_resumed_run_ends_where_an_uninterrupted_one_does(
    tiny_student_dir: Path, tmp_path: Path
) -> None:
    # 64 training rows with micro-batches of 8 and accumulation 2: 4 steps an epoch; checkpoints
    # every 3 steps land both mid-epoch and at epoch ends.
    config = parse_hyperparameters(
        {**FAST, "optimization.max_epochs": 3, "env.batch_size": 16, "env.per_gpu_batch_size": 8}
    )
    data = qnli_data(64)
    uninterrupted = train(config, data, tiny_student_dir)

    policy = CheckpointPolicy(folder=tmp_path / "checkpoint", every_steps=3)
    with pytest.raises(RuntimeError, match="worker lost after step 3"):
        train(
            config,
            data,
            tiny_student_dir,
            checkpoints=policy,
            callbacks=CrashAfterCheckpoints(crash_after=1),
        )
    with pytest.raises(RuntimeError, match="worker lost after step 6"):
        train(
            config,
            data,
            tiny_student_dir,
            checkpoints=policy,
            callbacks=CrashAfterCheckpoints(crash_after=2),
        )
    resumed = train(config, data, tiny_student_dir, checkpoints=policy)

    assert resumed.info["resumed_from_step"] == 6
    assert resumed.best_step == uninterrupted.best_step
    assert resumed.tuning_metrics == uninterrupted.tuning_metrics
    for a, b in zip(
        resumed.backbone.model.parameters(), uninterrupted.backbone.model.parameters(), strict=True
    ):
        assert torch.equal(a, b)


def test_rows_longer_than_the_model_has_positions_are_cut_to_fit(
    tmp_path: Path, tiny_student_dir: Path
) -> None:
    # Tiny BERT has 64 positions and MPNet spends two of its 80 on the padding offset; the
    # default max_text_len (128) must not run either past its position table.
    from tests.factories import save_tiny_mpnet

    data = qnli_data(32)
    long_sentences = data.train["sentence"].map(lambda text: " ".join([text] * 30))
    data.train["sentence"] = long_sentences
    config = parse_hyperparameters({**FAST, "optimization.max_epochs": 1})
    for folder, positions in ((tiny_student_dir, 64), (save_tiny_mpnet(tmp_path / "mpnet"), 78)):
        result = train(config, data, folder)
        metadata = BundleMetadata("binary", LABELS, ["question", "sentence"])
        bundle = save_bundle(
            result.backbone.model, result.backbone.tokenizer, metadata, tmp_path / folder.name
        )
        predictor = Predictor(bundle)
        assert metadata.max_text_len == 128 and predictor.max_text_len == positions
        encoded = predictor.encode(data.train.head(4))
        assert max(len(row["input_ids"]) for row in encoded) == positions
        assert len(predictor.predict(data.train.head(4))) == 4
