"""The artifact store on an S3-compatible object store (AWS S3, MinIO, Ceph, ...).

API and workers on different machines share the bucket and nothing else on disk. Each host keeps
local copies under `$DISTILLERY_HOME`: `artifact-cache/` for immutable artifacts (datasets and
model bundles, downloaded once), `working/` for folders it mirrors up (checkpoints), `scratch/`
for temporary files. All three sit on one disk, so moving a finished folder into the cache is a
rename.

A folder is published by uploading its files and then `.manifest.json` (each file's size and
SHA-256): a reader that finds no manifest sees no folder, and a download is checked against the
manifest before it is used, so a torn upload is never served.

A mirrored working folder (a job's checkpoints) is uploaded again and again, and a worker can die
during any upload. So each sync writes its files under a fresh generation prefix and only then
swaps the manifest to name it (one PUT, atomic); the previous generation is deleted after the
swap. A sync cut short leaves the last complete checkpoint in place for the next attempt.

Credentials and region come the standard AWS ways (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, an instance role, AWS_DEFAULT_REGION); `DISTILLERY_S3_ENDPOINT_URL` points at a
non-AWS server.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import boto3
import pandas as pd
from botocore.config import Config
from botocore.exceptions import ClientError

from domain.storage.protocol import SCRATCH_DIR, ArtifactNotFound, move_folder_into_place

if TYPE_CHECKING:
    from domain.config import Settings

log = logging.getLogger(__name__)

MANIFEST = ".manifest.json"
MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


class ArtifactCorrupt(OSError):
    """A downloaded file does not match its folder's manifest."""


