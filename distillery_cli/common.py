"""What every data command shares: the server options, running a handler against a client,
and the small parsers of command-line values."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from distillery_client import DEFAULT_URL, Client, DistilleryError

# `jobs watch` and `jobs submit --watch`: 0 when the job succeeded.
EXIT_FAILED = 1
EXIT_CANCELLED = 3
EXIT_TIMEOUT = 4

Handler = Callable[[Client, argparse.Namespace], int]


def remote_options() -> argparse.ArgumentParser:
    """Options every data command takes (a parent parser)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--url",
        default=os.environ.get("DISTILLERY_URL", DEFAULT_URL),
        help="the server (default: $DISTILLERY_URL or %(default)s)",
    )
    options.add_argument(
        "--api-key",
        default=os.environ.get("DISTILLERY_API_KEY"),
        help="a dk_... key (default: $DISTILLERY_API_KEY); needed when the server has auth on",
    )
    options.add_argument("--json", action="store_true", help="print JSON for programs")
    return options


def run(handler: Handler, args: argparse.Namespace) -> int:
    """Run one data command; a refusal from the server prints its problem and returns 1."""
    try:
        with Client(args.url, args.api_key or None) as client:
            return handler(client, args)
    except DistilleryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def leaf(
    group: Any, name: str, handler: Handler, help_text: str, parents: list[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    """A command under `group` that runs `handler` against the server."""
    parser: argparse.ArgumentParser = group.add_parser(name, parents=parents, help=help_text)
    parser.set_defaults(handler=handler)
    return parser


def refusal(title: str, detail: str, field: str) -> DistilleryError:
    """A command-line mistake, said the way the server says its refusals."""
    return DistilleryError(None, {"title": title, "detail": detail, "field": field})


def names(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    return names or None


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def getter(key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row.get(key)
