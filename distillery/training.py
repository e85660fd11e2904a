"""The training loop: fine-tune a classifier, or distill one from a teacher.

Written out top to bottom on purpose (see shared/ARCHITECTURE.md): every knob of the loop is
visible here, and callers hook in through `TrainingCallbacks` for progress, cancellation and
logging. What distillation adds to the loss lives in distillery/distill.py.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from distillery.augment import augmented_copies, recombined_pairs
from distillery.backbones import Backbone, load_classifier, usable_text_length
from distillery.checkpoints import LoopState, has_checkpoint, load_checkpoint, save_checkpoint
from distillery.distill import (
    DistillationObjective,
    TeacherRun,
    teacher_outputs_for,
)
from distillery.encoding import EncodedRow, collate, encode_rows
from distillery.hyperparams import (
    AUTO_PAIR_COPIES,
    LABELS_ONLY_MAX_ROWS,
    LABELS_ONLY_NOISY_COPIES,
    LABELS_ONLY_PAIR_COPIES,
    HyperparameterError,
    TrainingConfig,
)
from distillery.inference import compute_outputs, softmax
from distillery.losses import hard_label_loss, soft_label_loss
from distillery.metrics import SELECTION_METRIC, classification_metrics, regression_metrics
from distillery.predictor import Predictor, label_ids
from distillery.teacher_cache import TeacherCache, TeacherOutputs

# With no tuning table, this share of the training rows is held out to pick the best checkpoint
# and stop early, as AutoMM does.
HOLDOUT_FRACTION = 0.1
MIN_ROWS_FOR_HOLDOUT = 10
LOG_EVERY_STEPS = 10
# Target of unlabelled rows in a transfer set: cross-entropy skips it, and so do we.
IGNORED_LABEL = -100


class TrainingCancelled(Exception):
    """Raised inside the loop when `TrainingCallbacks.should_stop` says so."""


class TrainingCallbacks:
    """Hooks the loop calls; override what you need. All run in the training thread."""

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None: ...

    def on_log(
        self, step: int, total_steps: int, epoch: float, values: dict[str, float]
    ) -> None: ...

    def on_validation(
        self, step: int, epoch: float, values: dict[str, float], best_score: float
    ) -> None:
        """`best_score`: the selection metric's best so far (this validation's included)."""

    def on_checkpoint(self, step: int, epoch: float) -> None: ...

    def should_stop(self) -> bool:
        return False

    def should_wrap_up(self) -> bool:
        """True to end training now with the best weights so far (a compute budget is spent, or
        a search stopped this trial early): unlike `should_stop`, the run then succeeds. Asked
        after every step and right after every validation."""
        return False

    def validation_fractions(self) -> tuple[float, ...]:
        """Fractions of the run's steps at which to validate besides the usual schedule (a
        search's early-stopping rungs)."""
        return ()


@dataclass
class TrainingData:
    """Tables and column roles for one training run."""

    train: pd.DataFrame
    tuning: pd.DataFrame | None
    text_columns: list[str]
    label_column: str
    problem_type: str
    # Class names in output order; for a distill job this is the teacher's order.
    labels: list[str]
    # A transfer set: rows without labels that learn from the teacher only (distill jobs).
    unlabeled: pd.DataFrame | None = None


@dataclass
class CheckpointPolicy:
    """Save resumable state here at each epoch's end and every `every_steps` optimizer steps."""

    folder: Path
    every_steps: int = 200


@dataclass
class TrainingResult:
    backbone: Backbone
    tuning_metrics: dict[str, float]
    best_step: int
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def split_holdout(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if len(frame) < MIN_ROWS_FOR_HOLDOUT:
        return frame, None
    holdout = frame.sample(frac=HOLDOUT_FRACTION, random_state=seed)
    return frame.drop(holdout.index), holdout


def targets_tensor(frame: pd.DataFrame, data: TrainingData) -> torch.Tensor:
    column = frame[data.label_column]
    if data.problem_type == "regression":
        return torch.tensor(column.astype(float).to_numpy(), dtype=torch.float32)
    return torch.tensor(label_ids(column, data.labels), dtype=torch.long)


def evaluate_outputs(outputs: np.ndarray, targets: torch.Tensor, problem_type: str) -> dict:
    if problem_type == "regression":
        return regression_metrics(targets.numpy(), outputs[:, 0])
    return classification_metrics(targets.numpy(), softmax(outputs))


def agreement_terms(
    student_outputs: np.ndarray,
    teacher_outputs: np.ndarray,
    config: TrainingConfig,
    problem_type: str,
) -> dict[str, float]:
    """How close the student is to its teacher on the tuning rows."""
    student = torch.from_numpy(student_outputs)
    teacher = torch.from_numpy(teacher_outputs)
    values = {
        "soft_loss": float(
            soft_label_loss(
                student,
                teacher,
                problem_type=problem_type,
                temperature=config.temperature,
                loss_type=config.soft_label_loss_type,
            )
        )
    }
    if problem_type != "regression":
        values["teacher_agreement"] = float(
            (student_outputs.argmax(axis=1) == teacher_outputs.argmax(axis=1)).mean()
        )
    return values


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "cosine_decay":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return max(0.0, 1.0 - progress)


def make_optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.AdamW:
    # Biases and LayerNorm weights are not decayed: decaying them only hurts (BERT's recipe).
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )


