"""A throwaway Distillery on this machine: migrate, then the API (uvicorn) and one Celery worker
as subprocesses, on the embedded default in a folder of its own. The demo and the GPU check run
the service the way a user would, over real HTTP, and stop it when they are done."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_service(home: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Migrate, then run the API (uvicorn) and one Celery worker; yield the API's base URL."""
    env = {**os.environ, "DISTILLERY_HOME": str(home), "PYTHONPATH": str(ROOT)}
    for name in (
        "DISTILLERY_DATABASE_URL",
        "DISTILLERY_BROKER_URL",
        "DISTILLERY_ARTIFACT_DIR",
        "DISTILLERY_ARTIFACT_URL",
    ):
        env.pop(name, None)  # the embedded default, whatever the shell says
    env.update(extra_env or {})
    python = sys.executable
    subprocess.run(
        [python, "-m", "distillery_cli", "migrate"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    processes = [
        subprocess.Popen(
            [python, "-m", "distillery_cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=(logs / "api.log").open("w"),
            stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [python, "-m", "distillery_cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=(logs / "worker.log").open("w"),
            stderr=subprocess.STDOUT,
        ),
    ]
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"the service did not start; see {logs}")
            time.sleep(0.5)
        yield base_url
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
