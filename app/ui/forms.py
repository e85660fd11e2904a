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


# The submit form's search settings (kind auto_distill), named as the API's `auto` keys.
AUTO_TEXT_FIELDS = (
    "auto.presets",
    "auto.max_latency_ms_per_row",
    "auto.latency_mode",
    "auto.min_speedup",
    "auto.max_size_mb",
    "auto.time_limit",
    "auto.max_trials",
    "auto.scheduler",
    "auto.students",
)
# Checkboxes: a form sends a ticked one as "on" and leaves an unticked one out.
AUTO_CHECKBOXES = ("auto.int8", "auto.no_distill", "auto.packaged_students")
# What a new search form starts with: the API's defaults.
AUTO_DEFAULTS = {
    "auto.presets": "medium_quality",
    "auto.latency_mode": "batched",
    "auto.scheduler": "ASHA",
    **{name: "on" for name in AUTO_CHECKBOXES},
}


def auto_settings(form: dict[str, str]) -> dict[str, Any]:
    """The search's `auto` object from the form: blank fields left out (the preset fills them
    in), numbers as JSON reads them (so a bad one gets the API's own message), the students as
    a comma-separated list; with the packaged students unticked and none named, only cuts of
    the teacher are tried."""
    auto: dict[str, Any] = {}
    for name in AUTO_TEXT_FIELDS:
        value = blank_to_none(form.get(name))
        if value is None:
            continue
        key = name.removeprefix("auto.")
        if key == "students":
            auto[key] = [part.strip() for part in value.split(",") if part.strip()]
        elif key in ("presets", "latency_mode", "scheduler"):
            auto[key] = value
        else:
            try:
                auto[key] = json.loads(value)
            except ValueError:
                auto[key] = value
    if "students" not in auto and form.get("auto.packaged_students") != "on":
        auto["students"] = []
    auto["int8"] = form.get("auto.int8") == "on"
    auto["no_distill"] = form.get("auto.no_distill") == "on"
    return auto
