"""Register models: from an uploaded checkpoint archive, or from a finished job's bundle."""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy.orm import Session
from transformers import AutoConfig

from app.errors import Problem, not_found
from app.orm import Model, new_id
from app.storage import LocalArtifactStore, model_key
from distillery.backbones import (
    BackboneError,
    count_parameters,
    load_classifier,
    resolve_checkpoint,
)
from distillery.bundle import BundleMetadata, read_metadata, size_on_disk, write_metadata

MAX_ARCHIVE_MEMBERS = 2000
MAX_UNPACKED_BYTES = 8 * 1024**3
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def _check_member_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or name.startswith(("\\", "/")) or ":" in name:
        raise Problem(
            422,
            "Unsafe archive",
            f"archive member '{name}' leaves the archive's folder",
            field="file",
        )
    return path


def extract_archive(content: bytes, filename: str, destination: Path) -> None:
    """Unpack a .zip or .tar.gz, refusing links, escaping paths and oversized content."""
    lowered = filename.lower()
    total = 0
    if lowered.endswith(".zip"):
        try:
            archive = zipfile.ZipFile(io.BytesIO(content))
        except zipfile.BadZipFile as exc:
            raise Problem(
                415, "Unreadable archive", f"not a zip archive: {exc}", field="file"
            ) from None
        with archive:
            members = archive.infolist()
            if len(members) > MAX_ARCHIVE_MEMBERS:
                raise Problem(
                    422,
                    "Archive too large",
                    f"more than {MAX_ARCHIVE_MEMBERS} members",
                    field="file",
                )
            for member in members:
                _check_member_name(member.filename)
                if (member.external_attr >> 16) & 0o170000 == 0o120000:
                    raise Problem(
                        422,
                        "Unsafe archive",
                        f"archive member '{member.filename}' is a link",
                        field="file",
                    )
                total += member.file_size
            if total > MAX_UNPACKED_BYTES:
                raise Problem(
                    413, "Archive too large", "unpacked size is over the limit", field="file"
                )
            archive.extractall(destination)
        return
    if lowered.endswith((".tar.gz", ".tgz", ".tar")):
        try:
            archive_tar = tarfile.open(fileobj=io.BytesIO(content), mode="r:*")  # noqa: SIM115
        except tarfile.TarError as exc:
            raise Problem(
                415, "Unreadable archive", f"not a tar archive: {exc}", field="file"
            ) from None
        with archive_tar:
            tar_members = archive_tar.getmembers()
            if len(tar_members) > MAX_ARCHIVE_MEMBERS:
                raise Problem(
                    422,
                    "Archive too large",
                    f"more than {MAX_ARCHIVE_MEMBERS} members",
                    field="file",
                )
            for tar_member in tar_members:
                _check_member_name(tar_member.name)
                if not (tar_member.isfile() or tar_member.isdir()):
                    raise Problem(
                        422,
                        "Unsafe archive",
                        f"archive member '{tar_member.name}' is not a regular file",
                        field="file",
                    )
                total += tar_member.size
            if total > MAX_UNPACKED_BYTES:
                raise Problem(
                    413, "Archive too large", "unpacked size is over the limit", field="file"
                )
            archive_tar.extractall(destination, filter="data")
        return
    raise Problem(
        415, "Unsupported archive", "upload the checkpoint folder as .zip or .tar.gz", field="file"
    )


def _checkpoint_root(folder: Path) -> Path:
    """The folder holding config.json: the archive's top, or its single top-level folder."""
    if (folder / "config.json").is_file():
        return folder
    children = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("__MACOSX")]
    if len(children) == 1 and (children[0] / "config.json").is_file():
        return children[0]
    raise Problem(
        422, "Not a checkpoint", "the archive has no config.json at its top level", field="file"
    )


