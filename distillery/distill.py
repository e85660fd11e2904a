"""What a distill job adds to fine-tuning: teacher outputs and the distillation loss terms.

`DistillationObjective` owns the trainable adaptors (linear maps from the student's width to the
teacher's where they differ) and turns one batch's student outputs, plus the teacher's outputs
for the same rows (cached, or computed online), into named loss terms:

- soft labels: the teacher's softened outputs (`distiller.soft_label_*`),
- output features: the final [CLS] features, through an adaptor (`distiller.output_feature_*`),
- softmax regression: the student's adapted features through the teacher's own head, matched to
  the teacher's logits (Yang et al., 2021; `distiller.softmax_regression_*`),
- relational KD: distances and angles between rows of the batch (`distiller.rkd_*`),
- intermediate layers: hidden states over a layer map, pooled or token by token
  (`distiller.intermediate_*`), and attention maps (`distiller.attention_loss_weight`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import nn

from distillery.encoding import EncodedRow, collate
from distillery.hyperparams import HyperparameterError, TrainingConfig
from distillery.inference import compute_outputs_and_features
from distillery.losses import (
    attention_loss,
    feature_loss,
    masked_mean_pool,
    rkd_angle_loss,
    rkd_distance_loss,
    soft_label_loss,
    token_hidden_state_loss,
)
from distillery.predictor import Predictor
from distillery.teacher_cache import (
    TeacherCache,
    TeacherOutputs,
    cache_key,
    folder_fingerprint,
    rows_fingerprint,
)


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Teacher hidden-state index (1-based layers) for each student layer, spread evenly:
    3 of 6 -> [2, 4, 6]; the last student layer always learns from the last teacher layer."""
    return [round((i + 1) * teacher_layers / student_layers) for i in range(student_layers)]


def hidden_width(model: nn.Module) -> int:
    return int(model.config.hidden_size)


def layer_count(model: nn.Module) -> int:
    return int(model.config.num_hidden_layers)


def adaptor(student_width: int, teacher_width: int) -> nn.Module:
    return (
        nn.Identity() if student_width == teacher_width else nn.Linear(student_width, teacher_width)
    )


