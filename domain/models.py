"""Models: register an uploaded checkpoint archive (hostile until proven otherwise) or a folder
the server already has, or publish a finished job's student; list, download and delete them.
A checkpoint is a Hugging Face folder or an AutoGluon AutoMM predictor folder (converted once
to a bundle by distillery/automm.py).

An uploaded archive is unpacked by domain/archives.py (hostile until proven otherwise), then
checked by the checks every bundle passes, trained ones too (distillery/bundle_checks.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from distillery.automm import automm_root, bundle_from_automm, is_pooled_bundle, rebundle_pooled
from distillery.backbones import Backbone, BackboneError, resolve_checkpoint
from distillery.bundle import METADATA_FILE, BundleMetadata, save_bundle, size_on_disk
from distillery.bundle_checks import (
    CheckpointError,
    bundle_from_checkpoint,
    check_bundle,
    checkpoint_root,
)
from distillery.onnx import write_onnx_package
from distillery.predictor import Predictor
from distillery.variants import example_rows
from domain.archives import MAX_ARCHIVE_MEMBERS, extract_archive
from domain.auth import Caller
from domain.datasets import clean_name
from domain.errors import Conflict, Invalid, TooLarge
from domain.orm import Job, Model, is_well_formed_id, new_id, utcnow
from domain.rows import visible_page, visible_row
from domain.server_paths import allowed_server_path
from domain.status import TERMINAL_STATUSES
from domain.storage import ArtifactStore, model_key


def _check_text_columns(text_columns: list[str]) -> None:
    if not text_columns:
        raise Invalid(
            "Missing text columns",
            "name the input columns this model reads, e.g. text_columns=question,sentence",
            field="text_columns",
        )
    bad = [c for c in text_columns if len(c) > 255 or "\x00" in c]
    if bad:
        raise Invalid(
            "Invalid text columns",
            "column names need 1 to 255 characters and no NUL",
            field="text_columns",
        )


def register_upload(
    session: Session,
    store: ArtifactStore,
    *,
    filename: str,
    content: bytes,
    name: str | None,
    text_columns: list[str],
    labels: list[str] | None,
    owner: str | None,
) -> Model:
    """Unpack, validate (config, weights, tokenizer, label map) and register a checkpoint: a
    Hugging Face folder, or an AutoGluon AutoMM predictor folder (converted to a bundle)."""
    _check_text_columns(text_columns)
    filename = clean_name(Path(filename).name, "checkpoint")
    with tempfile.TemporaryDirectory(dir=store.scratch_dir()) as scratch:
        unpacked = Path(scratch) / "unpacked"
        unpacked.mkdir()
        extract_archive(content, filename, unpacked)
        lineage = {"source": "upload", "filename": filename}
        model_id, destination, metadata = _store_checkpoint(
            store, Path(scratch), unpacked, text_columns, labels, lineage
        )
    return _record_model(
        session,
        model_id,
        clean_name(name, filename.split(".")[0]),
        "upload",
        destination,
        metadata,
        job_id=None,
        owner=owner,
    )


def register_server_folder(
    session: Session,
    store: ArtifactStore,
    *,
    roots: list[Path],
    raw_path: str,
    max_bytes: int,
    name: str | None,
    text_columns: list[str] | None,
    labels: list[str] | None,
    owner: str | None,
) -> Model:
    """Register a checkpoint folder (or an AutoMM predictor folder) the server already has,
    from under `roots` (DISTILLERY_ALLOWED_DATA_ROOTS), with the archive upload's checks. It is
    copied in first: later changes to the folder do not change the model. An AutoMM predictor
    reads the text columns in its assets.json when none are given."""
    folder = allowed_folder(roots, raw_path)
    if text_columns:
        _check_text_columns(text_columns)
    with tempfile.TemporaryDirectory(dir=store.scratch_dir()) as scratch:
        unpacked = Path(scratch) / "unpacked"
        copy_plain_folder(folder, unpacked / folder.name, max_bytes)
        lineage = {"source": "upload", "path": raw_path}
        model_id, destination, metadata = _store_checkpoint(
            store, Path(scratch), unpacked, text_columns or [], labels, lineage
        )
    return _record_model(
        session,
        model_id,
        clean_name(name, folder.name),
        "upload",
        destination,
        metadata,
        job_id=None,
        owner=owner,
    )


def _store_checkpoint(
    store: ArtifactStore,
    scratch: Path,
    unpacked: Path,
    text_columns: list[str],
    labels: list[str] | None,
    lineage: dict[str, Any],
) -> tuple[str, Path, BundleMetadata]:
    """Check (and convert, for an AutoMM predictor) an unpacked checkpoint and put its bundle
    in the store; returns the new model id, its folder and its metadata."""
    try:
        automm = automm_root(unpacked)
        if automm is not None:  # an AutoGluon AutoMM predictor: converted to a bundle
            root = scratch / "bundle"
            metadata = bundle_from_automm(automm, root, labels, text_columns, lineage)
        else:
            _check_text_columns(text_columns)
            root = checkpoint_root(unpacked)
            if is_pooled_bundle(root):  # a converted AutoMM predictor's bundle, again
                metadata = rebundle_pooled(root, labels, text_columns, lineage)
            else:
                metadata = bundle_from_checkpoint(root, labels, text_columns, lineage)
    except CheckpointError as exc:
        detail = str(exc).replace(str(unpacked), "<archive>").replace(str(scratch), "<archive>")
        raise Invalid(exc.title, detail, field=exc.field) from exc
    model_id = new_id("mdl")
    return model_id, store.put_folder(model_key(model_id), root), metadata


def allowed_folder(roots: list[Path], raw_path: str) -> Path:
    """A folder the server may read: absolute, and (links resolved) under one of `roots`."""
    resolved = allowed_server_path(
        roots,
        raw_path,
        upload_instead="upload the folder as an archive with POST /v1/models instead",
    )
    if not resolved.is_dir():
        raise Invalid("Folder not found", f"no folder at '{raw_path}'", field="path")
    return resolved


def copy_plain_folder(source: Path, destination: Path, max_bytes: int) -> None:
    """Copy a folder's regular files and subfolders, as an archive's members are checked: no
    links (a link could reach files outside the allowed roots), no other kinds of file, at most
    MAX_ARCHIVE_MEMBERS entries and `max_bytes` in all."""
    entries = total = 0
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source).as_posix()
        entries += 1
        if entries > MAX_ARCHIVE_MEMBERS:
            raise Invalid(
                "Too many files",
                f"the folder has over {MAX_ARCHIVE_MEMBERS} entries",
                field="path",
            )
        if path.is_symlink():
            raise Invalid(
                "Unsafe folder", f"'{relative}' is a link; links are not followed", field="path"
            )
        if path.is_dir():
            (destination / relative).mkdir(parents=True, exist_ok=True)
            continue
        if not path.is_file():
            raise Invalid("Unsafe folder", f"'{relative}' is not a regular file", field="path")
        total += path.stat().st_size
        if total > max_bytes:
            raise TooLarge(
                "Folder too large",
                f"the folder holds over {max_bytes} bytes, the upload limit",
                field="path",
            )
        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination / relative)
    destination.mkdir(parents=True, exist_ok=True)


def publish_trained(
    session: Session,
    store: ArtifactStore,
    backbone: Backbone,
    metadata: BundleMetadata,
    job: Job,
) -> tuple[Model, Path]:
    """Write a job's trained model as a bundle once, check it as uploads are checked, publish
    it in the store and register it from `metadata` (not read back); the job's owner owns it.
    Returns the model and the local folder of its bundle."""
    model_id = new_id("mdl")
    staging = Path(tempfile.mkdtemp(prefix=".bundle-", dir=store.scratch_dir()))
    try:
        bundle = save_bundle(backbone.model, backbone.tokenizer, metadata, staging / model_id)
        check_bundle(bundle, metadata)
        folder = store.put_folder(model_key(model_id), bundle)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    name = f"{job.kind}-{job.id}"
    return _record_model(
        session, model_id, name, "job", folder, metadata, job.id, job.owner
    ), folder


def _record_model(
    session: Session,
    model_id: str,
    name: str,
    source: str,
    folder: Path,
    metadata: BundleMetadata,
    job_id: str | None,
    owner: str | None,
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
        owner=owner,
    )
    session.add(model)
    session.commit()
    return model


def get_model(
    session: Session, model_id: str, field: str | None = None, *, caller: Caller
) -> Model:
    """The model, if `caller` may see it (domain/rows.py); else NotFound."""
    return visible_row(session, Model, model_id, caller, field)


def list_models(
    session: Session, caller: Caller, limit: int, cursor: str | None
) -> tuple[list[Model], str | None]:
    return visible_page(session, Model, caller, limit, cursor)


def active_jobs_using_model(session: Session, model_id: str) -> list[str]:
    """Ids of unfinished jobs that use the model as teacher or as the student's backbone."""
    jobs = session.scalars(select(Job).where(Job.status.not_in(TERMINAL_STATUSES)))
    return [
        job.id
        for job in jobs
        if job.teacher_model_id == model_id
        or job.hyperparameters.get("model.hf_text.checkpoint_name") == model_id
    ]


