"""Evaluation metrics on numpy arrays, with no dependency beyond numpy.

Classification metrics take class ids and, where needed, class probabilities; for binary
problems the positive class is class id 1 (the second label in the model's label order).
"""

from __future__ import annotations

import numpy as np


def accuracy(true_ids: np.ndarray, predicted_ids: np.ndarray) -> float:
    return float(np.mean(true_ids == predicted_ids))


def f1_for_class(true_ids: np.ndarray, predicted_ids: np.ndarray, class_id: int) -> float:
    true_positive = np.sum((predicted_ids == class_id) & (true_ids == class_id))
    predicted_positive = np.sum(predicted_ids == class_id)
    actual_positive = np.sum(true_ids == class_id)
    if predicted_positive == 0 or actual_positive == 0:
        return 0.0
    precision = true_positive / predicted_positive
    recall = true_positive / actual_positive
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def macro_f1(true_ids: np.ndarray, predicted_ids: np.ndarray, num_classes: int) -> float:
    return float(np.mean([f1_for_class(true_ids, predicted_ids, c) for c in range(num_classes)]))


def roc_auc(true_ids: np.ndarray, positive_scores: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank-sum formula, ties averaged; None if one class only."""
    positives = true_ids == 1
    n_positive, n_negative = int(positives.sum()), int((~positives).sum())
    if n_positive == 0 or n_negative == 0:
        return None
    order = np.argsort(positive_scores, kind="mergesort")
    ranks = np.empty(len(positive_scores), dtype=float)
    sorted_scores = positive_scores[order]
    start = 0
    while start < len(sorted_scores):
        end = start
        while end + 1 < len(sorted_scores) and sorted_scores[end + 1] == sorted_scores[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    rank_sum = ranks[positives].sum()
    return float((rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def log_loss(true_ids: np.ndarray, probabilities: np.ndarray) -> float:
    picked = probabilities[np.arange(len(true_ids)), true_ids]
    return float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))


def classification_metrics(true_ids: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    num_classes = probabilities.shape[1]
    predicted_ids = probabilities.argmax(axis=1)
    result = {
        "accuracy": accuracy(true_ids, predicted_ids),
        "log_loss": log_loss(true_ids, probabilities),
    }
    if num_classes == 2:
        result["f1"] = f1_for_class(true_ids, predicted_ids, 1)
        auc = roc_auc(true_ids, probabilities[:, 1])
        if auc is not None:
            result["roc_auc"] = auc
    else:
        result["f1_macro"] = macro_f1(true_ids, predicted_ids, num_classes)
    return result


def regression_metrics(targets: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    errors = predictions - targets
    variance = float(np.var(targets))
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "r2": 1.0 - float(np.mean(errors**2)) / variance if variance > 0 else 0.0,
    }


# The metric that picks the best checkpoint, and whether higher is better.
SELECTION_METRIC = {
    "binary": ("accuracy", True),
    "multiclass": ("accuracy", True),
    "regression": ("rmse", False),
}
