"""The artifact store as a local directory (the default, or a volume shared on one host)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from domain.storage.protocol import SCRATCH_DIR, ArtifactNotFound, move_folder_into_place


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
