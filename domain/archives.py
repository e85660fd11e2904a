"""Unpack an uploaded archive, hostile until proven otherwise: its type is judged by content;
every member's path (no `..`, no absolute or drive paths, no backslashes), kind (regular files
and folders only: no links, devices or sparse files), count, unpacked size and compression
ratio are checked before and while it is unpacked."""

from __future__ import annotations

import io
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from domain.errors import DomainError, Invalid, TooLarge, Unsupported

MAX_ARCHIVE_MEMBERS = 2000
MAX_UNPACKED_BYTES = 8 * 1024**3
# Weights barely compress and text files compress about tenfold; far more than this is a bomb.
MAX_COMPRESSION_RATIO = 100
# Under this much unpacked data the ratio does not matter: configs, vocabularies and tar
# padding compress very well and are harmless.
RATIO_FREE_BYTES = 1024 * 1024
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
GZIP_SIGNATURE = b"\x1f\x8b"
UNIX_FILE_TYPE_MASK = 0o170000
UNIX_REGULAR, UNIX_DIRECTORY, UNIX_SYMLINK = 0o100000, 0o040000, 0o120000
CHUNK_BYTES = 1024 * 1024


def _unsafe(
    detail: str, kind: type[DomainError] = Invalid, title: str = "Unsafe archive"
) -> DomainError:
    return kind(title, detail, field="file")


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
            kind=TooLarge,
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
        raise _unsafe(
            f"not a readable zip archive: {exc}", Unsupported, "Unreadable archive"
        ) from None
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
                        kind=TooLarge,
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
            raise _unsafe(
                f"not a readable tar archive: {exc}", Unsupported, "Unreadable archive"
            ) from None
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
            raise Unsupported(
                "Unsupported archive",
                f"'{filename}' is not a .zip or .tar.gz archive (judged by its content); "
                "upload the checkpoint folder (config.json, *.safetensors, tokenizer files) "
                "as .zip or .tar.gz",
                field="file",
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