def delete_model(session: Session, store: ArtifactStore, model_id: str, caller: Caller) -> Model:
    """Delete the model's bundle and hide its row; 409 while an unfinished job uses it."""
    model = get_model(session, model_id, caller=caller)
    users = active_jobs_using_model(session, model.id)
    if users:
        raise Conflict(
            "Model in use",
            f"model '{model.id}' is used by queued or running job(s) {', '.join(users)}; "
            "cancel them or wait until they finish",
            extra={"jobs": users},
        )
    model.deleted_at = utcnow()
    session.commit()
    store.delete(model.storage_key)
    return model


def bundle_archive(store: ArtifactStore, model: Model) -> Path:
    """The model's bundle folder as a .tar.gz in a temporary file; the caller removes it."""
    handle, name = tempfile.mkstemp(prefix=".download-", suffix=".tar.gz", dir=store.scratch_dir())
    os.close(handle)
    with tarfile.open(name, "w:gz") as archive:
        archive.add(store.local_folder(model.storage_key), arcname=model.id)
    return Path(name)


def onnx_archive(session: Session, store: ArtifactStore, model: Model, max_rows: int) -> Path:
    """The model as ONNX (fp32 and int8 graphs, tokenizer, distillery.json and onnx-check.json)
    in a temporary .tar.gz the caller removes. Both graphs are checked against torch on the
    tuning rows of the job that made the model (else on two example rows); the check is also
    recorded in the model's metrics."""
    predictor = Predictor(store.local_folder(model.storage_key), device="cpu")
    job = session.get(Job, model.job_id) if model.job_id else None
    tuning = job.tuning_dataset if job is not None else None
    if tuning is not None and tuning.deleted_at is None:
        rows = predictor.encode(store.read_table(tuning.storage_key).head(max_rows))
        checked_on = f"tuning dataset {tuning.id}"
    else:
        rows, checked_on = example_rows(predictor), "two example rows"
    handle, name = tempfile.mkstemp(prefix=".onnx-", suffix=".tar.gz", dir=store.scratch_dir())
    os.close(handle)
    with tempfile.TemporaryDirectory(dir=store.scratch_dir()) as scratch:
        folder = Path(scratch) / model.id
        check = write_onnx_package(
            predictor.model, predictor.tokenizer, rows, predictor.pad_token_id, folder
        )
        check["checked_on"] = checked_on
        shutil.copy(predictor.folder / METADATA_FILE, folder / METADATA_FILE)
        (folder / "onnx-check.json").write_text(json.dumps(check, indent=2))
        with tarfile.open(name, "w:gz") as archive:
            archive.add(folder, arcname=model.id)
    model.metrics = {**model.metrics, "onnx": check}
    session.commit()
    return Path(name)


