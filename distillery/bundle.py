"""The on-disk model format: a Hugging Face folder plus `distillery.json`.

A bundle is a plain checkpoint folder (config.json, model.safetensors, tokenizer files) that any
transformers user can load, with one extra file recording what the service needs to serve it:
label order, text columns, problem type, metrics and lineage. Bundles are written to a temporary
sibling folder and renamed into place, so a crash never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

METADATA_FILE = "distillery.json"
FORMAT_VERSION = 1


class BundleError(ValueError):
    """A folder is not a usable bundle; the message says what is missing."""


@dataclass
class BundleMetadata:
    problem_type: str
    # Class names in output order (logit i is labels[i]); empty for regression.
    labels: list[str]
    text_columns: list[str]
    max_text_len: int = 128
    num_parameters: int = 0
    architecture: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    # Empty for a Hugging Face sequence classifier; {"kind": "pooled", "pooling": "cls"|"mean",
    # "file": ...} for a converted AutoMM predictor (distillery/automm.py).
    head: dict[str, Any] = field(default_factory=dict)
    # Empty: columns packed as a pair (encoding.encode_rows); {"packing": "columns",
    # "segments": n}: AutoMM's per-column packing (encoding.encode_columns).
    text_encoding: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BundleMetadata:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


def save_bundle(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    metadata: BundleMetadata,
    destination: Path,
) -> Path:
    """Write model, tokenizer and metadata to `destination` atomically; return it."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        write_metadata(staging, metadata)
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def write_metadata(folder: Path, metadata: BundleMetadata) -> None:
    (folder / METADATA_FILE).write_text(json.dumps(asdict(metadata), indent=2, sort_keys=True))


def read_metadata(folder: Path) -> BundleMetadata:
    path = folder / METADATA_FILE
    if not path.is_file():
        raise BundleError(f"{folder} is not a model bundle: {METADATA_FILE} is missing")
    try:
        return BundleMetadata.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise BundleError(f"{path} is not valid bundle metadata: {exc}") from exc


def size_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
