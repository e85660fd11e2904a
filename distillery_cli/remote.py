"""The data commands: datasets, models, jobs and predict, spoken to a running server over HTTP
through `distillery_client` (so they work from any machine that reaches the API). Each group
lives in its own module; this one puts them on the `distillery` parser.

The server is `--url` or $DISTILLERY_URL (default http://127.0.0.1:8000), the key `--api-key` or
$DISTILLERY_API_KEY. Output is for people unless `--json` is given.
"""

from __future__ import annotations

from typing import Any

from distillery_cli.common import remote_options, run
from distillery_cli.datasets import add_dataset_commands
from distillery_cli.jobs import add_job_commands
from distillery_cli.models import add_model_commands
from distillery_cli.predict import add_predict_command

__all__ = ["add_commands", "run"]


def add_commands(commands: Any) -> None:
    """Add datasets, models, jobs and predict to the `distillery` parser's subcommands."""
    options = remote_options()
    add_dataset_commands(commands, options)
    add_model_commands(commands, options)
    add_job_commands(commands, options)
    add_predict_command(commands, options)