def _missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in MISSING_CODES


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_manifest(folder: Path) -> dict[str, Any]:
    files = {
        path.relative_to(folder).as_posix(): {"size": path.stat().st_size, "sha256": _sha256(path)}
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    return {"files": files}


def _check_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or "\\" in key or any(p in ("..", ".") for p in parts):
        raise ValueError(f"artifact key {key!r} points outside the store")
    return "/".join(parts)


class S3ArtifactStore:
    def __init__(self, client: Any, bucket: str, prefix: str, home: Path) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        home = home.resolve()
        self.cache_root = home / "artifact-cache"
        self.work_root = home / "working"
        self.scratch_root = home / SCRATCH_DIR.lstrip(".")

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ArtifactStore:
        assert settings.artifact_url is not None
        url = urlparse(settings.artifact_url)
        if not url.netloc:
            raise ValueError(
                f"DISTILLERY_ARTIFACT_URL {settings.artifact_url!r} names no bucket: "
                "use s3://bucket/prefix"
            )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
            ),
        )
        return cls(client, url.netloc, url.path, settings.home)

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def object_name(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def cache_path(self, key: str) -> Path:
        return self.cache_root / _check_key(key)

    def write_table(self, key: str, frame: pd.DataFrame) -> int:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        content = buffer.getvalue()
        self.client.put_object(Bucket=self.bucket, Key=self.object_name(key), Body=content)
        return len(content)

    def read_table(self, key: str) -> pd.DataFrame:
        return pd.read_parquet(self.local_file(key))

    def local_file(self, key: str) -> Path:
        target = self.cache_path(key)
        if target.is_file():
            return target
        if not self.fetch_file(key, target):
            raise ArtifactNotFound(f"no artifact at {self.location}/{key}")
        return target

    def _upload_folder(self, key: str, folder: Path) -> dict[str, Any]:
        manifest = folder_manifest(folder)
        manifest_name = self.object_name(f"{key}/{MANIFEST}")
        # The manifest goes first and comes back last: in between, readers see no folder.
        self.client.delete_object(Bucket=self.bucket, Key=manifest_name)
        self._upload_files(folder, manifest, key)
        self._put_manifest(key, manifest)
        return manifest

    def _upload_files(self, folder: Path, manifest: dict[str, Any], prefix: str) -> None:
        for relative in manifest["files"]:
            self.client.upload_file(
                str(folder / relative), self.bucket, self.object_name(f"{prefix}/{relative}")
            )

    def _put_manifest(self, key: str, manifest: dict[str, Any]) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.object_name(f"{key}/{MANIFEST}"),
            Body=json.dumps(manifest).encode(),
        )

    def _object_names_under(self, key: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.object_name(key)}/"
        )
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def _delete_objects(self, names: list[str]) -> None:
        for start in range(0, len(names), 1000):
            self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": name} for name in names[start : start + 1000]]},
            )

    def _download_folder(self, key: str, destination: Path) -> None:
        """Download the folder at `key` into `destination` (which must not exist), verified."""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.object_name(f"{key}/{MANIFEST}")
            )
        except ClientError as error:
            if _missing(error):
                raise ArtifactNotFound(f"no complete folder at {self.location}/{key}") from error
            raise
        manifest = json.loads(response["Body"].read())
        # A mirrored folder's files sit under the generation its manifest names.
        generation = manifest.get("generation")
        files_at = f"{key}/{_check_key(generation)}" if generation else key
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
        try:
            for relative, expected in manifest["files"].items():
                target = staging / _check_key(relative)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.client.download_file(
                        self.bucket, self.object_name(f"{files_at}/{relative}"), str(target)
                    )
                except ClientError as error:
                    if not _missing(error):
                        raise
                    # Deleted under us: a newer generation replaced the one we read.
                    raise ArtifactCorrupt(
                        f"{self.location}/{files_at}/{relative} is gone"
                    ) from error
                if (
                    target.stat().st_size != expected["size"]
                    or _sha256(target) != expected["sha256"]
                ):
                    raise ArtifactCorrupt(
                        f"{self.location}/{key}/{relative} does not match its manifest"
                    )
            (staging / MANIFEST).write_text(json.dumps(manifest))
            staging.rename(destination)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def put_folder(self, key: str, folder: Path) -> Path:
        manifest = self._upload_folder(key, folder)
        (folder / MANIFEST).write_text(json.dumps(manifest))
        return move_folder_into_place(folder, self.cache_path(key))

    def local_folder(self, key: str) -> Path:
        cached = self.cache_path(key)
        if (cached / MANIFEST).is_file():
            return cached
        if cached.exists():  # left by an older layout or by hand: not trusted
            shutil.rmtree(cached)
        try:
            self._download_folder(key, cached)
        except OSError:
            # Another thread of this host finished the same download first.
            if (cached / MANIFEST).is_file():
                return cached
            raise
        return cached

    def working_folder(self, key: str) -> Path:
        return self.work_root / _check_key(key)

    def sync_folder(self, key: str, folder: Path) -> None:
        manifest = {**folder_manifest(folder), "generation": f"g-{uuid.uuid4().hex[:16]}"}
        generation = f"{key}/{manifest['generation']}"
        self._upload_files(folder, manifest, generation)
        self._put_manifest(key, manifest)
        # Older generations, and any sync cut short, go only once the manifest names the new one.
        manifest_name = self.object_name(f"{key}/{MANIFEST}")
        current = self.object_name(generation) + "/"
        stale = [
            name
            for name in self._object_names_under(key)
            if name != manifest_name and not name.startswith(current)
        ]
        self._delete_objects(stale)

    def pull_folder(self, key: str, folder: Path) -> bool:
        incoming = folder.with_name(f".{folder.name}.incoming")
        shutil.rmtree(incoming, ignore_errors=True)
        try:
            self._download_folder(key, incoming)
        except ArtifactNotFound:
            return False
        except ArtifactCorrupt:
            # An upload cut short by a lost worker: the job starts over rather than resuming
            # from a mix of two checkpoints.
            log.warning("folder %s/%s is incomplete; ignoring it", self.location, key)
            return False
        (incoming / MANIFEST).unlink()
        if folder.exists():
            shutil.rmtree(folder)
        incoming.rename(folder)
        return True

    def put_file(self, key: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self.object_name(key))

    def fetch_file(self, key: str, destination: Path) -> bool:
        destination.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staging = tempfile.mkstemp(
            prefix=f".{destination.name}.", dir=destination.parent
        )
        os.close(descriptor)
        try:
            self.client.download_file(self.bucket, self.object_name(key), staging)
            os.replace(staging, destination)
        except ClientError as error:
            if _missing(error):
                return False
            raise
        finally:
            Path(staging).unlink(missing_ok=True)
        return True

    def delete(self, key: str) -> None:
        doomed = [self.object_name(key), *self._object_names_under(key)]
        # The manifest first, so a reader never sees a folder with files missing.
        doomed.sort(key=lambda object_name: not object_name.endswith(MANIFEST))
        self._delete_objects(doomed)
        cached = self.cache_path(key)
        if cached.is_dir():
            shutil.rmtree(cached, ignore_errors=True)
        else:
            cached.unlink(missing_ok=True)

    def scratch_dir(self) -> Path:
        self.scratch_root.mkdir(parents=True, exist_ok=True)
        return self.scratch_root

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)