def download_archive(
    session: Session, store: ArtifactStore, model: Model, archive_format: str, max_rows: int
) -> tuple[Path, str]:
    """The archive GET .../download serves ("bundle" or "onnx") and its file name; the caller
    removes the temporary file."""
    if archive_format == "onnx":
        return onnx_archive(session, store, model, max_rows), f"{model.id}-onnx.tar.gz"
    return bundle_archive(store, model), f"{model.id}.tar.gz"


def resolve_backbone(
    session: Session,
    store: ArtifactStore,
    name: str,
    caller: Caller | None = None,
    allowed_roots: list[Path] | None = None,
) -> Path:
    """A registered model id, a local checkpoint folder, or a packaged public model.

    With a `caller` (the API; the worker passes none, the job was checked when submitted), a
    model id must be one they may see, and a non-admin's folder must lie under `allowed_roots`:
    otherwise a path would reach other owners' bundles in the artifact store.
    """
    if name.startswith("mdl_"):
        model = session.get(Model, name) if is_well_formed_id("mdl", name) else None
        if (
            model is None
            or model.deleted_at is not None
            or (caller is not None and not caller.can_see(model.owner))
        ):
            raise BackboneError(f"checkpoint '{name}' looks like a model id, but no such model")
        return store.local_folder(model.storage_key)
    folder = resolve_checkpoint(name)
    if caller is not None and not caller.is_admin and Path(name).expanduser().is_dir():
        resolved = folder.resolve()
        roots = [root.resolve() for root in allowed_roots or []]
        if not any(resolved.is_relative_to(root) for root in roots):
            raise BackboneError(
                f"checkpoint folder '{name}' is outside the folders this server lets API keys "
                "read (DISTILLERY_ALLOWED_DATA_ROOTS); use a registered model id or a packaged "
                "model name"
            )
    return folder


