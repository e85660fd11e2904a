"""What each shell drags in when it is imported on its own, in a fresh interpreter (the
import-linter contracts in pyproject.toml check the code; this checks what actually loads)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def modules_loaded_by(module: str) -> set[str]:
    script = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in json.loads(result.stdout.splitlines()[-1])}


def test_the_worker_task_module_loads_no_fastapi() -> None:
    loaded = modules_loaded_by("worker.tasks")
    assert "torch" in loaded and "celery" in loaded  # it did import the whole worker
    assert not loaded & {"fastapi", "starlette", "uvicorn", "app"}


def test_the_client_loads_no_server_code() -> None:
    loaded = modules_loaded_by("distillery_client")
    assert "httpx" in loaded
    assert not loaded & {"torch", "fastapi", "sqlalchemy", "celery", "distillery", "domain", "app"}
