"""Batched forward passes over encoded rows, shared by training, evaluation and prediction."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from distillery.encoding import EncodedRow, collate


@torch.inference_mode()
def compute_outputs(
    model: torch.nn.Module,
    rows: Sequence[EncodedRow],
    *,
    batch_size: int,
    pad_token_id: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Raw outputs (logits, or one value per row for regression) in the order of `rows`.

    Rows are grouped by length so each batch pads little; results are put back in input order.
    """
    was_training = model.training
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    outputs: np.ndarray | None = None
    try:
        for start in range(0, len(order), batch_size):
            positions = order[start : start + batch_size]
            batch = collate([rows[i] for i in positions], pad_token_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**batch).logits.float().cpu().numpy()
            if outputs is None:
                outputs = np.empty((len(rows), logits.shape[1]), dtype=np.float32)
            outputs[positions] = logits
    finally:
        model.train(was_training)
    return outputs if outputs is not None else np.empty((0, 0), dtype=np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
