"""Artifact store: where datasets, model bundles, checkpoints and teacher outputs live, addressed
by relative keys.

Keys, not paths, go into the database, so the store can move. `DISTILLERY_ARTIFACT_URL` picks
the store: a local directory (the default, `$HOME/artifacts`, or a volume shared by processes on
one host) or `s3://bucket/prefix` on an S3-compatible object store, which API and workers on
different machines share (app/storage_s3.py).

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
from typing import TYPE_CHECKING, Protocol

import pandas as pd

if TYPE_CHECKING:
    from app.config import Settings

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


class LocalArtifactStore:
    """A directory: every local copy is the artifact itself, and mirroring is a no-op."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def location(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        resolved = (self.root / key).resolve()
        if not resolved.is_relative_to(self.root) or resolved == self.root:
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
        return pd.read_parquet(self.local_file(key))

    def local_file(self, key: str) -> Path:
        target = self.path(key)
        if not target.is_file():
            raise ArtifactNotFound(f"no artifact at {key!r}")
        return target

    def put_folder(self, key: str, folder: Path) -> Path:
        return move_folder_into_place(folder, self.path(key))

    def local_folder(self, key: str) -> Path:
        target = self.path(key)
        if not target.is_dir():
            raise ArtifactNotFound(f"no folder at {key!r}")
        return target

    def working_folder(self, key: str) -> Path:
        return self.path(key)

    def sync_folder(self, key: str, folder: Path) -> None:
        if folder.resolve() != self.path(key):
            raise ValueError(f"{folder} is not the working folder of {key!r}")

    def pull_folder(self, key: str, folder: Path) -> bool:
        if folder.resolve() != self.path(key):
            raise ValueError(f"{folder} is not the working folder of {key!r}")
        return folder.is_dir()

    def put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        if source.resolve() == target:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.partial")
        shutil.copyfile(source, staging)
        staging.replace(target)

    def fetch_file(self, key: str, destination: Path) -> bool:
        target = self.path(key)
        if not target.is_file():
            return False
        if destination.resolve() != target:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target, destination)
        return True

    def delete(self, key: str) -> None:
        target = self.path(key)
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)

    def scratch_dir(self) -> Path:
        scratch = self.root / SCRATCH_DIR
        scratch.mkdir(parents=True, exist_ok=True)
        return scratch

    def check(self) -> None:
        # Not through scratch_dir(), which would quietly recreate a vanished (unmounted) root.
        probe = self.root / ".ready-probe"
        probe.write_bytes(b"ok")
        probe.unlink()


def make_store(settings: Settings) -> ArtifactStore:
    """The store `settings` name: `DISTILLERY_ARTIFACT_URL`, else the local artifact dir."""
    url = settings.artifact_url
    if url is None or url.startswith("file://"):
        root = Path(url.removeprefix("file://")) if url else settings.resolved_artifact_dir()
        return LocalArtifactStore(root)
    if url.startswith("s3://"):
        # boto3 is imported only by deployments that use an object store.
        from app.storage_s3 import S3ArtifactStore

        return S3ArtifactStore.from_settings(settings)
    raise ValueError(
        f"DISTILLERY_ARTIFACT_URL {url!r} is neither file:///path nor s3://bucket/prefix"
    )


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}.parquet"


def model_key(model_id: str) -> str:
    return f"models/{model_id}"


def checkpoint_key(job_id: str) -> str:
    return f"checkpoints/{job_id}"


# Teacher outputs shared by every job (see distillery/teacher_cache.py).
TEACHER_OUTPUTS_KEY = "teacher_outputs"
