"""The artifact store (see protocol.py for the contract): `make_store` picks a local directory
or an S3-compatible object store from the settings."""

from __future__ import annotations

from pathlib import Path

from domain.config import Settings
from domain.storage.keys import (
    TEACHER_OUTPUTS_KEY,
    checkpoint_key,
    dataset_key,
    model_key,
    variant_key,
)
from domain.storage.local import LocalArtifactStore
from domain.storage.protocol import ArtifactNotFound, ArtifactStore

__all__ = [
    "TEACHER_OUTPUTS_KEY",
    "ArtifactNotFound",
    "ArtifactStore",
    "LocalArtifactStore",
    "checkpoint_key",
    "dataset_key",
    "make_store",
    "model_key",
    "variant_key",
]


def make_store(settings: Settings) -> ArtifactStore:
    """The store `settings` name: `DISTILLERY_ARTIFACT_URL`, else the local artifact dir."""
    url = settings.artifact_url
    if url is None or url.startswith("file://"):
        root = Path(url.removeprefix("file://")) if url else settings.resolved_artifact_dir()
        return LocalArtifactStore(root)
    if url.startswith("s3://"):
        # boto3 is imported only by deployments that use an object store.
        from domain.storage.s3 import S3ArtifactStore

        return S3ArtifactStore.from_settings(settings)
    raise ValueError(
        f"DISTILLERY_ARTIFACT_URL {url!r} is neither file:///path nor s3://bucket/prefix"
    )
