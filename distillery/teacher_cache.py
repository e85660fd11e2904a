"""Teacher outputs computed once and reused across epochs, validations and later jobs.

An entry holds the teacher's logits (and, when feature losses want them, its final [CLS]
features) for one table of rows. Its key covers everything the outputs depend on: the teacher
(a fingerprint of its weights), the rows' text, the text columns and the tokenization length.
Change any of them and the key changes: there is nothing to invalidate by hand. Entries are
safetensors files written atomically; an unreadable entry counts as a miss and is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


@dataclass
class TeacherOutputs:
    logits: torch.Tensor
    features: torch.Tensor | None = None


def rows_fingerprint(frame: pd.DataFrame, text_columns: list[str]) -> str:
    """Hash of the rows' text, in order: the same rows give the same key whatever the file."""
    hashed = pd.util.hash_pandas_object(frame[text_columns].fillna("").astype(str), index=False)
    return hashlib.sha256(hashed.to_numpy().tobytes()).hexdigest()


def folder_fingerprint(folder: Path) -> str:
    """Cheap identity of a checkpoint folder: its weight files' names, sizes and mtimes."""
    parts = [
        (path.name, path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.glob("*.safetensors"))
    ]
    return hashlib.sha256(json.dumps([str(folder.resolve()), parts]).encode()).hexdigest()


def cache_key(
    teacher_fingerprint: str, rows: str, text_columns: list[str], max_text_len: int
) -> str:
    material = json.dumps([teacher_fingerprint, rows, text_columns, max_text_len])
    return hashlib.sha256(material.encode()).hexdigest()[:40]


class TeacherCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def load(self, key: str, need_features: bool) -> TeacherOutputs | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            log.warning("teacher cache entry %s is unreadable; recomputing", path)
            return None
        if need_features and "features" not in tensors:
            return None
        return TeacherOutputs(tensors["logits"], tensors.get("features"))

    def save(self, key: str, outputs: TeacherOutputs) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tensors = {"logits": outputs.logits.contiguous()}
        if outputs.features is not None:
            tensors["features"] = outputs.features.contiguous()
        descriptor, staging = tempfile.mkstemp(dir=self.root, suffix=".partial")
        os.close(descriptor)
        try:
            save_file(tensors, staging)
            os.replace(staging, self.path(key))
        except BaseException:
            Path(staging).unlink(missing_ok=True)
            raise
