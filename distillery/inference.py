"""Batched forward passes over encoded rows, shared by training, evaluation and prediction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from distillery.encoding import EncodedRow, collate


@torch.inference_mode()
def _forward_in_length_order(
    model: torch.nn.Module,
    rows: Sequence[EncodedRow],
    batch_size: int,
    pad_token_id: int,
    device: torch.device | str,
    with_features: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    # Rows are grouped by length so each batch pads little; results go back in input order.
    was_training = model.training
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    logits_out: np.ndarray | None = None
    features_out: np.ndarray | None = None
    try:
        for start in range(0, len(order), batch_size):
            positions = order[start : start + batch_size]
            batch = collate([rows[i] for i in positions], pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            output = model(**batch, output_hidden_states=with_features)
            logits = output.logits.float().cpu().numpy()
            if logits_out is None:
                logits_out = np.empty((len(rows), logits.shape[1]), dtype=np.float32)
            logits_out[positions] = logits
            if with_features:
                # The final layer's [CLS] vector: the features the head classifies.
                features = output.hidden_states[-1][:, 0].float().cpu().numpy()
                if features_out is None:
                    features_out = np.empty((len(rows), features.shape[1]), dtype=np.float32)
                features_out[positions] = features
    finally:
        model.train(was_training)
    if logits_out is None:
        logits_out = np.empty((0, 0), dtype=np.float32)
    return logits_out, features_out


def compute_outputs(
    model: torch.nn.Module,
    rows: Sequence[EncodedRow],
    *,
    batch_size: int,
    pad_token_id: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Raw outputs (logits, or one value per row for regression) in the order of `rows`."""
    logits, _ = _forward_in_length_order(model, rows, batch_size, pad_token_id, device, False)
    return logits


def compute_outputs_and_features(
    model: torch.nn.Module,
    rows: Sequence[EncodedRow],
    *,
    batch_size: int,
    pad_token_id: int,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs and final-layer [CLS] features, in the order of `rows`."""
    logits, features = _forward_in_length_order(model, rows, batch_size, pad_token_id, device, True)
    assert features is not None or not rows
    return logits, features if features is not None else np.empty((0, 0), dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
