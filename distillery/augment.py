"""New unlabelled rows made from the labelled ones, for the teacher to label.

A small labelled set gives the student few chances to see how the teacher behaves; the teacher
can label as many rows as we make. The rows made carry no labels (an edited row may no longer
have its original label): they join the transfer set and learn from the teacher's outputs only.
Both kinds work on words, so the text stays readable by any tokenizer and teacher and student
may tokenize differently.

- Noisy copies (Tang et al., 2019, "Distilling Task-Specific Knowledge from BERT into Simple
  Neural Networks"): some words of every text column dropped, or replaced by a word drawn from
  the same column's vocabulary.
- Recombined pairs, for tasks of two or more text columns: a row's first column with another
  row's other columns (a question with a sentence that nearly answers it).
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


# Each copy pairs a row with one of its this-many best-matching partners (a different one per copy).
PARTNER_CHOICES = 4


def recombined_pairs(
    frame: pd.DataFrame, text_columns: list[str], copies: int, seed: int
) -> pd.DataFrame:
    """`copies` new rows per row of a multi-column table: its first column with the other
    columns of another row.

    A random partner makes an easy pair (a question with an unrelated sentence is plainly not
    an answer), so partners are drawn from the rows whose other columns share the most words
    with this row's first column: the near misses, where the teacher's outputs teach most. A row
    with no such partner gets a random one; rows never pair with themselves. Deterministic for
    a given seed.
    """
    if len(text_columns) < 2:
        raise ValueError("pairs can only be recombined across two or more text columns")
    if copies < 1 or len(frame) < 2:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in text_columns})
    generator = np.random.default_rng(seed)
    first, rest = text_columns[0], text_columns[1:]
    rows_with_word: dict[str, list[int]] = {}
    for row in range(len(frame)):
        words = set().union(*(_word_set(frame[column].iat[row]) for column in rest))
        for word in words:
            rows_with_word.setdefault(word, []).append(row)
    partners: list[list[int]] = []
    for row, text in enumerate(frame[first]):
        shared: dict[int, int] = {}
        for word in _word_set(text):
            for other in rows_with_word.get(word, ()):
                if other != row:
                    shared[other] = shared.get(other, 0) + 1
        # Ties are broken by a random key so the same best partners are not always low rows.
        tie_break = generator.random(len(frame))
        ranked = sorted(shared, key=lambda other: (-shared[other], tie_break[other]))
        partners.append(ranked[:PARTNER_CHOICES])
    made: dict[str, list[str]] = {column: [] for column in text_columns}
    for copy in range(copies):
        for row in range(len(frame)):
            if partners[row]:
                partner = partners[row][copy % len(partners[row])]
            else:
                partner = int(generator.integers(0, len(frame) - 1))
                partner += partner >= row
            made[first].append(str(frame[first].iat[row]))
            for column in rest:
                made[column].append(str(frame[column].iat[partner]))
    return pd.DataFrame(made)


def _word_set(text: object) -> set[str]:
    return {word.strip(".,;:!?\"'()").lower() for word in str(text).split()} - _STOP_WORDS


# Words that every question and sentence share; overlap on them says nothing about the topic.
_STOP_WORDS = {
    "", "a", "an", "the", "of", "in", "on", "at", "to", "for", "by", "with", "and", "or", "is",
    "are", "was", "were", "be", "been", "what", "which", "who", "whom", "when", "where", "why",
    "how", "did", "do", "does", "that", "this", "it", "its", "as", "from", "than", "into", "has",
    "have", "had", "not", "no", "s",
}
