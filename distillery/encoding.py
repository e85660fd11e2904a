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
    return _texts_and_pairs(_frame_columns(frame, text_columns))


def _frame_columns(frame: pd.DataFrame, text_columns: Sequence[str]) -> list[list[str]]:
    return [frame[c].fillna("").astype(str).tolist() for c in text_columns]


def _texts_and_pairs(columns: list[list[str]]) -> tuple[list[str], list[str] | None]:
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
    *,
    column_segments: int | None = None,
) -> list[EncodedRow]:
    """Token ids of each row. By default the first column and the others (joined) are a pair,
    cut by the tokenizer's longest-first truncation; with `column_segments` each column is
    packed as AutoGluon AutoMM's hf_text does it (see `encode_columns`)."""
    if frame.empty:
        return []
    columns = _frame_columns(frame, text_columns)
    return _encode_text_columns(tokenizer, columns, max_length, column_segments)


def encode_records(
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[dict[str, str]],
    text_columns: Sequence[str],
    max_length: int,
    *,
    column_segments: int | None = None,
) -> list[EncodedRow]:
    """`encode_rows` for rows already held as dicts of strings (a predict request's): the same
    token ids, without building a DataFrame, which costs more than tokenizing one short row."""
    if not records:
        return []
    columns = [[record[c] for record in records] for c in text_columns]
    return _encode_text_columns(tokenizer, columns, max_length, column_segments)


def _encode_text_columns(
    tokenizer: PreTrainedTokenizerBase,
    columns: list[list[str]],
    max_length: int,
    column_segments: int | None,
) -> list[EncodedRow]:
    if column_segments is not None:
        return encode_columns(tokenizer, columns, max_length, column_segments)
    return _encode(tokenizer, *_texts_and_pairs(columns), max_length)


def _encode(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    pairs: list[str] | None,
    max_length: int,
) -> list[EncodedRow]:
    encoded = tokenizer(
        texts,
        pairs,
        truncation="longest_first",
        max_length=max_length,
        padding=False,
    )
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
    return [{k: encoded[k][i] for k in keys} for i in range(len(texts))]


def trimmed_lengths(lengths: Sequence[int], budget: int) -> list[int]:
    """AutoMM's share of `budget` tokens between columns: each column keeps an equal part,
    short columns keep all of theirs and leave the rest to the longer ones; the odd tokens go
    to the first columns (TextProcessor.get_trimmed_lengths with do_merge=True)."""
    if sum(lengths) <= budget:
        return list(lengths)
    kept = [0] * len(lengths)
    while sum(kept) < budget:
        remainder = budget - sum(kept)
        open_columns = [i for i, length in enumerate(lengths) if length > kept[i]]
        if remainder < len(open_columns):
            for i in open_columns[:remainder]:
                kept[i] += 1
        else:
            shortest = min(lengths[i] - kept[i] for i in open_columns)
            step = min(shortest, remainder // len(open_columns))
            for i in open_columns:
                kept[i] += step
    return kept


def encode_columns(
    tokenizer: PreTrainedTokenizerBase,
    columns: list[list[str]],
    max_length: int,
    segments: int,
) -> list[EncodedRow]:
    """AutoMM's hf_text packing of `columns` (one list of texts per text column): every
    column tokenized alone, trimmed by `trimmed_lengths` to fit `max_length` with one [CLS]
    and a [SEP] after each column, and segment ids that cycle over `segments` (AutoMM's
    TextProcessor.build_one_token_sequence)."""
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise ValueError("per-column packing needs a tokenizer with [CLS] and [SEP] tokens")
    token_ids = [
        tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
        for texts in columns
    ]
    with_types = "token_type_ids" in tokenizer.model_input_names
    budget = max_length - (len(columns) + 1)
    rows: list[EncodedRow] = []
    for parts in zip(*token_ids, strict=True):
        ids, types, segment = [cls_id], [0], 0
        for part, keep in zip(parts, trimmed_lengths([len(p) for p in parts], budget), strict=True):
            ids += [*part[:keep], sep_id]
            types += [segment] * (keep + 1)
            segment = (segment + 1) % segments
        row = {"input_ids": ids, "attention_mask": [1] * len(ids)}
        rows.append({**row, "token_type_ids": types} if with_types else row)
    return rows


def collate(rows: Sequence[EncodedRow], pad_token_id: int) -> dict[str, torch.Tensor]:
    longest = max(len(row["input_ids"]) for row in rows)
    batch: dict[str, torch.Tensor] = {}
    for key in rows[0]:
        fill = pad_token_id if key == "input_ids" else 0
        batch[key] = torch.tensor(
            [row[key] + [fill] * (longest - len(row[key])) for row in rows], dtype=torch.long
        )
    return batch
