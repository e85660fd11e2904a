"""Turn table rows into token ids, and token ids into padded batches.

Rows are tokenized once, unpadded; each batch is padded only to its own longest row (dynamic
padding), which on short sentence pairs does several times less work than padding to the limit.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from transformers import PreTrainedTokenizerBase

EncodedRow = dict[str, list[int]]


def row_texts(
    frame: pd.DataFrame, text_columns: Sequence[str]
) -> tuple[list[str], list[str] | None]:
    """First text column as the text; the others, joined, as the second segment of a pair."""
    columns = [frame[c].fillna("").astype(str).tolist() for c in text_columns]
    if len(columns) == 1:
        return columns[0], None
    if len(columns) == 2:
        return columns[0], columns[1]
    return columns[0], [" | ".join(parts) for parts in zip(*columns[1:], strict=True)]


def encode_rows(
    tokenizer: PreTrainedTokenizerBase,
    frame: pd.DataFrame,
    text_columns: Sequence[str],
    max_length: int,
) -> list[EncodedRow]:
    if frame.empty:
        return []
    texts, pairs = row_texts(frame, text_columns)
    encoded = tokenizer(
        texts,
        pairs,
        truncation="longest_first",
        max_length=max_length,
        padding=False,
    )
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
    return [{k: encoded[k][i] for k in keys} for i in range(len(texts))]


def collate(rows: Sequence[EncodedRow], pad_token_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(row["input_ids"]) for row in rows)
    batch: dict[str, torch.Tensor] = {}
    for key in rows[0]:
        fill = pad_token_id if key == "input_ids" else 0
        batch[key] = torch.tensor(
            [row[key] + [fill] * (longest - len(row[key])) for row in rows], dtype=torch.long
        )
    return batch
