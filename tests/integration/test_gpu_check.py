"""scripts/gpu-check.sh, the script a lent GPU machine runs, run here with CUDA hidden: it must
work end to end on the CPU (a real service, a real worker, real training) and say that the
CUDA figures are not available rather than invent them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_check_runs_on_a_machine_without_cuda(
    tiny_teacher_dir: Path, tmp_path: Path
) -> None:
    figures_file = tmp_path / "gpu-check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    completed = subprocess.run(
        [
            "bash",
            "scripts/gpu-check.sh",
            "--backbone",
            str(tiny_teacher_dir),
            "--student-layers",
            "1",
            "--rows",
            "64",
            "--json",
            str(figures_file),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "CUDA: n/a (no GPU visible)" in completed.stdout
    figures = json.loads(figures_file.read_text())
    assert figures["machine"]["cuda_available"] is False and figures["accelerator"] == "cpu"
    for job in ("teacher_job", "distill_job"):
        assert figures[job]["status"] == "succeeded"
        assert figures[job]["device"] == "cpu" and figures[job]["mixed_precision"] == "fp32"
        assert figures[job]["seconds_per_step"] > 0
    assert figures["http_rows_per_second"] > 0
    assert set(figures["student_raw_rows_per_second"]) == {"cpu"}
    assert figures["distill_seconds_per_step"]["cpu"] > 0
    assert "cuda_over_cpu_inference" not in figures
