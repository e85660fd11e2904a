"""Artifact store: where datasets and model bundles live, addressed by relative keys.

A local directory for now (the embedded default, or a volume shared by API and workers on one
host). Keys, not paths, go into the database so the root can move.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        resolved = (self.root / key).resolve()
        if not resolved.is_relative_to(self.root):
            raise ValueError(f"artifact key {key!r} points outside the store")
        return resolved

    def write_table(self, key: str, frame: pd.DataFrame) -> int:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_suffix(".partial")
        frame.to_parquet(staging, index=False)
        staging.replace(target)
        return target.stat().st_size

    def read_table(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(self.path(key))

    def delete(self, key: str) -> None:
        target = self.path(key)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}.parquet"


def model_key(model_id: str) -> str:
    return f"models/{model_id}"
