"""`distillery` command: run the service's processes (serve, worker, migrate).

Each subcommand reads the same DISTILLERY_* settings as the service, so one environment
configures every process of a deployment.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def migrate() -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    command.upgrade(config, "head")


def serve(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run("app.main:create_app", factory=True, host=host, port=port)


def worker(concurrency: int, queues: str | None) -> None:
    from worker.celery_app import celery

    argv = ["worker", "--loglevel=INFO", f"--concurrency={concurrency}"]
    if queues:
        argv.append(f"--queues={queues}")
    celery.worker_main(argv)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="distillery", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database schema to the latest revision")
    serve_parser = commands.add_parser("serve", help="run the HTTP API")
    serve_parser.add_argument("--host", default=os.environ.get("DISTILLERY_HOST", "127.0.0.1"))
    serve_parser.add_argument("--port", type=int, default=8000)
    worker_parser = commands.add_parser("worker", help="run a Celery worker for training jobs")
    worker_parser.add_argument("--concurrency", type=int, default=1)
    worker_parser.add_argument("--queues", default=None)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        migrate()
    elif args.command == "serve":
        serve(args.host, args.port)
    else:
        worker(args.concurrency, args.queues)


if __name__ == "__main__":
    main(sys.argv[1:])
