"""The `distillery` data commands as a user runs them: separate processes
(`python -m distillery_cli`) against a live uvicorn server (auth on) and a real Celery worker on
the embedded default (SQLite and kombu's SQLAlchemy broker), tiny BERTs the test builds itself.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from distillery_cli import main as cli_main
from distillery_client import Client
from domain.config import Settings
from tests.conftest import settings_env, start_api_and_worker

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


class Cli:
    """Runs `distillery ...` pointed at the server by $DISTILLERY_URL (and $DISTILLERY_API_KEY):
    `run` calls the command's main() in this process (each spawn costs seconds of imports);
    `spawn` runs it as its own process, with the deployment's settings for `keys`."""

    def __init__(self, settings: Settings, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.env = {**settings_env(settings), "DISTILLERY_URL": url}
        self.env.pop("DISTILLERY_API_KEY", None)
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("DISTILLERY_URL", url)
        monkeypatch.delenv("DISTILLERY_API_KEY", raising=False)

    def use_key(self, secret: str) -> None:
        self.env["DISTILLERY_API_KEY"] = secret
        self.monkeypatch.setenv("DISTILLERY_API_KEY", secret)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "distillery_cli", *args]

    def run(self, *args: str, expect: int = 0) -> Outcome:
        stdout, stderr = io.StringIO(), io.StringIO()
        with redirect_stdout(stdout), redirect_stderr(stderr):
            try:
                cli_main(list(args))
                code = 0
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else 1
        return self.check(args, Outcome(code, stdout.getvalue(), stderr.getvalue()), expect)

    def spawn(self, *args: str, expect: int = 0) -> Outcome:
        done = subprocess.run(
            self.command(*args), cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        return self.check(args, Outcome(done.returncode, done.stdout, done.stderr), expect)

    @staticmethod
    def check(args: tuple[str, ...], outcome: Outcome, expect: int) -> Outcome:
        assert outcome.returncode == expect, (
            f"{args}: exit {outcome.returncode}\n{outcome.stdout}\n{outcome.stderr}"
        )
        return outcome

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)


