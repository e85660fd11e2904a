"""Read multipart uploads with a size cap enforced while streaming, and parse list fields."""

from __future__ import annotations

from fastapi import UploadFile

from app.errors import Problem

CHUNK_BYTES = 1024 * 1024


async def read_capped(upload: UploadFile, max_bytes: int) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while chunk := await upload.read(CHUNK_BYTES):
        total += len(chunk)
        if total > max_bytes:
            raise Problem(
                413, "File too large", f"the file is over the {max_bytes} byte limit", field="file"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_name_list(value: str | None) -> list[str] | None:
    """'question, sentence' or '["question", "sentence"]' -> ['question', 'sentence']."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.startswith("["):
        text = text.strip("[]")
    names = [part.strip().strip("'\"") for part in text.split(",")]
    return [name for name in names if name]
