"""Tiny models and QNLI-shaped tables that the tests build themselves (no model hub)."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

from domain.orm import Dataset, Job

SUBJECTS = ["river", "city", "king", "bridge", "painter", "engine", "forest", "treaty"]
POSITIVE_WORDS = ["flows", "built", "ruled", "crossed", "painted", "powered", "grew", "signed"]
NEGATIVE_WORDS = ["unknown", "never", "nobody", "nothing", "absent", "missing", "lost", "none"]
FILLER = ["the", "a", "of", "in", "was", "is", "what", "who", "when", "where", "did", "?", "."]


def tiny_vocabulary() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return specials + sorted(set(SUBJECTS + POSITIVE_WORDS + NEGATIVE_WORDS + FILLER))


def qnli_like_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Question/sentence pairs whose label a tiny model can learn: the sentence's verb decides."""
    rng = random.Random(seed)
    records = []
    for _ in range(rows):
        subject = rng.choice(SUBJECTS)
        entailed = rng.random() < 0.5
        word = rng.choice(POSITIVE_WORDS if entailed else NEGATIVE_WORDS)
        records.append(
            {
                "question": f"what {rng.choice(['is', 'was'])} the {subject} ?",
                "sentence": f"the {subject} {word} in the {rng.choice(SUBJECTS)} .",
                "label": "entailment" if entailed else "not_entailment",
            }
        )
    return pd.DataFrame.from_records(records)


def save_tiny_bert(
    folder: Path, *, layers: int, hidden: int = 32, heads: int = 2, seed: int = 0
) -> Path:
    """A randomly initialised BERT with its own WordPiece tokenizer, saved as a checkpoint.

    Seeded: the weights must not depend on which tests ran before (tiny models learn or stay
    on the 0.69 plateau depending on their start)."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = {token: index for index, token in enumerate(tiny_vocabulary())}
    tokenizer = BertTokenizerFast(vocab=vocabulary, do_lower_case=True)
    config = BertConfig(
        vocab_size=len(tiny_vocabulary()),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
        num_labels=2,
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_mpnet(
    folder: Path, *, layers: int = 2, hidden: int = 48, heads: int = 4, seed: int = 0
) -> Path:
    """A randomly initialised MPNet with its own tokenizer (other special tokens, other ids)."""
    torch.manual_seed(seed)
    from transformers import MPNetConfig, MPNetForSequenceClassification, MPNetTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]
    words = [t for t in tiny_vocabulary() if not t.startswith("[")]
    vocabulary = {token: index for index, token in enumerate(specials + sorted(words))}
    tokenizer = MPNetTokenizerFast(vocab=vocabulary, do_lower_case=True)
    config = MPNetConfig(
        vocab_size=len(vocabulary),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 2,
        max_position_embeddings=80,
        pad_token_id=vocabulary["<pad>"],
        bos_token_id=vocabulary["<s>"],
        eos_token_id=vocabulary["</s>"],
        num_labels=2,
    )
    MPNetForSequenceClassification(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def dataset_row() -> Dataset:
    """A dataset row for tests that need a job's foreign key, not its table."""
    return Dataset(
        name="d",
        filename="d.csv",
        format="csv",
        row_count=1,
        columns=["t"],
        text_columns=["t"],
        label_column=None,
        problem_type=None,
        label_counts={},
        storage_key="datasets/d.parquet",
        size_bytes=1,
    )


def job_row(dataset_id: str, **values: object) -> Job:
    """A fine-tune job row on `dataset_id`; `values` set its other columns."""
    return Job(
        kind="finetune",
        train_dataset_id=dataset_id,
        label="label",
        text_columns=["t"],
        hyperparameters={},
        **values,
    )


def save_tiny_classifier_bundle(root: Path, architecture: str, *, seed: int) -> Path:
    """A 2-layer tiny BERT ("bert", with token types) or MPNet ("mpnet", without) saved as a
    binary QNLI-shaped bundle."""
    from distillery.backbones import load_classifier
    from distillery.bundle import BundleMetadata, save_bundle

    make = save_tiny_bert if architecture == "bert" else save_tiny_mpnet
    checkpoint = make(root / "checkpoint", layers=2, seed=seed)
    backbone = load_classifier(checkpoint, num_labels=2)
    metadata = BundleMetadata(
        "binary", ["entailment", "not_entailment"], ["question", "sentence"]
    )
    return save_bundle(backbone.model, backbone.tokenizer, metadata, root / "bundle")