def test_cli_datasets_jobs_models_predict_and_watch(
    sqlite_settings: Settings,
    start_worker,
    live_server,
    qnli_tables: dict,
    tiny_teacher_dir: Path,
    tiny_student_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A user key may train from server folders only under the allowed roots.
    roots = [tiny_teacher_dir.parent, tiny_student_dir.parent]
    settings = sqlite_settings.model_copy(
        update={"auth_enabled": True, "allowed_data_roots": roots}
    )
    url = start_api_and_worker(settings, start_worker, live_server)
    cli = Cli(settings, url, monkeypatch)
    train_csv, tuning_csv, test_csv = (tmp_path / f"{n}.csv" for n in ("train", "tuning", "test"))
    qnli_tables["train"].to_csv(train_csv, index=False)
    qnli_tables["tuning"].to_csv(tuning_csv, index=False)
    qnli_tables["test"].to_csv(test_csv, index=False)

    # keys create (on the deployment's database); data commands send $DISTILLERY_API_KEY.
    created = cli.spawn("keys", "create", "--name", "cli-test").stdout
    key_id, secret = created.split()[2], created.strip().splitlines()[-1]
    refused = cli.run("datasets", "list", expect=1)
    assert "401" in refused.stderr
    cli.use_key(secret)

    # datasets upload | list | show
    tuning = cli.json("datasets", "upload", str(tuning_csv), "--name", "tuning", "--label", "label")
    assert isinstance(tuning, dict) and tuning["row_count"] == 40
    listing = cli.run("datasets", "list").stdout
    assert listing.splitlines()[0].split()[:3] == ["ID", "NAME", "ROWS"]
    assert tuning["id"] in listing and "tuning" in listing
    shown = cli.run("datasets", "show", tuning["id"]).stdout
    assert "problem type: binary" in shown and "first rows:" in shown
    assert re.search(r"^question\s+\w+\s+text$", shown, re.MULTILINE), shown

    # jobs submit --watch: a table file as --train (uploaded first), --hp values read as JSON.
    teacher = cli.spawn(
        *("jobs", "submit", "--train", str(train_csv), "--tuning", tuning["id"]),
        *("--hp", f"model.hf_text.checkpoint_name={tiny_teacher_dir}"),
        *("--hp", "optimization.max_epochs=3", "--hp", "optimization.learning_rate=3e-3"),
        "--watch",
        "--poll-seconds",
        "0.2",
    )
    assert "uploaded" in teacher.stderr and "/30" in teacher.stderr, teacher.stderr
    assert "hard_loss=" in teacher.stderr and "validation at step" in teacher.stderr
    teacher_job_id = teacher.stderr.split("submitted ")[1].split()[0]
    assert f"{teacher_job_id} succeeded: model mdl_" in teacher.stdout
    teacher_model_id = teacher.stdout.split("model ")[1].split(";")[0].strip()

    # jobs submit (no watch) with a hyperparameters file, the teacher named by its job, then
    # jobs watch: a live bar with every loss term.
    hp_file = tmp_path / "student.json"
    hp_file.write_text(
        json.dumps(
            {
                "model.hf_text.checkpoint_name": str(tiny_student_dir),
                "optimization.max_epochs": 2,
                "optimization.learning_rate": 3e-3,
            }
        )
    )
    distill = cli.json(
        *("jobs", "submit", "--train", str(train_csv), "--tuning", tuning["id"]),
        *("--teacher", teacher_job_id, "--hyperparameters", str(hp_file)),
        *("--hp", "distiller.temperature=2", "--label", "label"),
        # Only the training rows (20 steps): the teacher's own rows and the default recipe's
        # recombined pairs stay out of the transfer set.
        *("--hp", "distiller.transfer_from_teacher_data=false"),
        *("--hp", "distiller.augmentation_pair_copies=0"),
    )
    assert isinstance(distill, dict)
    assert distill["kind"] == "distill" and distill["teacher_model"] == teacher_model_id
    assert distill["hyperparameters"]["distiller.temperature"] == 2
    assert distill["hyperparameters"]["optimization.max_epochs"] == 2
    assert distill["hyperparameters"]["distiller.transfer_from_teacher_data"] is False
    watched = cli.run("jobs", "watch", distill["id"], "--poll-seconds", "0.2")
    for term in ("loss=", "hard_loss=", "soft_loss=", "epoch ", "/20"):
        assert term in watched.stderr, (term, watched.stderr)
    assert "succeeded" in watched.stdout

    # jobs list | show
    jobs = cli.run("jobs", "list", "--kind", "distill").stdout
    assert distill["id"] in jobs and teacher_job_id not in jobs
    shown = cli.run("jobs", "show", distill["id"], "--events").stdout
    assert "status:" in shown and "succeeded" in shown and "training_started" in shown
    shown_json = cli.json("jobs", "show", distill["id"])
    assert isinstance(shown_json, dict) and shown_json["progress"] == 1.0
    student_id = shown_json["model"]
    report = cli.run("jobs", "report", distill["id"]).stdout
    assert re.search(r"^agreement:\s+[0-9.]+$", report, re.MULTILINE), report
    page = tmp_path / "report.html"
    cli.run("jobs", "report", distill["id"], "--format", "html", "-o", str(page))
    assert "<html" in page.read_text().lower()

    # models list | show | download, and upload of the downloaded bundle
    models = cli.run("models", "list").stdout
    assert student_id in models and teacher_model_id in models
    shown = cli.run("models", "show", student_id).stdout
    assert f'"teacher_model": "{teacher_model_id}"' in shown
    saved = cli.run("models", "download", student_id, "-o", str(tmp_path / "s.tar.gz")).stdout
    assert (tmp_path / "s.tar.gz").stat().st_size > 0 and "saved" in saved
    folder = tmp_path / "student"
    cli.run("models", "download", student_id, "-o", str(folder), "--extract")
    assert (folder / "config.json").is_file()
    uploaded = cli.json(
        *("models", "upload", str(folder), "--text-columns", "question,sentence"),
        *("--name", "student-copy"),
    )
    assert isinstance(uploaded, dict) and uploaded["name"] == "student-copy"

    # predict: a table file (human table with probabilities), and --text (JSON)
    table = cli.run("predict", teacher_model_id, str(test_csv), "--probabilities").stdout
    lines = table.splitlines()
    assert lines[0].split() == [
        "question",
        "sentence",
        "prediction",
        "p(entailment)",
        "p(not_entailment)",
    ]
    assert len(lines) == 1 + len(qnli_tables["test"])
    row = qnli_tables["test"].iloc[0]
    answer = cli.json(
        *("predict", teacher_model_id),
        *("--text", f"question={row['question']}", "--text", f"sentence={row['sentence']}"),
        "--probabilities",
    )
    assert isinstance(answer, list) and len(answer) == 1
    assert answer[0]["prediction"] in ("entailment", "not_entailment")
    assert abs(sum(answer[0]["probabilities"].values()) - 1.0) < 1e-4
    # The same row as the table's first line, so the same prediction.
    assert answer[0]["prediction"] == lines[1].split()[-3]

    # The server's problem, with its field, on stderr and exit 1.
    missing = cli.run("jobs", "submit", "--train", "ds_missing", expect=1)
    assert "404" in missing.stderr and "ds_missing" in missing.stderr
    bad_hp = cli.run("jobs", "submit", "--train", tuning["id"], "--hp", "nonsense", expect=1)
    assert "field: --hp" in bad_hp.stderr

    # jobs watch exits 3 when the job it watches is cancelled.
    job = cli.json(
        *("jobs", "submit", "--train", distill["train_dataset"]),
        *("--hp", f"model.hf_text.checkpoint_name={tiny_student_dir}"),
        *("--hp", "optimization.max_epochs=500", "--hp", "optimization.patience=1000"),
    )
    assert isinstance(job, dict)
    watcher = subprocess.Popen(
        cli.command("jobs", "watch", job["id"], "--poll-seconds", "0.2"),
        cwd=ROOT,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Cancel once it is training, so the running job's stop path is the one watched.
        with Client(url=url, api_key=secret) as client:
            deadline = time.monotonic() + 120
            while client.job(job["id"]).summary.get("latest") is None:
                assert time.monotonic() < deadline, "the job never logged a step"
                time.sleep(0.2)
        cancelled = cli.run("jobs", "cancel", job["id"])
        assert job["id"] in cancelled.stdout
        _, stderr = watcher.communicate(timeout=120)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 3, stderr
    assert "cancelled" in stderr and "loss=" in stderr
    assert cli.json("jobs", "show", job["id"])["status"] == "cancelled"

    # keys revoke: the key stops working at once.
    assert key_id in cli.spawn("keys", "revoke", key_id).stdout
    assert "401" in cli.run("jobs", "list", expect=1).stderr
