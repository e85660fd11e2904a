"""Paths on the server that a request may name (from-path registration of datasets and models):
absolute, and under one of DISTILLERY_ALLOWED_DATA_ROOTS once links are resolved."""

from __future__ import annotations

from pathlib import Path

from domain.errors import Forbidden, Invalid


def allowed_server_path(roots: list[Path], raw_path: str, *, upload_instead: str) -> Path:
    """`raw_path` resolved, if it lies under one of `roots`; `upload_instead` tells the caller
    what to do when server paths are off (no roots configured)."""
    if not roots:
        raise Forbidden(
            "Server paths disabled",
            "this server does not register server-side paths (DISTILLERY_ALLOWED_DATA_ROOTS "
            f"is empty); {upload_instead}",
            field="path",
        )
    if "\x00" in raw_path or not Path(raw_path).is_absolute():
        raise Invalid("Invalid path", "path must be an absolute path on the server", field="path")
    # resolve() follows links, so a link under a root that points elsewhere is refused too.
    resolved = Path(raw_path).resolve()
    allowed = [root.resolve() for root in roots]
    if not any(resolved.is_relative_to(root) for root in allowed):
        raise Forbidden(
            "Path not allowed",
            f"'{raw_path}' is outside the folders this server may read "
            f"({', '.join(str(root) for root in allowed)})",
            field="path",
        )
    return resolved
