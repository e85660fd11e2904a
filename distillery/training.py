"""The training loop: fine-tune a classifier, or distill one from a teacher.

Written out top to bottom on purpose (see shared/ARCHITECTURE.md): every knob of the loop is
visible here, and callers hook in through `TrainingCallbacks` for progress, cancellation and
logging. The teacher's outputs on the training rows are computed once before the first step, in
the teacher's own tokenization, and reused every epoch.
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

from distillery.backbones import Backbone, load_classifier
from distillery.checkpoints import LoopState, has_checkpoint, load_checkpoint, save_checkpoint
from distillery.encoding import collate, encode_rows
from distillery.hyperparams import TrainingConfig
from distillery.inference import compute_outputs, softmax
from distillery.losses import hard_label_loss, soft_label_loss
from distillery.metrics import SELECTION_METRIC, classification_metrics, regression_metrics
from distillery.predictor import Predictor, label_ids

# With no tuning table, this share of the training rows is held out to pick the best checkpoint
# and stop early, as AutoMM does.
HOLDOUT_FRACTION = 0.1
MIN_ROWS_FOR_HOLDOUT = 10
LOG_EVERY_STEPS = 10


class TrainingCancelled(Exception):
    """Raised inside the loop when `TrainingCallbacks.should_stop` says so."""


class TrainingCallbacks:
    """Hooks the loop calls; override what you need. All run in the training thread."""

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None: ...

    def on_log(
        self, step: int, total_steps: int, epoch: float, values: dict[str, float]
    ) -> None: ...

    def on_validation(self, step: int, epoch: float, values: dict[str, float]) -> None: ...

    def on_checkpoint(self, step: int, epoch: float) -> None: ...

    def should_stop(self) -> bool:
        return False


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


def train(
    config: TrainingConfig,
    data: TrainingData,
    backbone_path: Path,
    *,
    teacher: Predictor | None = None,
    callbacks: TrainingCallbacks | None = None,
    device: torch.device | None = None,
    checkpoints: CheckpointPolicy | None = None,
) -> TrainingResult:
    """Fine-tune (no teacher) or distill (with a teacher) a classifier; return the best one.

    The best checkpoint is chosen on the tuning table (or a holdout of the training rows) by
    accuracy, or RMSE for regression, and training stops after `config.patience` validations
    without improvement. With `checkpoints`, an earlier run's saved state in that folder is
    resumed, and the resumed run ends with the same weights an uninterrupted one would have.
    """
    callbacks = callbacks or TrainingCallbacks()
    device = device or pick_device()
    seed_everything(config.seed)
    started = time.perf_counter()

    train_frame, tuning_frame = data.train, data.tuning
    if tuning_frame is None:
        train_frame, tuning_frame = split_holdout(train_frame, config.seed)

    num_outputs = 1 if data.problem_type == "regression" else len(data.labels)
    id2label = dict(enumerate(data.labels)) if data.labels else None
    student = load_classifier(
        backbone_path,
        num_labels=num_outputs,
        id2label=id2label,
        problem_type=data.problem_type,
        layers=config.layers,
    )
    model = student.model.to(device)
    pad_id = student.tokenizer.pad_token_id or 0

    train_rows = encode_rows(student.tokenizer, train_frame, data.text_columns, config.max_text_len)
    train_targets = targets_tensor(train_frame, data)
    tuning_rows = (
        encode_rows(student.tokenizer, tuning_frame, data.text_columns, config.max_text_len)
        if tuning_frame is not None
        else None
    )
    tuning_targets = targets_tensor(tuning_frame, data) if tuning_frame is not None else None

    teacher_outputs: torch.Tensor | None = None
    teacher_seconds = 0.0
    if teacher is not None:
        teacher_started = time.perf_counter()
        teacher.model.to(device)
        teacher.device = str(device)
        teacher_outputs = torch.from_numpy(teacher.raw_outputs(train_frame))
        teacher_seconds = time.perf_counter() - teacher_started

    micro_batch = config.per_device_batch_size
    accumulation = config.gradient_accumulation_steps
    micro_batches_per_epoch = math.ceil(len(train_rows) / micro_batch)
    steps_per_epoch = max(1, math.ceil(micro_batches_per_epoch / accumulation))
    total_steps = config.max_steps if config.max_steps > 0 else steps_per_epoch * config.max_epochs
    max_epochs = math.ceil(total_steps / steps_per_epoch)
    warmup_steps = int(config.warmup_fraction * total_steps)
    validate_every = max(1, round(steps_per_epoch * config.val_check_interval))

    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_multiplier(s, total_steps, warmup_steps, config.lr_schedule)
    )
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    metric_name, higher_is_better = SELECTION_METRIC[data.problem_type]

    info: dict[str, Any] = {
        "device": str(device),
        "train_rows": len(train_rows),
        "tuning_rows": len(tuning_rows) if tuning_rows is not None else 0,
        "tuning_source": "tuning_dataset" if data.tuning is not None else "holdout",
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "teacher_mode": "precomputed" if teacher is not None else None,
        "teacher_inference_seconds": round(teacher_seconds, 3),
        "selection_metric": metric_name,
    }

    loop = LoopState()
    best_state: dict[str, torch.Tensor] | None = None
    if checkpoints is not None and has_checkpoint(checkpoints.folder):
        loop, best_state = load_checkpoint(checkpoints.folder, model, optimizer, scheduler)
        info["resumed_from_step"] = loop.step
        model.to(device)
    callbacks.on_start(total_steps, info)

    def validate(step: int, epoch: float) -> bool:
        """Score on tuning rows, keep the best weights; return True when patience runs out."""
        nonlocal best_state
        if tuning_rows is None or tuning_targets is None:
            return False
        outputs = compute_outputs(
            model, tuning_rows, batch_size=micro_batch * 2, pad_token_id=pad_id, device=device
        )
        values = evaluate_outputs(outputs, tuning_targets, data.problem_type)
        loop.history.append({"kind": "validation", "step": step, "epoch": epoch, **values})
        callbacks.on_validation(step, epoch, values)
        score = values[metric_name]
        improved = loop.best_score is None or (
            score > loop.best_score if higher_is_better else score < loop.best_score
        )
        if improved:
            loop.best_score, loop.best_step, loop.best_metrics = score, step, values
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            loop.validations_without_improvement = 0
            return False
        loop.validations_without_improvement += 1
        return loop.validations_without_improvement > config.patience

    def checkpoint(epoch_index: int, next_micro_index: int, generator_state: torch.Tensor) -> None:
        if checkpoints is None:
            return
        loop.epoch_index, loop.next_micro_index = epoch_index, next_micro_index
        loop.epoch_generator_state = generator_state
        save_checkpoint(checkpoints.folder, model, optimizer, scheduler, loop, best_state)
        callbacks.on_checkpoint(loop.step, epoch_index + next_micro_index / micro_batches_per_epoch)

    generator = torch.Generator().manual_seed(config.seed)
    if loop.epoch_generator_state is not None:
        generator.set_state(loop.epoch_generator_state)
    first_epoch, skip_micro_batches = loop.epoch_index, loop.next_micro_index
    rows_this_run, run_started = 0, time.perf_counter()
    running: dict[str, float] = {}
    running_count = 0
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
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            targets = train_targets[positions].to(device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                outputs = model(**batch).logits.float()
            hard = hard_label_loss(outputs, targets, data.problem_type)
            terms = {"hard_loss": hard}
            if teacher_outputs is not None:
                soft = soft_label_loss(
                    outputs,
                    teacher_outputs[positions].to(device),
                    problem_type=data.problem_type,
                    temperature=config.temperature,
                    loss_type=config.soft_label_loss_type,
                )
                terms["soft_loss"] = soft
                loss = config.hard_label_weight * hard + config.soft_label_weight * soft
            else:
                loss = hard
            (loss / accumulation).backward()
            for name, value in {"loss": loss, **terms}.items():
                running[name] = running.get(name, 0.0) + float(value.detach())
            running_count += 1
            rows_this_run += len(positions)

            last_in_epoch = micro_index == len(micro_batches) - 1
            if (micro_index + 1) % accumulation != 0 and not last_in_epoch:
                continue
            if config.gradient_clip_val > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.gradient_clip_val)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loop.step += 1
            step = loop.step
            epoch = round(epoch_index + (micro_index + 1) / len(micro_batches), 4)

            if step % LOG_EVERY_STEPS == 0 or step == total_steps:
                values = {k: v / running_count for k, v in running.items()}
                values["learning_rate"] = scheduler.get_last_lr()[0]
                values["rows_per_second"] = rows_this_run / (time.perf_counter() - run_started)
                loop.history.append({"kind": "train", "step": step, "epoch": epoch, **values})
                callbacks.on_log(step, total_steps, epoch, values)
                running, running_count = {}, 0
            if callbacks.should_stop():
                raise TrainingCancelled(f"cancelled at step {step}")
            if (step % validate_every == 0 or last_in_epoch or step == total_steps) and validate(
                step, epoch
            ):
                stop = True
            if stop or step >= total_steps:
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