def selection_metric(config: TrainingConfig, problem_type: str) -> tuple[str, bool]:
    """The tuning metric that picks the best checkpoint, and whether higher is better."""
    if config.validation_metric is None:
        return SELECTION_METRIC[problem_type]
    applicable = {
        "binary": ("accuracy", "f1", "roc_auc", "log_loss"),
        "multiclass": ("accuracy", "f1_macro", "log_loss"),
        "regression": ("rmse", "mae", "r2"),
    }[problem_type]
    if config.validation_metric not in applicable:
        raise HyperparameterError(
            "optimization.validation_metric",
            f"{config.validation_metric} does not apply to {problem_type} problems; "
            f"use one of {', '.join(applicable)}",
        )
    return config.validation_metric, config.validation_metric not in ("log_loss", "rmse", "mae")


def unlabeled_targets(count: int, problem_type: str) -> torch.Tensor:
    if problem_type == "regression":
        return torch.full((count,), float("nan"))
    return torch.full((count,), IGNORED_LABEL, dtype=torch.long)


@dataclass(frozen=True)
class MadeCopies:
    """How many rows a run makes from each labelled row (distillery/augment.py)."""

    noisy: int
    pairs: int

    @property
    def per_row(self) -> int:
        return self.noisy + self.pairs


def made_copies(
    config: TrainingConfig,
    text_columns: list[str],
    *,
    has_teacher: bool,
    labelled_rows: int,
    has_transfer_set: bool,
) -> MadeCopies:
    """The asked numbers of noisy copies and recombined pairs (refused without a teacher to label
    them, and pairs on a task of one text column); where neither is asked, the default recipe of
    a distill job on a task with pairs: with no transfer set and few labels,
    LABELS_ONLY_NOISY_COPIES noisy copies and LABELS_ONLY_PAIR_COPIES pairs, else
    AUTO_PAIR_COPIES pairs only."""
    noisy, pairs = config.augmentation_copies, config.augmentation_pair_copies
    if not has_teacher:
        for key, asked in (
            ("distiller.augmentation_copies", noisy),
            ("distiller.augmentation_pair_copies", pairs),
        ):
            if asked:
                raise HyperparameterError(
                    key, "made rows are labelled by the teacher: use a distill job"
                )
        return MadeCopies(0, 0)
    if pairs and len(text_columns) < 2:
        raise HyperparameterError(
            "distiller.augmentation_pair_copies",
            f"recombining pairs needs two or more text columns; this task has one "
            f"({text_columns[0]})",
        )
    if len(text_columns) < 2:
        return MadeCopies(noisy or 0, 0)
    labels_only = not has_transfer_set and labelled_rows <= LABELS_ONLY_MAX_ROWS
    if noisy is None and pairs is None and labels_only:
        return MadeCopies(LABELS_ONLY_NOISY_COPIES, LABELS_ONLY_PAIR_COPIES)
    return MadeCopies(noisy or 0, AUTO_PAIR_COPIES if pairs is None else pairs)


def made_rows(
    config: TrainingConfig, data: TrainingData, train_frame: pd.DataFrame, has_teacher: bool
) -> pd.DataFrame:
    """Rows made from the labelled ones (distillery/augment.py), for the teacher to label."""
    copies = made_copies(
        config,
        data.text_columns,
        has_teacher=has_teacher,
        labelled_rows=len(train_frame),
        has_transfer_set=data.unlabeled is not None and not data.unlabeled.empty,
    )
    made = []
    if copies.noisy:
        made.append(
            augmented_copies(
                train_frame,
                data.text_columns,
                copies.noisy,
                config.augmentation_word_probability,
                seed=config.seed,
            )
        )
    if copies.pairs:
        made.append(
            recombined_pairs(train_frame, data.text_columns, copies.pairs, seed=config.seed)
        )
    if not made:
        return train_frame[data.text_columns].iloc[:0]
    return pd.concat(made, ignore_index=True)


