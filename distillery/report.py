"""The distillation report: how much of the teacher a student kept, and what it costs.

For a student and its teacher on the same labelled rows: quality (accuracy and F1/ROC-AUC, or
RMSE), student-teacher agreement, calibration (expected calibration error), size (parameters,
bytes on disk) and CPU speed (latency per row, single-row and batched). With a baseline (the
same student trained without the teacher), AutoMM's yardstick: the distillation ratio.
"""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Any

import numpy as np
import pandas as pd

from distillery.backbones import count_parameters
from distillery.bundle import size_on_disk
from distillery.inference import softmax
from distillery.metrics import classification_metrics, regression_metrics
from distillery.predictor import Predictor, label_ids

ECE_BINS = 15
LATENCY_ROWS = 64
LATENCY_BATCH = 32


def expected_calibration_error(true_ids: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == true_ids
    edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
    total = 0.0
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def distillation_ratio(student: float, baseline: float, teacher: float) -> float | None:
    """(student - baseline) / (teacher - baseline): 1 keeps all the teacher adds, 0 none."""
    if teacher == baseline:
        return None
    return (student - baseline) / (teacher - baseline)


def cpu_latency(predictor: Predictor, frame: pd.DataFrame) -> dict[str, float]:
    """Milliseconds per row on this machine's CPU: one row at a time, and in batches."""
    sample = frame.head(LATENCY_ROWS)
    predictor.raw_outputs(sample.head(2))  # warm-up: first calls allocate
    single = []
    for index in range(min(16, len(sample))):
        started = time.perf_counter()
        predictor.raw_outputs(sample.iloc[index : index + 1])
        single.append(time.perf_counter() - started)
    previous, predictor.batch_size = predictor.batch_size, LATENCY_BATCH
    try:
        started = time.perf_counter()
        predictor.raw_outputs(sample)
        batched = (time.perf_counter() - started) / len(sample)
    finally:
        predictor.batch_size = previous
    return {
        "single_row_ms": round(statistics.median(single) * 1000, 3),
        "batched_ms_per_row": round(batched * 1000, 3),
    }


def side_report(predictor: Predictor, frame: pd.DataFrame, label_column: str) -> dict[str, Any]:
    outputs = predictor.raw_outputs(frame)
    if predictor.problem_type == "regression":
        quality = regression_metrics(frame[label_column].astype(float).to_numpy(), outputs[:, 0])
    else:
        true_ids = label_ids(frame[label_column], predictor.metadata.labels)
        probabilities = softmax(outputs)
        quality = classification_metrics(true_ids, probabilities)
        quality["ece"] = expected_calibration_error(true_ids, probabilities)
    return {
        **quality,
        "parameters": count_parameters(predictor.model),
        "size_bytes": size_on_disk(predictor.folder),
        "cpu_latency": cpu_latency(predictor, frame),
        "_outputs": outputs,
    }


def distillation_report(
    student: Predictor, teacher: Predictor, frame: pd.DataFrame, label_column: str
) -> dict[str, Any]:
    """Compare student and teacher on `frame` (labelled rows neither trained on)."""
    student_side = side_report(student, frame, label_column)
    teacher_side = side_report(teacher, frame, label_column)
    student_outputs, teacher_outputs = student_side.pop("_outputs"), teacher_side.pop("_outputs")
    report: dict[str, Any] = {"rows": len(frame), "student": student_side, "teacher": teacher_side}
    if student.problem_type == "regression":
        report["agreement_rmse"] = float(
            np.sqrt(np.mean((student_outputs[:, 0] - teacher_outputs[:, 0]) ** 2))
        )
    else:
        report["agreement"] = float(
            (student_outputs.argmax(axis=1) == teacher_outputs.argmax(axis=1)).mean()
        )
    report["parameter_ratio"] = student_side["parameters"] / teacher_side["parameters"]
    report["size_ratio"] = student_side["size_bytes"] / teacher_side["size_bytes"]
    report["cpu_speedup_batched"] = (
        teacher_side["cpu_latency"]["batched_ms_per_row"]
        / student_side["cpu_latency"]["batched_ms_per_row"]
    )
    return report
