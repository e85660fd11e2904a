"""The artifact store's contract: where datasets, model bundles, checkpoints and teacher outputs
live, addressed by relative keys.

Keys, not paths, go into the database, so the store can move. `DISTILLERY_ARTIFACT_URL` picks
the store: a local directory (the default, `$HOME/artifacts`, or a volume shared by processes on
one host) or `s3://bucket/prefix` on an S3-compatible object store, which API and workers on
different machines share (domain/storage/s3.py).

Callers never assume the store is a local directory; they ask for what they need:

- tables: `write_table`, `read_table`, `local_file` (a Parquet file to inspect in place);
- immutable folders (model bundles): `put_folder` publishes one, `local_folder` gives a local
  copy (on S3: downloaded once per host into a cache and verified against the folder's
  manifest);
- mutable host-local working folders mirrored to a key (training checkpoints):
  `working_folder`, `sync_folder` after each change, `pull_folder` before resuming;
- single files (teacher outputs): `put_file`, `fetch_file`;
- `delete`, `scratch_dir` (temporary files on the same disk as local copies), `check`
  (readiness).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Protocol

import pandas as pd

SCRATCH_DIR = ".scratch"


class ArtifactNotFound(FileNotFoundError):
    """The key holds nothing (or, for a folder, no complete upload)."""


def move_folder_into_place(folder: Path, destination: Path) -> Path:
    """Move `folder` to `destination`, replacing what was there; returns `destination`.
    A rename within one disk: readers see the whole folder or nothing."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        shutil.rmtree(destination)
    shutil.move(str(folder), destination)
    return destination


class ArtifactStore(Protocol):
    @property
    def location(self) -> str:
        """Where the store is, for logs and health (never holds credentials)."""
        ...

    def write_table(self, key: str, frame: pd.DataFrame) -> int:
        """Store `frame` as Parquet at `key`; returns its size in bytes."""
        ...

    def read_table(self, key: str) -> pd.DataFrame: ...

    def local_file(self, key: str) -> Path:
        """A local copy of the immutable file at `key`; do not modify it."""
        ...

    def put_folder(self, key: str, folder: Path) -> Path:
        """Publish `folder` at `key` (readers see all of it or none); `folder` is consumed and
        the local copy of the published folder is returned."""
        ...

    def local_folder(self, key: str) -> Path:
        """A local copy of the immutable folder at `key`; do not modify it."""
        ...

    def working_folder(self, key: str) -> Path:
        """A host-local folder that `sync_folder` mirrors to `key` (may not exist yet)."""
        ...

    def sync_folder(self, key: str, folder: Path) -> None:
        """Copy the current contents of `folder` to `key`, replacing what was there."""
        ...

    def pull_folder(self, key: str, folder: Path) -> bool:
        """Make `folder` hold what `key` holds; False when `key` holds no complete folder."""
        ...

    def put_file(self, key: str, source: Path) -> None: ...

    def fetch_file(self, key: str, destination: Path) -> bool:
        """Copy the file at `key` to `destination`; False when there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the file or folder at `key`; nothing there is not an error."""
        ...

    def scratch_dir(self) -> Path:
        """A local folder for temporary files, on the same disk as the local copies."""
        ...

    def check(self) -> None:
        """Raise if the store cannot be reached or written right now."""
        ...