def train(
    config: TrainingConfig,
    data: TrainingData,
    backbone_path: Path,
    *,
    teacher: Predictor | None = None,
    teacher_cache: TeacherCache | None = None,
    teacher_fingerprint: str | None = None,
    callbacks: TrainingCallbacks | None = None,
    device: torch.device | None = None,
    checkpoints: CheckpointPolicy | None = None,
) -> TrainingResult:
    """Fine-tune (no teacher) or distill (with a teacher) a classifier; return the best one.

    The best checkpoint is chosen on the tuning table (or a holdout of the training rows) by
    `optimization.validation_metric` (accuracy, or RMSE for regression, by default), and
    training stops after `config.patience` validations without improvement. With `checkpoints`,
    an earlier run's saved state in that folder is resumed, and the resumed run ends with the
    same weights an uninterrupted one would have.

    Distillation: the teacher's outputs on the training, unlabelled and tuning rows come from
    `teacher_cache` when it has them (keyed by `teacher_fingerprint` and the rows), else are
    computed once and stored; the teacher runs on every batch only for intermediate-layer
    losses (or `distiller.teacher_mode=online`). Unlabelled rows add every loss but the hard one.
    """
    callbacks = callbacks or TrainingCallbacks()
    device = device or pick_device()
    seed_everything(config.seed)
    started = time.perf_counter()
    metric_name, higher_is_better = selection_metric(config, data.problem_type)
    if data.unlabeled is not None and teacher is None:
        raise HyperparameterError(
            "unlabeled_dataset", "unlabelled rows teach only through a teacher: use a distill job"
        )

    train_frame, tuning_frame = data.train, data.tuning
    if tuning_frame is None:
        train_frame, tuning_frame = split_holdout(train_frame, config.seed)
    unlabeled_frame = data.unlabeled if data.unlabeled is not None else train_frame.iloc[:0]
    augmented = made_rows(config, data, train_frame, teacher is not None)
    unlabeled_frame = pd.concat([unlabeled_frame[data.text_columns], augmented], ignore_index=True)
    augmented_rows = len(augmented)

    num_outputs = 1 if data.problem_type == "regression" else len(data.labels)
    id2label = dict(enumerate(data.labels)) if data.labels else None
    attention_maps = teacher is not None and config.attention_loss_weight > 0
    student = load_classifier(
        backbone_path,
        num_labels=num_outputs,
        id2label=id2label,
        problem_type=data.problem_type,
        layers=config.layers,
        intermediate_size=config.intermediate_size,
        # The fused attention kernels return no attention maps.
        attn_implementation="eager" if attention_maps else None,
    )
    model = student.model.to(device)
    pad_id = student.tokenizer.pad_token_id or 0
    max_text_len = usable_text_length(model, config.max_text_len)

    def encode(frame: pd.DataFrame) -> list[EncodedRow]:
        return encode_rows(student.tokenizer, frame, data.text_columns, max_text_len)

    # Labelled rows first, then unlabelled ones (their targets are ignored by the hard loss).
    train_rows = encode(train_frame) + encode(unlabeled_frame)
    train_targets = torch.cat(
        [
            targets_tensor(train_frame, data),
            unlabeled_targets(len(unlabeled_frame), data.problem_type),
        ]
    )
    labeled = torch.arange(len(train_rows)) < len(train_frame)
    tuning_rows = encode(tuning_frame) if tuning_frame is not None else None
    tuning_targets = targets_tensor(tuning_frame, data) if tuning_frame is not None else None

    objective: DistillationObjective | None = None
    teacher_logits = teacher_features = tuning_teacher_logits = None
    info: dict[str, Any] = {}
    if teacher is not None:
        teacher.model.to(device)
        if attention_maps:
            teacher.model.set_attn_implementation("eager")
        online = config.teacher_runs_online
        teacher_rows = None
        runs: list[TeacherRun] = []

        def outputs_for(frame: pd.DataFrame) -> TeacherOutputs:
            run = teacher_outputs_for(
                teacher,
                frame,
                data.text_columns,
                need_features=config.needs_teacher_features,
                cache=teacher_cache,
                teacher_fingerprint=teacher_fingerprint,
                batch_size=config.per_device_batch_size * 2,
                device=device,
            )
            runs.append(run)
            return run.outputs

        if online:
            all_rows = pd.concat([train_frame, unlabeled_frame], ignore_index=True)
            teacher_rows = teacher.encode(all_rows, data.text_columns)
        else:
            train_outputs = outputs_for(train_frame)
            unlabeled_outputs = outputs_for(unlabeled_frame) if len(unlabeled_frame) else None
            parts = [train_outputs] + ([unlabeled_outputs] if unlabeled_outputs else [])
            teacher_logits = torch.cat([part.logits for part in parts])
            if config.needs_teacher_features:
                teacher_features = torch.cat([part.features for part in parts])  # type: ignore[misc]
        if tuning_frame is not None:
            tuning_teacher_logits = outputs_for(tuning_frame).logits.numpy()
        objective = DistillationObjective(
            config, data.problem_type, model, teacher, train_rows, teacher_rows
        ).to(device)
        info.update(
            {
                "teacher_mode": "online" if online else "cached",
                "teacher_outputs": [run.source for run in runs],
                "teacher_inference_seconds": round(sum(run.seconds for run in runs), 3),
                "unlabeled_rows": len(unlabeled_frame),
                "augmented_rows": augmented_rows,
            }
        )
        if objective.layer_map:
            info["intermediate_layer_map"] = objective.layer_map

    micro_batch = config.per_device_batch_size
    accumulation = config.gradient_accumulation_steps
    micro_batches_per_epoch = math.ceil(len(train_rows) / micro_batch)
    steps_per_epoch = max(1, math.ceil(micro_batches_per_epoch / accumulation))
    total_steps = config.max_steps if config.max_steps > 0 else steps_per_epoch * config.max_epochs
    max_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup_steps = int(config.warmup_fraction * total_steps)
    validate_every = max(1, round(steps_per_epoch * config.val_check_interval))

    # The adaptors train with the student and are checkpointed with it.
    trainable = torch.nn.ModuleDict({"student": model})
    if objective is not None:
        trainable["objective"] = objective
    optimizer = make_optimizer(trainable, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total_steps, warmup_steps, config.lr_schedule)
    )
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    pin_memory = device.type == "cuda"
    info = {
        "device": str(device),
        "mixed_precision": "bf16" if use_bf16 else "fp32",
        "train_rows": len(train_rows),
        "tuning_rows": len(tuning_rows) if tuning_rows is not None else 0,
        "tuning_source": "tuning_dataset" if data.tuning is not None else "holdout",
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "selection_metric": metric_name,
        "selection_higher_is_better": higher_is_better,
        **info,
    }

    loop = LoopState()
    best_state: dict[str, torch.Tensor] | None = None
    if checkpoints is not None and has_checkpoint(checkpoints.folder):
        loop, best_state = load_checkpoint(checkpoints.folder, trainable, optimizer, scheduler)
        info["resumed_from_step"] = loop.step
        model.to(device)
    callbacks.on_start(total_steps, info)
    extra_validations = {
        max(1, round(fraction * total_steps)) for fraction in callbacks.validation_fractions()
    }

    def validate(step: int, epoch: float) -> bool:
        """Score on tuning rows, keep the best weights; return True when patience runs out."""
        nonlocal best_state
        if tuning_rows is None or tuning_targets is None:
            return False
        outputs = compute_outputs(
            model, tuning_rows, batch_size=micro_batch * 2, pad_token_id=pad_id, device=device
        )
        values = evaluate_outputs(outputs, tuning_targets, data.problem_type)
        if tuning_teacher_logits is not None:
            values.update(
                agreement_terms(outputs, tuning_teacher_logits, config, data.problem_type)
            )
        loop.history.append({"kind": "validation", "step": step, "epoch": epoch, **values})
        score = values[metric_name]
        improved = loop.best_score is None or (
            score > loop.best_score if higher_is_better else score < loop.best_score
        )
        if improved:
            loop.best_score, loop.best_step, loop.best_metrics = score, step, values
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            loop.validations_without_improvement = 0
        else:
            loop.validations_without_improvement += 1
        callbacks.on_validation(step, epoch, values, loop.best_score)
        return loop.validations_without_improvement > config.patience

    def checkpoint(epoch_index: int, next_micro_index: int, generator_state: torch.Tensor) -> None:
        if checkpoints is None:
            return
        loop.epoch_index, loop.next_micro_index = epoch_index, next_micro_index
        loop.epoch_generator_state = generator_state
        save_checkpoint(checkpoints.folder, trainable, optimizer, scheduler, loop, best_state)
        callbacks.on_checkpoint(loop.step, epoch_index + next_micro_index / micro_batches_per_epoch)

    generator = torch.Generator().manual_seed(config.seed)
    if loop.epoch_generator_state is not None:
        generator.set_state(loop.epoch_generator_state)
    first_epoch, skip_micro_batches = loop.epoch_index, loop.next_micro_index
    rows_this_run, run_started = 0, time.perf_counter()
    running: dict[str, float] = {}
    running_counts: dict[str, int] = {}
    stop = loop.step >= total_steps
    model.train()
    for epoch_index in range(first_epoch, max_epochs):
        if stop:
            break
        epoch_generator_state = generator.get_state()
        order = torch.randperm(len(train_rows), generator=generator).tolist()
        micro_batches = [order[i : i + micro_batch] for i in range(0, len(order), micro_batch)]
        for micro_index, positions in enumerate(micro_batches):
            if epoch_index == first_epoch and micro_index < skip_micro_batches:
                continue
            batch = collate([train_rows[i] for i in positions], pad_id)
            if pin_memory:
                # Page-locked host memory lets the copy to the GPU overlap with compute.
                batch = {k: v.pin_memory() for k, v in batch.items()}
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            targets = train_targets[positions].to(device)
            has_label = labeled[positions].to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                teacher_batch = (
                    objective.teacher_forward(positions, device)
                    if objective is not None and objective.online
                    else None
                )
                output = model(**batch, **(objective.student_forward_kwargs() if objective else {}))
            outputs = output.logits.float()
            terms: dict[str, torch.Tensor] = {}
            if has_label.any():
                terms["hard_loss"] = hard_label_loss(
                    outputs[has_label], targets[has_label], data.problem_type
                )
            if objective is not None:
                if teacher_batch is not None:
                    batch_teacher_logits = teacher_batch.output.logits.float()
                    batch_teacher_features = teacher_batch.output.hidden_states[-1][:, 0].float()
                else:
                    assert teacher_logits is not None
                    batch_teacher_logits = teacher_logits[positions].to(device)
                    batch_teacher_features = (
                        teacher_features[positions].to(device)
                        if teacher_features is not None
                        else None
                    )
                terms.update(
                    objective.loss_terms(
                        output,
                        batch["attention_mask"],
                        batch_teacher_logits,
                        batch_teacher_features,
                        teacher_batch,
                    )
                )
                loss = objective.weighted_total(terms)
            else:
                loss = terms["hard_loss"]
            (loss / accumulation).backward()
            for name, value in {"loss": loss, **terms}.items():
                running[name] = running.get(name, 0.0) + float(value.detach())
                running_counts[name] = running_counts.get(name, 0) + 1
            rows_this_run += len(positions)

            last_in_epoch = micro_index == len(micro_batches) - 1
            if (micro_index + 1) % accumulation != 0 and not last_in_epoch:
                continue
            if config.gradient_clip_val > 0:
                torch.nn.utils.clip_grad_norm_(trainable.parameters(), config.gradient_clip_val)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loop.step += 1
            step = loop.step
            epoch = round(epoch_index + (micro_index + 1) / len(micro_batches), 4)

            if step % LOG_EVERY_STEPS == 0 or step == total_steps:
                values = {k: v / running_counts[k] for k, v in running.items()}
                values["learning_rate"] = scheduler.get_last_lr()[0]
                values["rows_per_second"] = rows_this_run / (time.perf_counter() - run_started)
                loop.history.append({"kind": "train", "step": step, "epoch": epoch, **values})
                callbacks.on_log(step, total_steps, epoch, values)
                running, running_counts = {}, {}
            if callbacks.should_stop():
                raise TrainingCancelled(f"cancelled at step {step}")
            # Asked first so that a wrapped-up run is scored once more: the weights of the steps
            # since the last validation count.
            wrap_up = callbacks.should_wrap_up()
            due = (
                step % validate_every == 0
                or last_in_epoch
                or step == total_steps
                or step in extra_validations
            )
            if (due or wrap_up) and validate(step, epoch):
                stop = True
            # ... and again after a validation, whose score may be what ends the run.
            wrap_up = wrap_up or (due and callbacks.should_wrap_up())
            if wrap_up:
                info["wrapped_up_at_step"] = step
            if stop or wrap_up or step >= total_steps:
                stop = True
                break
            if last_in_epoch:
                checkpoint(epoch_index + 1, 0, generator.get_state())
            elif checkpoints is not None and step % checkpoints.every_steps == 0:
                checkpoint(epoch_index, micro_index + 1, epoch_generator_state)

    if best_state is None:
        validate(loop.step, float(max_epochs))
    if best_state is not None:
        model.load_state_dict(best_state)
    info["steps_run"] = loop.step
    info["early_stopped"] = loop.step < total_steps
    info["train_seconds"] = round(time.perf_counter() - started, 3)
    model.to("cpu").eval()
    return TrainingResult(
        backbone=student,
        tuning_metrics=loop.best_metrics,
        best_step=loop.best_step,
        history=loop.history,
        info=info,
    )
