"""What the console's forms send, read the way the API reads its requests."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from domain.errors import Invalid


def blank_to_none(value: str | None) -> str | None:
    """A form sends every field, empty when left blank; the API's default is 'left out'."""
    if value is None or not value.strip():
        return None
    return value.strip()


class UploadOptions(BaseModel):
    """The upload form's options, constrained as POST /v1/datasets constrains them, so a bad
    one gets the API's own message."""

    delimiter: str | None = Field(default=None, pattern=r'^[^\r\n"]?$')


def parse_hyperparameters(text: str) -> dict[str, Any]:
    """`key=value`, one per line (blank lines and `#` comments skipped). A value is read as
    JSON where it is JSON (3e-3, 2, true, [0, 2]) and as a string otherwise (a checkpoint
    path), so the job gets the same dict a JSON request body would carry."""
    values: dict[str, Any] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = (part.strip() for part in line.partition("="))
        if not separator or not key:
            raise Invalid(
                "Invalid hyperparameter",
                f"line {number}: write key=value, e.g. optimization.max_epochs=2",
                field="hyperparameters",
            )
        try:
            values[key] = json.loads(value)
        except ValueError:
            values[key] = value
    return values


def format_hyperparameters(values: dict[str, Any]) -> str:
    return "\n".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in values.items()
    )