def _labels_from_config(root: Path, given: list[str] | None) -> tuple[str, list[str]]:
    config = AutoConfig.from_pretrained(str(root), local_files_only=True, trust_remote_code=False)
    if config.problem_type == "regression" or (config.num_labels == 1 and not given):
        return "regression", []
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    labels = [id2label[i] for i in sorted(id2label)]
    if given:
        if len(given) != config.num_labels:
            raise Problem(
                422,
                "Label map mismatch",
                f"labels lists {len(given)} names but the checkpoint has "
                f"{config.num_labels} outputs",
                field="labels",
            )
        labels = given
    elif all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
        raise Problem(
            422,
            "Missing label map",
            "the checkpoint's config.json has no id2label names (only LABEL_0...); "
            "send labels, e.g. labels=entailment,not_entailment",
            field="labels",
        )
    return ("binary" if len(labels) == 2 else "multiclass"), labels


def register_upload(
    session: Session,
    store: LocalArtifactStore,
    *,
    filename: str,
    content: bytes,
    name: str | None,
    text_columns: list[str],
    labels: list[str] | None,
) -> Model:
    """Unpack, validate (config, weights, tokenizer, label map) and register a checkpoint."""
    if not text_columns:
        raise Problem(
            422,
            "Missing text columns",
            "name the input columns this model reads, e.g. text_columns=question,sentence",
            field="text_columns",
        )
    with tempfile.TemporaryDirectory(dir=store.root) as scratch:
        extract_archive(content, filename, Path(scratch))
        root = _checkpoint_root(Path(scratch))
        pickled = [p.name for p in root.iterdir() if p.suffix in PICKLED_SUFFIXES]
        if pickled:
            raise Problem(
                422,
                "Pickled weights refused",
                f"{', '.join(pickled)}: pickled weights can run code when loaded; "
                "convert them to safetensors (model.save_pretrained(dir, "
                "safe_serialization=True)) and upload again",
                field="file",
            )
        try:
            problem_type, label_names = _labels_from_config(root, labels)
            backbone = load_classifier(
                root,
                num_labels=max(1, len(label_names)),
                id2label=dict(enumerate(label_names)) if label_names else None,
                problem_type=problem_type,
            )
        except (OSError, ValueError) as exc:
            raise Problem(422, "Unusable checkpoint", str(exc), field="file") from exc
        metadata = BundleMetadata(
            problem_type=problem_type,
            labels=label_names,
            text_columns=text_columns,
            num_parameters=count_parameters(backbone.model),
            architecture=type(backbone.model).__name__,
            lineage={"source": "upload", "filename": filename},
        )
        write_metadata(root, metadata)
        model_id = new_id("mdl")
        destination = store.path(model_key(model_id))
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(root), destination)
    return _record_model(
        session,
        model_id,
        name or Path(filename).name.split(".")[0],
        "upload",
        destination,
        metadata,
        job_id=None,
    )


def register_bundle(
    session: Session, store: LocalArtifactStore, model_id: str, name: str, job_id: str
) -> Model:
    """Record a bundle a job already wrote at the model's key."""
    folder = store.path(model_key(model_id))
    return _record_model(session, model_id, name, "job", folder, read_metadata(folder), job_id)


def _record_model(
    session: Session,
    model_id: str,
    name: str,
    source: str,
    folder: Path,
    metadata: BundleMetadata,
    job_id: str | None,
) -> Model:
    model = Model(
        id=model_id,
        name=name,
        source=source,
        problem_type=metadata.problem_type,
        labels=metadata.labels,
        text_columns=metadata.text_columns,
        architecture=metadata.architecture,
        num_parameters=metadata.num_parameters,
        size_bytes=size_on_disk(folder),
        storage_key=model_key(model_id),
        job_id=job_id,
        metrics=metadata.metrics,
        lineage=metadata.lineage,
    )
    session.add(model)
    session.commit()
    return model


def get_model(session: Session, model_id: str, field: str | None = None) -> Model:
    model = session.get(Model, model_id)
    if model is None:
        raise not_found("model", model_id, field)
    return model


def resolve_backbone(session: Session, store: LocalArtifactStore, name: str) -> Path:
    """A registered model id, a local checkpoint folder, or a packaged public model."""
    if name.startswith("mdl_"):
        model = session.get(Model, name)
        if model is None:
            raise BackboneError(f"checkpoint '{name}' looks like a model id, but no such model")
        return store.path(model.storage_key)
    return resolve_checkpoint(name)


def encoder_layer_count(folder: Path) -> int | None:
    raw: Any = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    return getattr(raw, "num_hidden_layers", None)
