"""`distillery` command: run the service's processes (serve, worker, reaper, migrate).

Each subcommand reads the same DISTILLERY_* settings as the service, so one environment
configures every process of a deployment.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def migrate() -> None:
    from alembic import command
    from alembic.config import Config

    # The checkout's (or the image's working directory's) alembic.ini; the package may be
    # installed elsewhere.
    ini = Path.cwd() / "alembic.ini"
    config = Config(str(ini if ini.is_file() else ROOT / "alembic.ini"))
    command.upgrade(config, "head")


def serve(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run("app.main:create_app", factory=True, host=host, port=port)


def has_cuda() -> bool:
    """Ask a throwaway process, so this (the worker's parent) never initialises CUDA."""
    probe = "import torch; print(torch.cuda.is_available())"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return result.stdout.strip() == "True"


def worker(concurrency: int, queues: str | None) -> None:
    from app.config import get_settings
    from app.queue import worker_queues
    from worker.celery_app import celery

    chosen = queues or ",".join(worker_queues(get_settings().task_queue, has_cuda()))
    celery.worker_main(
        ["worker", "--loglevel=INFO", f"--concurrency={concurrency}", f"--queues={chosen}"]
    )


def reaper() -> None:
    """Run the reaper alone (workers run one too; running several is safe)."""
    import logging

    from app.config import get_settings
    from app.db import make_engine, make_session_factory
    from worker.celery_app import celery
    from worker.reaper import ReaperThread

    logging.basicConfig(level=logging.INFO)
    settings = get_settings()
    thread = ReaperThread(
        make_session_factory(make_engine(settings.resolved_database_url())), celery, settings
    )
    thread.run()


def keys(args: argparse.Namespace) -> None:
    """Create, revoke or list API keys in the configured database (run `migrate` first)."""
    from app.auth import create_key, list_keys, revoke_key
    from app.config import get_settings
    from app.db import make_engine, make_session_factory

    settings = get_settings()
    settings.ensure_local_dirs()
    engine = make_engine(settings.resolved_database_url())
    with make_session_factory(engine)() as session:
        if args.keys_command == "create":
            key, secret = create_key(session, args.name, is_admin=args.admin)
            print(f"created key {key.id} ({'admin' if key.is_admin else 'user'}) '{key.name}'")
            print("secret (shown once, not stored; send as 'Authorization: Bearer <secret>'):")
            print(secret)
            if not settings.auth_enabled:
                print("note: DISTILLERY_AUTH_ENABLED is off, so the API does not ask for keys")
        elif args.keys_command == "revoke":
            revoked = revoke_key(session, args.key_id)
            if revoked is None:
                sys.exit(f"no key with id '{args.key_id}'")
            print(f"revoked key {revoked.id} '{revoked.name}'")
        else:
            for key in list_keys(session):
                state = "revoked" if key.revoked_at else "active"
                role = "admin" if key.is_admin else "user"
                print(f"{key.id}\t{key.prefix}...\t{role}\t{state}\t{key.name}")
    engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="distillery", description=__doc__)
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
    commands.add_parser("reaper", help="re-queue or fail jobs whose worker is gone")
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
    args = parser.parse_args(argv)
    if args.command == "migrate":
        migrate()
    elif args.command == "serve":
        serve(args.host, args.port)
    elif args.command == "keys":
        keys(args)
    elif args.command == "reaper":
        reaper()
    else:
        worker(args.concurrency, args.queues)


if __name__ == "__main__":
    main(sys.argv[1:])
