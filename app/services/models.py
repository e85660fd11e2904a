"""Models: register an uploaded checkpoint archive (hostile until proven otherwise) or a finished
job's bundle; list, download and delete them.

An uploaded archive is checked before and while it is unpacked: its type by content; every
member's path (no `..`, no absolute or drive paths, no backslashes), kind (regular files and
folders only: no links, devices or sparse files), count, unpacked size and compression ratio.
Then the checkpoint itself: no pickled weights anywhere, a config.json that transformers knows
without running the checkpoint's own code, safetensors weights that load, a tokenizer that
loads and runs, and a label map that matches the classifier's outputs.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from transformers import AutoConfig

from app.auth import Caller
from app.errors import Problem, not_found
from app.orm import TERMINAL_STATUSES, Job, Model, is_well_formed_id, new_id, utcnow
from app.pagination import paginate
from app.services.datasets import clean_name
from app.storage import ArtifactStore, model_key
from distillery.backbones import (
    BackboneError,
    count_parameters,
    load_classifier,
    resolve_checkpoint,
)
from distillery.bundle import BundleMetadata, read_metadata, size_on_disk, write_metadata

MAX_ARCHIVE_MEMBERS = 2000
MAX_UNPACKED_BYTES = 8 * 1024**3
# Weights barely compress and text files compress about tenfold; far more than this is a bomb.
MAX_COMPRESSION_RATIO = 100
# Under this much unpacked data the ratio does not matter: configs, vocabularies and tar
# padding compress very well and are harmless.
RATIO_FREE_BYTES = 1024 * 1024
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy")
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
GZIP_SIGNATURE = b"\x1f\x8b"
UNIX_FILE_TYPE_MASK = 0o170000
UNIX_REGULAR, UNIX_DIRECTORY, UNIX_SYMLINK = 0o100000, 0o040000, 0o120000
CHUNK_BYTES = 1024 * 1024
# A tokenizer needs its vocabulary: without one of these, transformers quietly builds an empty
# tokenizer that turns every word into [UNK].
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def _unsafe(detail: str, status: int = 422, title: str = "Unsafe archive") -> Problem:
    return Problem(status, title, detail, field="file")


def _check_member_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if (
        path.is_absolute()
        or ".." in path.parts
        or name.startswith(("\\", "/"))
        or "\\" in name
        or ":" in name
        or "\x00" in name
    ):
        raise _unsafe(f"archive member '{name}' leaves the archive's folder")
    return path


def _ratio_limit(compressed_bytes: int) -> int:
    return max(RATIO_FREE_BYTES, MAX_COMPRESSION_RATIO * compressed_bytes)


def _check_totals(members: int, unpacked: int, compressed: int) -> None:
    if members > MAX_ARCHIVE_MEMBERS:
        raise _unsafe(
            f"the archive has {members} members; at most {MAX_ARCHIVE_MEMBERS} are accepted",
            title="Archive too large",
        )
    if unpacked > MAX_UNPACKED_BYTES:
        raise _unsafe(
            f"the archive unpacks to {unpacked} bytes; at most {MAX_UNPACKED_BYTES} are accepted",
            status=413,
            title="Archive too large",
        )
    if unpacked > _ratio_limit(compressed):
        raise _unsafe(
            f"the archive unpacks to {unpacked} bytes from {compressed}: more than "
            f"{MAX_COMPRESSION_RATIO} times its size, which checkpoints never are (a zip bomb?)"
        )


def _extract_zip(content: bytes, destination: Path) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError) as exc:
        raise _unsafe(f"not a readable zip archive: {exc}", 415, "Unreadable archive") from None
    with archive:
        members = archive.infolist()
        _check_totals(len(members), 0, len(content))
        unpacked = 0
        for member in members:
            _check_member_name(member.filename)
            file_type = (member.external_attr >> 16) & UNIX_FILE_TYPE_MASK
            if file_type == UNIX_SYMLINK:
                raise _unsafe(f"archive member '{member.filename}' is a link")
            if file_type not in (0, UNIX_REGULAR, UNIX_DIRECTORY):
                raise _unsafe(f"archive member '{member.filename}' is not a regular file")
            if member.flag_bits & 0x1:
                raise _unsafe(f"archive member '{member.filename}' is encrypted")
            if member.file_size > _ratio_limit(member.compress_size):
                raise _unsafe(
                    f"archive member '{member.filename}' unpacks to {member.file_size} bytes "
                    f"from {member.compress_size}: more than {MAX_COMPRESSION_RATIO} times "
                    "its size (a zip bomb?)"
                )
            unpacked += member.file_size
        _check_totals(len(members), unpacked, len(content))
        # zipfile stops each member at its declared size (and fails its CRC past it), so the
        # declared sizes checked above bound what lands on disk.
        try:
            archive.extractall(destination)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as exc:
            raise _unsafe(f"the archive is corrupt: {exc}", title="Unreadable archive") from None


def _gunzip_capped(content: bytes, target: Path) -> None:
    """Decompress gzip (all members) into `target`, stopping as soon as it passes the caps."""
    limit = min(MAX_UNPACKED_BYTES, _ratio_limit(len(content)))
    written = 0
    pending = content
    with target.open("wb") as out:
        while pending:
            decompressor = zlib.decompressobj(wbits=31)
            while not decompressor.eof:
                try:
                    chunk = decompressor.decompress(pending, CHUNK_BYTES)
                except zlib.error as exc:
                    raise _unsafe(f"corrupt gzip data: {exc}", title="Unreadable archive") from None
                pending = decompressor.unconsumed_tail
                if not chunk and not pending:
                    raise _unsafe("the gzip data is truncated", title="Unreadable archive")
                written += len(chunk)
                if written > limit == MAX_UNPACKED_BYTES:
                    raise _unsafe(
                        f"the archive unpacks to more than {limit} bytes, the most accepted",
                        status=413,
                        title="Archive too large",
                    )
                if written > limit:
                    raise _unsafe(
                        f"the archive unpacks to more than {limit} bytes from {len(content)}: "
                        f"more than {MAX_COMPRESSION_RATIO} times its size, which checkpoints "
                        "never are (a zip bomb?)"
                    )
                out.write(chunk)
            pending = decompressor.unused_data
            if not pending.startswith(GZIP_SIGNATURE):
                break  # trailing padding after the last member


def _extract_tar(content: bytes, destination: Path, scratch: Path) -> None:
    if content.startswith(GZIP_SIGNATURE):
        tar_path = scratch / "archive.tar"
        _gunzip_capped(content, tar_path)
        source: Any = tar_path.open("rb")
    else:
        source = io.BytesIO(content)
    with source:
        try:
            archive = tarfile.open(fileobj=source, mode="r:")  # noqa: SIM115
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise _unsafe(f"not a readable tar archive: {exc}", 415, "Unreadable archive") from None
        with archive:
            try:
                members = archive.getmembers()
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise _unsafe(
                    f"the archive is corrupt: {exc}", title="Unreadable archive"
                ) from None
            unpacked = 0
            for member in members:
                _check_member_name(member.name)
                if member.issym() or member.islnk():
                    raise _unsafe(f"archive member '{member.name}' is a link")
                if not (member.isfile() or member.isdir()) or member.issparse():
                    raise _unsafe(f"archive member '{member.name}' is not a regular file")
                unpacked += member.size
            _check_totals(len(members), unpacked, len(content))
            try:
                # The "data" filter re-checks paths and links as a second line of defence.
                archive.extractall(destination, filter="data")
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise _unsafe(
                    f"the archive is corrupt: {exc}", title="Unreadable archive"
                ) from None


def extract_archive(content: bytes, filename: str, destination: Path) -> None:
    """Unpack a zip or (gzipped) tar archive, recognised by content, into `destination`."""
    scratch = Path(tempfile.mkdtemp(dir=destination.parent))
    try:
        if content.startswith(ZIP_SIGNATURES):
            _extract_zip(content, destination)
        elif content.startswith(GZIP_SIGNATURE) or content[257:262] == b"ustar":
            _extract_tar(content, destination, scratch)
        else:
            raise Problem(
                415,
                "Unsupported archive",
                f"'{filename}' is not a .zip or .tar.gz archive (judged by its content); "
                "upload the checkpoint folder (config.json, *.safetensors, tokenizer files) "
                "as .zip or .tar.gz",
                field="file",
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


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


def _check_config(root: Path) -> None:
    """config.json must be a JSON object naming an architecture transformers ships."""
    try:
        raw = json.loads((root / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Problem(
            422, "Invalid config", f"config.json is not valid JSON: {exc}", field="file"
        ) from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model_type"), str):
        raise Problem(
            422,
            "Invalid config",
            'config.json must be an object with a model_type (e.g. "bert"), as '
            "save_pretrained writes it",
            field="file",
        )
    if "auto_map" in raw:
        raise Problem(
            422,
            "Custom code refused",
            "config.json asks to run the checkpoint's own code (auto_map); remote code is "
            "never run here: use an architecture built into transformers",
            field="file",
        )


def _labels_from_config(root: Path, given: list[str] | None) -> tuple[str, list[str]]:
    config = AutoConfig.from_pretrained(str(root), local_files_only=True, trust_remote_code=False)
    if given is not None and len(set(given)) != len(given):
        raise Problem(422, "Invalid labels", "labels repeat a name", field="labels")
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
    if len(set(labels)) != len(labels):
        raise Problem(
            422, "Invalid labels", "the checkpoint's id2label repeats a name", field="labels"
        )
    return ("binary" if len(labels) == 2 else "multiclass"), labels


def _check_text_columns(text_columns: list[str]) -> None:
    if not text_columns:
        raise Problem(
            422,
            "Missing text columns",
            "name the input columns this model reads, e.g. text_columns=question,sentence",
            field="text_columns",
        )
    bad = [c for c in text_columns if len(c) > 255 or "\x00" in c]
    if bad:
        raise Problem(
            422,
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
    """Unpack, validate (config, weights, tokenizer, label map) and register a checkpoint."""
    _check_text_columns(text_columns)
    filename = clean_name(Path(filename).name, "checkpoint")
    with tempfile.TemporaryDirectory(dir=store.scratch_dir()) as scratch:
        unpacked = Path(scratch) / "unpacked"
        unpacked.mkdir()
        extract_archive(content, filename, unpacked)
        root = _checkpoint_root(unpacked)
        pickled = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.suffix.lower() in PICKLED_SUFFIXES
        )
        if pickled:
            raise Problem(
                422,
                "Pickled weights refused",
                f"{', '.join(pickled)}: pickled weights can run code when loaded; "
                "convert them to safetensors (model.save_pretrained(dir, "
                "safe_serialization=True)) and upload again",
                field="file",
            )
        _check_config(root)
        if not any((root / name).is_file() for name in TOKENIZER_FILES):
            raise Problem(
                422,
                "Missing tokenizer",
                "the checkpoint has no tokenizer vocabulary (one of "
                f"{', '.join(TOKENIZER_FILES)}); save the tokenizer with "
                "tokenizer.save_pretrained(dir) next to the model",
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
            backbone.tokenizer("a tokenizer check", truncation=True, max_length=16)
        except Problem:
            raise
        except Exception as exc:  # transformers' many ways of saying "not a usable checkpoint"
            message = str(exc).replace(str(root), "<archive>").replace(scratch, "<archive>")
            raise Problem(
                422, "Unusable checkpoint", message[:2000] or type(exc).__name__, field="file"
            ) from exc
        metadata = BundleMetadata(
            problem_type=problem_type,
            labels=label_names,
            text_columns=text_columns,
            num_parameters=count_parameters(backbone.model),
            architecture=type(backbone.model).__name__,
            lineage={"source": "upload", "filename": filename},
        )
        # The label map goes into config.json too, so the bundle, once downloaded, names its
        # classes for plain transformers users and when uploaded again.
        backbone.model.config.save_pretrained(root)
        write_metadata(root, metadata)
        model_id = new_id("mdl")
        destination = store.put_folder(model_key(model_id), root)
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


def register_bundle(
    session: Session, store: ArtifactStore, model_id: str, name: str, job_id: str
) -> Model:
    """Record a bundle a job already wrote at the model's key; the job's owner owns it."""
    folder = store.local_folder(model_key(model_id))
    job = session.get(Job, job_id)
    return _record_model(
        session,
        model_id,
        name,
        "job",
        folder,
        read_metadata(folder),
        job_id,
        owner=job.owner if job is not None else None,
    )


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
    """The model, if it exists, is not deleted and `caller` may see it; else 404."""
    model = session.get(Model, model_id) if is_well_formed_id("mdl", model_id) else None
    if model is None or model.deleted_at is not None or not caller.can_see(model.owner):
        raise not_found("model", model_id, field)
    return model


def list_models(
    session: Session, caller: Caller, limit: int, cursor: str | None
) -> tuple[list[Model], str | None]:
    query = caller.visible(select(Model).where(Model.deleted_at.is_(None)), Model.owner)
    return paginate(session, query, Model.created_at, Model.id, limit, cursor)


def active_jobs_using_model(session: Session, model_id: str) -> list[str]:
    """Ids of unfinished jobs that use the model as teacher or as the student's backbone."""
    jobs = session.scalars(select(Job).where(Job.status.not_in(TERMINAL_STATUSES)))
    return [
        job.id
        for job in jobs
        if job.teacher_model_id == model_id
        or job.hyperparameters.get("model.hf_text.checkpoint_name") == model_id
    ]


def delete_model(
    session: Session, store: ArtifactStore, model_id: str, caller: Caller
) -> Model:
    """Delete the model's bundle and hide its row; 409 while an unfinished job uses it."""
    model = get_model(session, model_id, caller=caller)
    users = active_jobs_using_model(session, model.id)
    if users:
        raise Problem(
            409,
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


def encoder_layer_count(folder: Path) -> int | None:
    raw: Any = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    return getattr(raw, "num_hidden_layers", None)
