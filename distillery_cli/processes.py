"""The service's own processes: migrate, serve, worker, reaper, and API keys.

Each reads the same DISTILLERY_* settings as the service, so one environment configures every
process of a deployment.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
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

    from domain.config import get_settings
    from domain.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    # uvicorn's own log setup and access log would bypass ours: its records reach our handler
    # (JSON or text) through the root logger, and RequestIdMiddleware writes the access lines.
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
    )


def has_cuda() -> bool:
    """Ask a throwaway process, so this (the worker's parent) never initialises CUDA."""
    probe = "import torch; print(torch.cuda.is_available())"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return result.stdout.strip() == "True"


def worker(concurrency: int, queues: str | None) -> None:
    from domain.config import get_settings
    from domain.queue import worker_queues
    from worker.celery_app import celery

    chosen = queues or ",".join(worker_queues(get_settings().task_queue, has_cuda()))
    celery.worker_main(
        ["worker", "--loglevel=INFO", f"--concurrency={concurrency}", f"--queues={chosen}"]
    )


def reaper_alive_file() -> Path:
    # In the temporary folder, not DISTILLERY_HOME: a container's own, where a home on a volume
    # shared by several containers would let one reaper's pass vouch for another.
    return Path(tempfile.gettempdir()) / "distillery-reaper.alive"


def reaper() -> None:
    """Run the reaper alone (workers run one too; running several is safe)."""
    from domain.config import get_settings
    from domain.db import make_engine, make_session_factory
    from domain.logs import configure_logging
    from worker.celery_app import celery
    from worker.reaper import ReaperThread

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    settings.ensure_local_dirs()
    thread = ReaperThread(
        make_session_factory(make_engine(settings.resolved_database_url())),
        celery,
        settings,
        alive_file=reaper_alive_file(),
    )
    thread.run()


def reaper_check() -> None:
    """Exit 0 when the reaper finished a pass lately (three intervals, plus slack), else 1: the
    container health check of a reaper running on its own."""
    import time

    from domain.config import get_settings

    limit = 3 * get_settings().reaper_interval_seconds + 30
    alive = reaper_alive_file()
    if not alive.is_file():
        sys.exit(f"unhealthy: {alive} missing (no reaper pass has reached the database yet)")
    age = time.time() - alive.stat().st_mtime
    if age > limit:
        sys.exit(f"unhealthy: last reaper pass {age:.0f} s ago (limit {limit:.0f} s)")
    print(f"healthy: last reaper pass {age:.0f} s ago")


def keys(args: argparse.Namespace) -> None:
    """Create, revoke or list API keys in the configured database (run `migrate` first)."""
    from domain.auth import create_key, list_keys, revoke_key
    from domain.config import get_settings
    from domain.db import make_engine, make_session_factory

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