def teacher_head_logits(teacher: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The teacher's classification head applied to [CLS] features of the teacher's width.

    BERT-style models pool first (dense + tanh on [CLS]) and classify with a Linear; RoBERTa-
    and MPNet-style models have a head that takes the whole sequence and reads [CLS] itself; a
    converted AutoMM predictor has its own head on pooled features (automm.PooledHeadClassifier;
    with mean pooling the adapted [CLS] features stand in for the mean-pooled ones).
    """
    head_logits = getattr(teacher, "head_logits", None)
    if callable(head_logits):
        return head_logits(features)
    classifier = teacher.classifier
    if isinstance(classifier, nn.Linear):
        pooler = getattr(teacher.base_model, "pooler", None)
        if pooler is not None:
            features = pooler.activation(pooler.dense(features))
        return classifier(features)
    return classifier(features.unsqueeze(1))


@dataclass
class TeacherBatch:
    output: Any
    attention_mask: torch.Tensor


@dataclass
class TeacherRun:
    """Teacher outputs for one table, and how they were obtained."""

    outputs: TeacherOutputs
    source: str  # "cache" or "computed"
    seconds: float


def teacher_outputs_for(
    teacher: Predictor,
    frame: pd.DataFrame,
    text_columns: list[str],
    *,
    need_features: bool,
    cache: TeacherCache | None,
    teacher_fingerprint: str | None,
    batch_size: int,
    device: torch.device,
) -> TeacherRun:
    """Teacher logits (and [CLS] features) on `frame`, from the cache when it has them."""
    started = time.perf_counter()
    fingerprint = teacher_fingerprint or folder_fingerprint(teacher.folder)
    max_len = teacher.max_text_len
    key = cache_key(fingerprint, rows_fingerprint(frame, text_columns), text_columns, max_len)
    if cache is not None:
        cached = cache.load(key, need_features)
        if cached is not None:
            return TeacherRun(cached, "cache", time.perf_counter() - started)
    rows = teacher.encode(frame, text_columns)
    logits, features = compute_outputs_and_features(
        teacher.model,
        rows,
        batch_size=batch_size,
        pad_token_id=teacher.pad_token_id,
        device=device,
    )
    outputs = TeacherOutputs(torch.from_numpy(logits), torch.from_numpy(features))
    if cache is not None:
        cache.save(key, outputs)
    return TeacherRun(outputs, "computed", time.perf_counter() - started)


class DistillationObjective(nn.Module):
    """Loss terms between a student and its teacher; its adaptors train with the student."""

    def __init__(
        self,
        config: TrainingConfig,
        problem_type: str,
        student: nn.Module,
        teacher: Predictor,
        student_rows: list[EncodedRow],
        teacher_rows: list[EncodedRow] | None,
    ) -> None:
        super().__init__()
        self.config, self.problem_type = config, problem_type
        # Kept out of this module's parameters: the teacher is frozen and never checkpointed.
        self.teacher_model = [teacher.model]
        self.teacher_pad_id = teacher.pad_token_id
        self.teacher_rows = teacher_rows
        student_width, teacher_width = hidden_width(student), hidden_width(teacher.model)
        self.feature_adaptor = adaptor(student_width, teacher_width)

        self.layer_map: list[int] = []
        self.hidden_adaptors = nn.ModuleList()
        if config.needs_online_teacher:
            teacher_layers, student_layers = layer_count(teacher.model), layer_count(student)
            self.layer_map = config.intermediate_layer_map or uniform_layer_map(
                student_layers, teacher_layers
            )
            if len(self.layer_map) != student_layers or max(self.layer_map) > teacher_layers:
                raise HyperparameterError(
                    "distiller.intermediate_layer_map",
                    f"needs one teacher layer (1..{teacher_layers}) for each of the student's "
                    f"{student_layers} layers; got {self.layer_map}",
                )
            self.hidden_adaptors = nn.ModuleList(
                adaptor(student_width, teacher_width) for _ in self.layer_map
            )
            token_level = config.attention_loss_weight > 0 or (
                config.intermediate_loss_weight > 0 and config.intermediate_pooling == "tokens"
            )
            if token_level:
                self._check_same_tokenization(student_rows, teacher_rows or [])
            if config.attention_loss_weight > 0:
                self._check_heads(student, teacher.model)

    @staticmethod
    def _check_same_tokenization(
        student_rows: list[EncodedRow], teacher_rows: list[EncodedRow]
    ) -> None:
        sample = range(min(32, len(student_rows)))
        if any(student_rows[i]["input_ids"] != teacher_rows[i]["input_ids"] for i in sample):
            raise HyperparameterError(
                "distiller.intermediate_pooling",
                "token-level hidden-state and attention losses need teacher and student to "
                "share a tokenizer; these two tokenize differently. Use "
                "distiller.intermediate_pooling=mean (or cls) and no attention loss",
            )

    @staticmethod
    def _check_heads(student: nn.Module, teacher: nn.Module) -> None:
        student_heads = student.config.num_attention_heads
        teacher_heads = teacher.config.num_attention_heads
        if student_heads != teacher_heads:
            raise HyperparameterError(
                "distiller.attention_loss_weight",
                f"attention maps can be matched only with equal head counts; the student has "
                f"{student_heads} heads, the teacher {teacher_heads}",
            )

    @property
    def online(self) -> bool:
        return self.config.teacher_runs_online

    def student_forward_kwargs(self) -> dict[str, bool]:
        """Ask the student only for what the loss terms read (attention maps cost time)."""
        wanted = {
            "output_hidden_states": self.config.needs_teacher_features or self.online,
            "output_attentions": self.config.attention_loss_weight > 0,
        }
        return {name: True for name, needed in wanted.items() if needed}

    @torch.no_grad()
    def teacher_forward(self, positions: list[int], device: torch.device) -> TeacherBatch:
        """The online teacher on the same rows, in its own tokenization."""
        assert self.teacher_rows is not None
        batch = collate([self.teacher_rows[i] for i in positions], self.teacher_pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        output = self.teacher_model[0](
            **batch,
            output_hidden_states=True,
            output_attentions=self.config.attention_loss_weight > 0,
        )
        return TeacherBatch(output, batch["attention_mask"])

    def loss_terms(
        self,
        student_output: Any,
        attention_mask: torch.Tensor,
        teacher_logits: torch.Tensor,
        teacher_features: torch.Tensor | None,
        teacher_batch: TeacherBatch | None,
    ) -> dict[str, torch.Tensor]:
        """Named, unweighted loss terms for one batch (only those with a weight above 0)."""
        config, terms = self.config, {}
        logits = student_output.logits.float()
        if config.soft_label_weight > 0:
            terms["soft_loss"] = soft_label_loss(
                logits,
                teacher_logits,
                problem_type=self.problem_type,
                temperature=config.temperature,
                loss_type=config.soft_label_loss_type,
            )
        if config.needs_teacher_features:
            assert teacher_features is not None
            student_features = student_output.hidden_states[-1][:, 0].float()
            adapted = self.feature_adaptor(student_features)
            if config.output_feature_loss_weight > 0:
                terms["feature_loss"] = feature_loss(
                    adapted, teacher_features, config.output_feature_loss_type
                )
            if config.softmax_regression_weight > 0:
                regressed = teacher_head_logits(self.teacher_model[0], adapted).float()
                if config.softmax_regression_loss_type == "mse":
                    terms["softmax_regression_loss"] = feature_loss(
                        regressed, teacher_logits, "mse"
                    )
                else:
                    terms["softmax_regression_loss"] = soft_label_loss(
                        regressed,
                        teacher_logits,
                        problem_type=self.problem_type,
                        temperature=1.0,
                        loss_type="cross_entropy",
                    )
            if config.rkd_distance_loss_weight > 0:
                terms["rkd_distance_loss"] = rkd_distance_loss(student_features, teacher_features)
            if config.rkd_angle_loss_weight > 0:
                terms["rkd_angle_loss"] = rkd_angle_loss(student_features, teacher_features)
        if self.online and teacher_batch is not None:
            terms.update(self._intermediate_terms(student_output, teacher_batch, attention_mask))
        return terms

    def _intermediate_terms(
        self, student_output: Any, teacher_batch: TeacherBatch, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        config, terms = self.config, {}
        teacher_output = teacher_batch.output
        if config.intermediate_loss_weight > 0:
            per_layer = []
            for student_layer, (teacher_layer, layer_adaptor) in enumerate(
                zip(self.layer_map, self.hidden_adaptors, strict=True), start=1
            ):
                student_hidden = layer_adaptor(student_output.hidden_states[student_layer].float())
                teacher_hidden = teacher_output.hidden_states[teacher_layer].float()
                if config.intermediate_pooling == "tokens":
                    per_layer.append(
                        token_hidden_state_loss(
                            student_hidden,
                            teacher_hidden,
                            attention_mask,
                            config.intermediate_loss_type,
                        )
                    )
                    continue
                if config.intermediate_pooling == "cls":
                    student_pooled, teacher_pooled = student_hidden[:, 0], teacher_hidden[:, 0]
                else:
                    student_pooled = masked_mean_pool(student_hidden, attention_mask)
                    teacher_pooled = masked_mean_pool(teacher_hidden, teacher_batch.attention_mask)
                per_layer.append(
                    feature_loss(student_pooled, teacher_pooled, config.intermediate_loss_type)
                )
            terms["intermediate_loss"] = torch.stack(per_layer).mean()
        if config.attention_loss_weight > 0:
            terms["attention_loss"] = torch.stack(
                [
                    attention_loss(
                        student_output.attentions[student_layer - 1],
                        teacher_output.attentions[teacher_layer - 1],
                        attention_mask,
                    )
                    for student_layer, teacher_layer in enumerate(self.layer_map, start=1)
                ]
            ).mean()
        return terms

    def weighted_total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        config = self.config
        weights = {
            "hard_loss": config.hard_label_weight,
            "soft_loss": config.soft_label_weight,
            "feature_loss": config.output_feature_loss_weight,
            "softmax_regression_loss": config.softmax_regression_weight,
            "rkd_distance_loss": config.rkd_distance_loss_weight,
            "rkd_angle_loss": config.rkd_angle_loss_weight,
            "intermediate_loss": config.intermediate_loss_weight,
            "attention_loss": config.attention_loss_weight,
        }
        return sum(
            (weights[name] * value for name, value in terms.items()),
            start=torch.zeros((), device=next(iter(terms.values())).device),
        )
