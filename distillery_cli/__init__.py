"""`distillery` command.

Processes of a deployment (serve, worker, reaper, migrate, keys) read the same DISTILLERY_*
settings as the service; data commands (datasets, models, jobs, predict) talk to a running
server over HTTP, given by --url or DISTILLERY_URL.
"""

from __future__ import annotations

import argparse
import os
import sys

from distillery_cli import remote
from distillery_cli.processes import keys, migrate, reaper, reaper_check, serve, worker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distillery", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database schema to the latest revision")
    serve_parser = commands.add_parser("serve", help="run the HTTP API")
    serve_parser.add_argument("--host", default=os.environ.get("DISTILLERY_HOST", "127.0.0.1"))
    serve_parser.add_argument("--port", type=int, default=8000)
    worker_parser = commands.add_parser("worker", help="run a Celery worker for training jobs")
    worker_parser.add_argument("--concurrency", type=int, default=1)
    worker_parser.add_argument(
        "--queues",
        default=None,
        help="default: the GPU or CPU queue (as this machine has) plus the shared one",
    )
    reaper_parser = commands.add_parser("reaper", help="re-queue or fail jobs whose worker is gone")
    reaper_parser.add_argument(
        "--check",
        action="store_true",
        help="health probe: exit 0 if a running reaper finished a pass lately, else 1",
    )
    keys_parser = commands.add_parser("keys", help="create, revoke or list API keys")
    key_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    create_parser = key_commands.add_parser("create", help="make a key; prints its secret once")
    create_parser.add_argument("--name", required=True, help="who or what the key is for")
    create_parser.add_argument(
        "--admin", action="store_true", help="the key sees every owner's datasets, models, jobs"
    )
    revoke_parser = key_commands.add_parser("revoke", help="revoke a key by its id (key_...)")
    revoke_parser.add_argument("key_id")
    key_commands.add_parser("list", help="list keys (ids, prefixes, roles; never secrets)")
    remote.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is not None:
        code = remote.run(handler, args)
        if code:
            sys.exit(code)
    elif args.command == "migrate":
        migrate()
    elif args.command == "serve":
        serve(args.host, args.port)
    elif args.command == "keys":
        keys(args)
    elif args.command == "reaper" and args.check:
        reaper_check()
    elif args.command == "reaper":
        reaper()
    else:
        worker(args.concurrency, args.queues)
