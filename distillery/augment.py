"""Noisy copies of the labelled rows, for the teacher to label (Tang et al., 2019, "Distilling
Task-Specific Knowledge from BERT into Simple Neural Networks").

A small labelled set gives the student few chances to see how the teacher behaves; the teacher
can label as many rows as we make. Each copy changes some words of every text column: a word is
dropped, or replaced by a word drawn from the same column's vocabulary. The copies carry no
labels (a changed row may no longer have its original label): they join the transfer set and
learn from the teacher's outputs only. Word-level edits keep the text readable by any tokenizer,
so teacher and student may tokenize differently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def augmented_copies(
    frame: pd.DataFrame,
    text_columns: list[str],
    copies: int,
    word_probability: float,
    seed: int,
) -> pd.DataFrame:
    """`copies` noisy versions of every row of `frame`, text columns only, in row order per copy.

    Each word is dropped with `word_probability`, replaced by a random word of its column with
    the same probability, and kept otherwise; a text never loses all its words. Deterministic
    for a given seed.
    """
    if copies < 1 or frame.empty:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in text_columns})
    generator = np.random.default_rng(seed)
    split = {column: [str(text).split() for text in frame[column]] for column in text_columns}
    vocabulary = {
        column: np.array(sorted({word for words in split[column] for word in words}) or [""])
        for column in text_columns
    }
    made: dict[str, list[str]] = {column: [] for column in text_columns}
    for _ in range(copies):
        for column in text_columns:
            for words in split[column]:
                made[column].append(
                    _noisy(words, vocabulary[column], word_probability, generator)
                )
    return pd.DataFrame(made)


def _noisy(
    words: list[str], vocabulary: np.ndarray, probability: float, generator: np.random.Generator
) -> str:
    draws = generator.random(len(words))
    replacements = generator.integers(0, len(vocabulary), size=len(words))
    kept = []
    for word, draw, replacement in zip(words, draws, replacements, strict=True):
        if draw < probability:
            continue
        kept.append(str(vocabulary[replacement]) if draw < 2 * probability else word)
    return " ".join(kept) if kept else " ".join(words)
