"""Python client for a Distillery server, in the shape of AutoGluon AutoMM's MultiModalPredictor
where it fits: `fit` a job on DataFrames, `wait` for it, then `predict`, `predict_proba` and
`evaluate` with the model it produced.

    from distillery_client import Client
    client = Client("http://127.0.0.1:8000")
    teacher = client.fit(train_df, tuning_data=valid_df, hyperparameters={...}).wait().model
    student = client.fit(train_df, tuning_data=valid_df, teacher=teacher).wait().model
    student.predict(test_df)

A package of its own, needing only httpx, pandas and tqdm: it imports nothing of the server
(an import-linter contract in pyproject.toml says so), so it runs on any machine that reaches
the server. Every error the server
answers is raised as `DistilleryError` carrying its problem+json body.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import pandas as pd

DEFAULT_URL = "http://127.0.0.1:8000"
# The server's cap on rows per predict request (app.schemas.MAX_PREDICT_ROWS).
PREDICT_CHUNK_ROWS = 1024
FINISHED = ("succeeded", "failed", "cancelled")
ReportFormat = Literal["json", "png", "html"]
REPORT_MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "png": "image/png",
    "html": "text/html",
}


class DistilleryError(Exception):
    """The server refused a request (or a job ended badly). `status` is the HTTP status (None
    when no HTTP response says it); `problem` is the server's RFC 9457 body: title, detail and,
    where one part of the request is at fault, field."""

    def __init__(self, status: int | None, problem: Mapping[str, Any]) -> None:
        self.status = status
        self.problem = dict(problem)
        super().__init__(str(self))

    @property
    def title(self) -> str:
        return str(self.problem.get("title") or "Error")

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or "")

    @property
    def field(self) -> str | None:
        value = self.problem.get("field")
        return None if value is None else str(value)

    def __str__(self) -> str:
        head = f"{self.status} {self.title}" if self.status is not None else self.title
        text = f"{head}: {self.detail}" if self.detail else head
        return f"{text} (field: {self.field})" if self.field else text


class JobFailedError(DistilleryError):
    """A job ended `failed` or `cancelled`; `job` is its final state."""

    def __init__(self, job: Job) -> None:
        self.job = job
        error = job.error or {}
        problem = {
            "title": f"Job {job.status}",
            "detail": f"job {job.id} {job.status}"
            + (f" ({error.get('code')}): {error.get('message')}" if error else ""),
            "job": job.id,
            "code": error.get("code", job.status),
        }
        super().__init__(None, problem)


def _timestamp(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _json_safe_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready records: NaN and NaT become null (JSON has no NaN)."""
    return frame.astype(object).where(frame.notna(), None).to_dict(orient="records")


@dataclass(frozen=True)
class Dataset:
    """A table stored on the server (GET /v1/datasets/{id})."""

    id: str
    name: str
    filename: str
    format: str
    row_count: int
    columns: list[str]
    text_columns: list[str]
    label_column: str | None
    problem_type: str | None
    label_counts: dict[str, int]
    size_bytes: int
    created_at: datetime | None
    # Only in a single dataset's answer (upload, show), not in lists.
    column_details: list[dict[str, Any]] = field(default_factory=list, repr=False)
    preview: list[dict[str, Any]] = field(default_factory=list, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Dataset:
        return cls(
            id=body["id"],
            name=body["name"],
            filename=body["filename"],
            format=body["format"],
            row_count=body["row_count"],
            columns=list(body["columns"]),
            text_columns=list(body["text_columns"]),
            label_column=body.get("label_column"),
            problem_type=body.get("problem_type"),
            label_counts=dict(body.get("label_counts") or {}),
            size_bytes=body["size_bytes"],
            created_at=_timestamp(body.get("created_at")),
            column_details=list(body.get("column_details") or []),
            preview=list(body.get("preview") or []),
            raw=dict(body),
        )


@dataclass(frozen=True)
class RemoteModel:
    """A model registered on the server (an upload or a job's result), used through the API."""

    client: Client = field(repr=False, compare=False)
    id: str
    name: str
    source: str
    problem_type: str
    labels: list[str]
    text_columns: list[str]
    architecture: str
    num_parameters: int
    size_bytes: int
    job_id: str | None
    metrics: dict[str, Any] = field(repr=False)
    lineage: dict[str, Any] = field(repr=False)
    created_at: datetime | None = field(repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, client: Client, body: Mapping[str, Any]) -> RemoteModel:
        return cls(
            client=client,
            id=body["id"],
            name=body["name"],
            source=body["source"],
            problem_type=body["problem_type"],
            labels=list(body["labels"]),
            text_columns=list(body["text_columns"]),
            architecture=body["architecture"],
            num_parameters=body["num_parameters"],
            size_bytes=body["size_bytes"],
            job_id=body.get("job_id"),
            metrics=dict(body.get("metrics") or {}),
            lineage=dict(body.get("lineage") or {}),
            created_at=_timestamp(body.get("created_at")),
            raw=dict(body),
        )

    def _input_rows(self, data: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame.from_records(data)
        # Send only what the model reads; when a column is missing, send everything and let
        # the server name the missing column.
        if set(self.text_columns) <= set(frame.columns):
            return frame[self.text_columns]
        return frame

    def _predict_chunks(
        self, frame: pd.DataFrame, with_probabilities: bool
    ) -> Iterator[dict[str, Any]]:
        for start in range(0, len(frame), PREDICT_CHUNK_ROWS):
            chunk = frame.iloc[start : start + PREDICT_CHUNK_ROWS]
            yield self.client._json(
                "POST",
                f"/v1/models/{self.id}/predict",
                json={
                    "rows": _json_safe_rows(chunk),
                    "return_probabilities": with_probabilities,
                },
            )

    def predict(self, data: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.Series:
        """Predicted class names (or values, for regression), indexed like `data`'s rows."""
        frame = self._input_rows(data)
        predictions: list[Any] = []
        for answer in self._predict_chunks(frame, with_probabilities=False):
            predictions.extend(answer["predictions"])
        return pd.Series(predictions, index=frame.index, name="prediction")

    def predict_proba(self, data: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
        """One column per class, in the model's label order; rows sum to 1."""
        if self.problem_type == "regression":
            raise ValueError(f"model {self.id} is a regression model; use predict()")
        frame = self._input_rows(data)
        probabilities: list[dict[str, float]] = []
        for answer in self._predict_chunks(frame, with_probabilities=True):
            probabilities.extend(answer["probabilities"])
        return pd.DataFrame.from_records(probabilities, index=frame.index, columns=self.labels)

    def evaluate(
        self,
        data: pd.DataFrame | Dataset | str,
        label: str | None = None,
        variant: str | None = None,
    ) -> dict[str, float]:
        """Scores on a labelled table: accuracy, F1, ROC AUC, log loss (or RMSE, MAE, R²), of
        the model's default serving variant or the one named ("float", "int8").

        A DataFrame is uploaded as a temporary dataset, scored, and deleted again."""
        if not isinstance(data, pd.DataFrame):
            return self._evaluate_dataset(_dataset_id(data), label, variant)
        dataset = self.client.upload_dataset(data, name=f"evaluate-{self.id}", label=label)
        try:
            return self._evaluate_dataset(dataset.id, label, variant)
        finally:
            self.client.delete_dataset(dataset.id)

    def _evaluate_dataset(
        self, dataset_id: str, label: str | None, variant: str | None
    ) -> dict[str, float]:
        body: dict[str, Any] = {"dataset": dataset_id}
        if label is not None:
            body["label"] = label
        params = {"variant": variant} if variant is not None else {}
        answer = self.client._json(
            "POST", f"/v1/models/{self.id}/evaluate", json=body, params=params
        )
        return dict(answer["metrics"])

    def variants(self) -> list[dict[str, Any]]:
        """The model's serving variants (int8, ...), each compared with the float model on
        labelled rows: accuracy of both, agreement, CPU latency of both."""
        return list(self.client._json("GET", f"/v1/models/{self.id}/variants")["data"])

    def download(self, path: str | os.PathLike[str], extract: bool = False) -> Path:
        """Save the bundle (a .tar.gz of a Hugging Face checkpoint plus distillery.json).

        `path` may be a file name or an existing folder (the archive is saved in it as
        `<model id>.tar.gz`). With `extract`, `path` is an empty or new folder that receives
        the checkpoint's files; `transformers` loads it as it is. Returns what was written."""
        target = Path(path)
        if extract:
            if target.exists() and any(target.iterdir()):
                raise FileExistsError(f"{target} is not empty; extract into a new folder")
            target.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
                archive = self.client._download(
                    f"/v1/models/{self.id}/download", Path(scratch) / "bundle.tar.gz"
                )
                unpacked = Path(scratch) / "unpacked"
                with tarfile.open(archive) as bundle:
                    # filter="data" refuses links and paths that leave the folder.
                    bundle.extractall(unpacked, filter="data")
                # The archive holds one folder named after the model: its files are the bundle.
                members = list(unpacked.iterdir())
                root = members[0] if len(members) == 1 and members[0].is_dir() else unpacked
                for member in root.iterdir():
                    member.rename(target / member.name)
            return target
        if target.is_dir():
            target = target / f"{self.id}.tar.gz"
        return self.client._download(f"/v1/models/{self.id}/download", target)

    def refresh(self) -> RemoteModel:
        return self.client.model(self.id)

    def delete(self) -> None:
        self.client._request("DELETE", f"/v1/models/{self.id}")


class Job:
    """A fine-tune or distill job. Attributes reflect the last `refresh()` (or `wait()`)."""

    def __init__(self, client: Client, body: Mapping[str, Any]) -> None:
        self.client = client
        self.data: dict[str, Any] = dict(body)

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, kind={self.kind!r}, status={self.status!r})"

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def kind(self) -> str:
        return str(self.data["kind"])

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    @property
    def progress(self) -> float:
        """Fraction of training steps done, 0 to 1."""
        return float(self.data["progress"])

    @property
    def eta_seconds(self) -> float | None:
        return self.data.get("eta_seconds")

    @property
    def error(self) -> dict[str, Any] | None:
        """`{"code": ..., "message": ...}` once the job failed."""
        return self.data.get("error")

    @property
    def summary(self) -> dict[str, Any]:
        """The job's metric summary: run info, latest logged step, last and best validation,
        tuning scores (and the distillation report once a distill job succeeded)."""
        return dict(self.data.get("metrics") or {})

    @property
    def model_id(self) -> str | None:
        return self.data.get("model")

    @property
    def model(self) -> RemoteModel:
        """The model this job registered (it must have succeeded)."""
        if self.model_id is None:
            self.refresh()
        if self.model_id is None:
            raise DistilleryError(
                None,
                {
                    "title": "No model yet",
                    "detail": f"job {self.id} is {self.status}; a job registers its model "
                    "when it succeeds (call wait() first)",
                },
            )
        return self.client.model(self.model_id)

    def refresh(self) -> Job:
        self.data = self.client._json("GET", f"/v1/jobs/{self.id}")
        return self

    def cancel(self) -> Job:
        """Ask the server to cancel; a running job stops at its next step check."""
        self.data = self.client._json("POST", f"/v1/jobs/{self.id}/cancel")
        return self

    def events(self) -> list[dict[str, Any]]:
        """The job's story: queued, claimed, training_started, checkpoint_saved, ..."""
        return list(self.client._json("GET", f"/v1/jobs/{self.id}/events")["data"])

    def metrics(
        self, kind: Literal["train", "validation"] | None = None, after_step: int | None = None
    ) -> pd.DataFrame:
        """Every logged step (each loss term, learning rate, rows/s) and every validation, one
        row each: at, attempt, kind, step, epoch, then one column per value."""
        params: dict[str, Any] = {}
        if kind is not None:
            params["kind"] = kind
        if after_step is not None:
            params["after_step"] = after_step
        rows = self.client._json("GET", f"/v1/jobs/{self.id}/metrics", params=params)["data"]
        base = ["at", "attempt", "kind", "step", "epoch"]
        frame = pd.DataFrame.from_records(
            [{**{key: row[key] for key in base}, **row["values"]} for row in rows]
        )
        if frame.empty:
            return pd.DataFrame(columns=base)
        frame["at"] = pd.to_datetime(frame["at"])
        return frame

    def report(
        self,
        baseline: Job | str | Sequence[Job | str] | None = None,
        format: ReportFormat = "json",
        figure: str | None = None,
    ) -> dict[str, Any] | bytes:
        """A distill job's distillation report. `baseline`, one job or several (the same
        student fine-tuned without the teacher: from its own starting weights, "init-only", or
        another start, "no-distill") adds the points gained over each and the distillation
        ratio. "json" returns a dict; "png" and "html" return the rendered bytes (`figure`
        picks the PNG's: curves, bars, overview)."""
        if format not in REPORT_MEDIA_TYPES:
            raise ValueError(f"format must be one of {', '.join(REPORT_MEDIA_TYPES)}")
        params: dict[str, Any] = {}
        if baseline is not None:
            baselines = [baseline] if isinstance(baseline, Job | str) else list(baseline)
            params["baseline_job"] = [b.id if isinstance(b, Job) else b for b in baselines]
        if figure is not None:
            params["figure"] = figure
        media_type = REPORT_MEDIA_TYPES[format]
        response = self.client._request(
            "GET", f"/v1/jobs/{self.id}/report", params=params, headers={"Accept": media_type}
        )
        answered = response.headers.get("content-type", "").split(";")[0].strip()
        if format == "json":
            return dict(response.json())
        if answered != media_type:
            raise DistilleryError(
                response.status_code,
                {
                    "title": "Report format not served",
                    "detail": f"asked for {media_type}; the server answered "
                    f"{answered or 'nothing'} (does it serve this format yet?)",
                    "field": "format",
                },
            )
        return response.content

    def trials(self) -> list[Job]:
        """An auto_distill job's trials: ordinary distill jobs, one per student and recipe."""
        return self.client.jobs(parent_job=self.id)

    def leaderboard(self) -> pd.DataFrame:
        """An auto_distill job's leaderboard as AutoGluon's `leaderboard()` shows it, best
        first: per trial (and its int8 variant) tuning accuracy, CPU latency per row, speed-up
        over the teacher, size, parameters, int8 drop, cost in seconds, status, whether it is
        within budget and on the accuracy-latency Pareto frontier; the teacher last. The whole
        body (budget, frontier, best, candidates measured before training) is
        `leaderboard_data()`."""
        board = self.leaderboard_data()
        rows = list(board["rows"]) + ([board["teacher"]] if board.get("teacher") else [])
        columns = [
            "name", "variant", "status", "tuning_accuracy", "latency_ms_per_row", "speedup",
            "size_mb", "parameters", "int8_drop_points", "cost_seconds", "within_budget",
            "pareto", "recipe", "trial", "model",
        ]  # fmt: skip
        frame = pd.DataFrame.from_records(rows)
        return frame.reindex(columns=[c for c in columns if c in frame.columns] or columns)

    def leaderboard_data(self) -> dict[str, Any]:
        return dict(self.client._json("GET", f"/v1/jobs/{self.id}/leaderboard"))

    def leaderboard_png(self) -> bytes:
        """The leaderboard's accuracy-latency frontier, drawn."""
        response = self.client._request(
            "GET", f"/v1/jobs/{self.id}/leaderboard", headers={"Accept": "image/png"}
        )
        return response.content

    def wait(
        self,
        progress: bool = True,
        poll_seconds: float = 1.0,
        timeout: float | None = None,
        detailed: bool = False,
    ) -> Job:
        """Poll until the job finishes; returns it when it succeeded.

        `progress` draws a bar on stderr (epoch, step/total, loss, ETA); `detailed` adds every
        loss term to it and prints each validation. Raises JobFailedError when the job failed
        or was cancelled, TimeoutError after `timeout` seconds (the job goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = JobProgressBar(self, detailed) if progress else None
        try:
            while True:
                if bar is not None:
                    bar.update(self)
                if self.done:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"job {self.id} still {self.status} after {timeout}s (it goes on)"
                    )
                time.sleep(poll_seconds)
                self.refresh()
        finally:
            if bar is not None:
                bar.close()
        if self.status != "succeeded":
            raise JobFailedError(self)
        return self


def _format_seconds(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else str(value)


class JobProgressBar:
    """A tqdm bar on stderr drawn from the job's own fields: `progress`, `eta_seconds`, and the
    summary's run info (total steps) and latest logged step (epoch, loss terms)."""

    def __init__(self, job: Job, detailed: bool = False) -> None:
        from tqdm.auto import tqdm

        self.detailed = detailed
        self.last_validation_step: int | None = None
        self.bar = tqdm(
            total=None,
            desc=f"{job.id} {job.status}",
            unit="step",
            file=sys.stderr,
            dynamic_ncols=True,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
        )

    def update(self, job: Job) -> None:
        summary = job.summary
        info = summary.get("info") or {}
        latest = summary.get("latest") or {}
        total = info.get("total_steps")
        if total and self.bar.total != total:
            self.bar.total = total
        step = int(latest.get("step", 0))
        if job.status == "succeeded" and self.bar.total:
            step = int(self.bar.total)
        if step != self.bar.n:
            self.bar.n = step
        self.bar.set_description_str(f"{job.id} {job.status}", refresh=False)
        self.bar.set_postfix_str(self._postfix(job, info, latest), refresh=False)
        self.bar.refresh()
        if self.detailed:
            self._print_validation(summary.get("last_validation"))

    def _postfix(self, job: Job, info: Mapping[str, Any], latest: Mapping[str, Any]) -> str:
        parts = []
        if "epoch" in latest:
            epochs = info.get("max_epochs")
            if epochs is None and info.get("total_steps") and info.get("steps_per_epoch"):
                epochs = math.ceil(info["total_steps"] / info["steps_per_epoch"])
            parts.append(f"epoch {latest['epoch']:.2f}" + (f"/{epochs}" if epochs else ""))
        terms = (
            [key for key in latest if key == "loss" or key.endswith("_loss")]
            if self.detailed
            else ["loss"]
        )
        parts.extend(f"{key}={_number(latest[key])}" for key in terms if key in latest)
        if job.eta_seconds is not None:
            parts.append(f"ETA {_format_seconds(job.eta_seconds)}")
        # tqdm itself puts ", " before the postfix.
        return ", ".join(parts)

    def _print_validation(self, validation: Mapping[str, Any] | None) -> None:
        if not validation or validation.get("step") == self.last_validation_step:
            return
        self.last_validation_step = validation.get("step")
        scores = ", ".join(
            f"{key}={_number(value)}"
            for key, value in validation.items()
            if key not in ("step", "epoch") and isinstance(value, int | float)
        )
        self.bar.write(
            f"validation at step {validation.get('step')} "
            f"(epoch {validation.get('epoch', 0):.2f}): {scores}",
            file=sys.stderr,
        )

    def close(self) -> None:
        self.bar.close()


def _dataset_id(data: Dataset | str) -> str:
    if isinstance(data, Dataset):
        return data.id
    if isinstance(data, str):
        return data
    raise TypeError(f"expected a DataFrame, a Dataset or a dataset id, not {type(data).__name__}")


class Client:
    """A connection to one Distillery server.

    `url` defaults to $DISTILLERY_URL or http://127.0.0.1:8000; `api_key` (a `dk_...` secret
    from `distillery keys create`) to $DISTILLERY_API_KEY, and is needed only when the server
    has auth on. `timeout` bounds each HTTP request, not a job."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("DISTILLERY_URL") or DEFAULT_URL).rstrip("/")
        api_key = api_key if api_key is not None else os.environ.get("DISTILLERY_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    # -- HTTP -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DistilleryError(
                None,
                {
                    "title": "Server unreachable",
                    "detail": f"{method} {self.url}{path}: {exc or type(exc).__name__}; is "
                    "`distillery serve` running there (or set --url / DISTILLERY_URL)?",
                },
            ) from exc
        if response.is_error:
            raise _error_from(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    def _download(self, path: str, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            with self.http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise _error_from(response)
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise DistilleryError(
                None, {"title": "Download interrupted", "detail": f"GET {path}: {exc}"}
            ) from exc
        partial.replace(target)
        return target

    def _pages(self, path: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            query = {**params, **({"cursor": cursor} if cursor else {})}
            page = self._json("GET", path, params=query)
            yield from page["data"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def health(self) -> dict[str, Any]:
        """Liveness, database, broker and whether the server asks for API keys."""
        return dict(self._json("GET", "/healthz"))

    # -- datasets ---------------------------------------------------------------------------

    def upload_dataset(
        self,
        data: pd.DataFrame | str | os.PathLike[str],
        name: str | None = None,
        label: str | None = None,
        text_columns: Sequence[str] | None = None,
        *,
        encoding: str | None = None,
        delimiter: str | None = None,
        idempotency_key: str | None = None,
    ) -> Dataset:
        """Upload a DataFrame (sent as Parquet, so types survive) or a CSV/TSV/JSONL/Parquet
        file. The label column defaults to 'label' when the table has one; text columns are
        inferred unless named."""
        if isinstance(data, pd.DataFrame):
            buffer = io.BytesIO()
            data.to_parquet(buffer, index=False)
            filename, content = "dataframe.parquet", buffer.getvalue()
        else:
            path = Path(data)
            filename, content = path.name, path.read_bytes()
        form = {
            key: value
            for key, value in {
                "name": name,
                "label": label,
                "text_columns": ",".join(text_columns) if text_columns else None,
                "encoding": encoding,
                "delimiter": delimiter,
            }.items()
            if value is not None
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = self._json(
            "POST",
            "/v1/datasets",
            files={"file": (filename, content)},
            data=form,
            headers=headers,
        )
        return Dataset.from_json(body)

    def dataset(self, dataset_id: str) -> Dataset:
        """One dataset with its column details and first rows."""
        return Dataset.from_json(self._json("GET", f"/v1/datasets/{dataset_id}"))

    def datasets(self) -> list[Dataset]:
        """Every dataset the key may see, newest first."""
        return [Dataset.from_json(body) for body in self._pages("/v1/datasets", {"limit": 100})]

    def delete_dataset(self, dataset: Dataset | str) -> None:
        self._request("DELETE", f"/v1/datasets/{_dataset_id(dataset)}")

    # -- models -----------------------------------------------------------------------------

    def model(self, model_id: str) -> RemoteModel:
        return RemoteModel.from_json(self, self._json("GET", f"/v1/models/{model_id}"))

    def models(self) -> list[RemoteModel]:
        """Every model the key may see (uploads and job results), newest first."""
        return [
            RemoteModel.from_json(self, body) for body in self._pages("/v1/models", {"limit": 100})
        ]

    def upload_model(
        self,
        source: str | os.PathLike[str] | Any,
        name: str | None = None,
        text_columns: Sequence[str] | str | None = None,
        labels: Sequence[str] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> RemoteModel:
        """Register a Hugging Face checkpoint: a folder (zipped here) or a .zip/.tar.gz.

        The server needs `text_columns` (the input columns, in order) and refuses pickled
        weights: the checkpoint must hold safetensors.

        A folder written by AutoGluon's `MultiModalPredictor.save()` (hf_text, text
        classification or regression) is taken too, and becomes a Distillery model on the
        server: its text columns default to those in its assets.json, its class names to
        those the server reads from it (as data: it never unpickles the predictor's pickles).
        A loaded, saved `MultiModalPredictor` may be passed as `source`: its folder (`.path`)
        is sent, with its `class_labels`."""
        if not isinstance(source, str | os.PathLike):  # a loaded MultiModalPredictor
            if labels is None and getattr(source, "class_labels", None) is not None:
                labels = [str(label) for label in source.class_labels]
            source = source.path
        path = Path(source)
        if text_columns is None and path.is_dir() and (path / "assets.json").is_file():
            text_columns = _automm_text_columns(path / "assets.json")
        if path.is_dir():
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for member in sorted(path.rglob("*")):
                    if member.is_file():
                        archive.write(member, member.relative_to(path).as_posix())
            filename, content = f"{path.name or 'checkpoint'}.zip", buffer.getvalue()
        else:
            filename, content = path.name, path.read_bytes()
        if isinstance(text_columns, str):
            text_columns = [text_columns]
        form = {"text_columns": ",".join(text_columns or [])}
        if name is not None:
            form["name"] = name
        if labels:
            form["labels"] = ",".join(labels)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = self._json(
            "POST", "/v1/models", files={"file": (filename, content)}, data=form, headers=headers
        )
        return RemoteModel.from_json(self, body)

    def delete_model(self, model: RemoteModel | str) -> None:
        model_id = model.id if isinstance(model, RemoteModel) else model
        self._request("DELETE", f"/v1/models/{model_id}")

    # -- jobs -------------------------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        return Job(self, self._json("GET", f"/v1/jobs/{job_id}"))

    def jobs(
        self, status: str | None = None, kind: str | None = None, parent_job: str | None = None
    ) -> list[Job]:
        """Jobs, newest first, optionally only those with this status or kind, or the trials
        of one auto_distill job."""
        params: dict[str, Any] = {"limit": 100}
        if status is not None:
            params["status"] = status
        if kind is not None:
            params["kind"] = kind
        if parent_job is not None:
            params["parent_job"] = parent_job
        return [Job(self, body) for body in self._pages("/v1/jobs", params)]

    def submit_job(self, request: Mapping[str, Any], idempotency_key: str | None = None) -> Job:
        """POST /v1/jobs with a JobCreate body as it is (kind, train_dataset, ...)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return Job(self, self._json("POST", "/v1/jobs", json=dict(request), headers=headers))

    def fit(
        self,
        train_data: pd.DataFrame | Dataset | str,
        tuning_data: pd.DataFrame | Dataset | str | None = None,
        teacher: RemoteModel | Job | str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        label: str | None = "label",
        name: str | None = None,
        unlabeled_data: pd.DataFrame | Dataset | str | None = None,
        *,
        text_columns: Sequence[str] | None = None,
        accelerator: Literal["any", "gpu", "cpu"] = "any",
        presets: str | None = None,
        time_limit: float | None = None,
        budget: Mapping[str, Any] | None = None,
    ) -> Job:
        """Submit a fine-tune job, or a distill job when `teacher` is given; returns the queued
        job (call `wait()` on it). DataFrames are uploaded first, as datasets named
        `<name>-train`, `<name>-tuning`, `<name>-unlabeled`. `tuning_data` picks the best
        checkpoint (and makes a distill job write its report); `unlabeled_data` is a transfer
        set for distillation. `hyperparameters` are AutoMM's dotted keys.

        With a teacher and `presets`, `time_limit` or `budget`, an auto_distill search: the
        server picks the student and recipe, e.g. `presets="fast_inference"`,
        `budget={"min_speedup": 3}` or `{"max_latency_ms_per_row": 2, "max_size_mb": 50}`
        (any other `auto` setting of the API too: max_trials, students, latency_mode, ...).
        Its job's `leaderboard()` is a DataFrame of the trials."""
        prefix = name or "fit"
        search = presets is not None or time_limit is not None or budget is not None
        if search and teacher is None:
            raise ValueError("presets, time_limit and budget search students for a teacher")

        def dataset_id(data: pd.DataFrame | Dataset | str, role: str) -> str:
            if isinstance(data, pd.DataFrame):
                labelled = role != "unlabeled"
                uploaded = self.upload_dataset(
                    data,
                    name=f"{prefix}-{role}",
                    label=label if labelled and label in data.columns else None,
                    text_columns=text_columns,
                )
                return uploaded.id
            return _dataset_id(data)

        request: dict[str, Any] = {
            "kind": "auto_distill" if search else "finetune" if teacher is None else "distill",
            "train_dataset": dataset_id(train_data, "train"),
            "hyperparameters": dict(hyperparameters or {}),
            "accelerator": accelerator,
        }
        if tuning_data is not None:
            request["tuning_dataset"] = dataset_id(tuning_data, "tuning")
        if unlabeled_data is not None:
            request["unlabeled_dataset"] = dataset_id(unlabeled_data, "unlabeled")
        if teacher is not None:
            request["teacher_model"] = _teacher_id(teacher)
        if label is not None:
            request["label"] = label
        if text_columns is not None:
            request["text_columns"] = list(text_columns)
        if search:
            auto: dict[str, Any] = dict(budget or {})
            if presets is not None:
                auto["presets"] = presets
            if time_limit is not None:
                auto["time_limit"] = time_limit
            request["auto"] = auto
        return self.submit_job(request)


def _automm_text_columns(assets: Path) -> list[str]:
    """The text columns an AutoMM predictor was fit on, from its assets.json, in its order."""
    raw = json.loads(assets.read_text(encoding="utf-8"))
    label = raw.get("label_column")
    columns = raw.get("column_types") or {}
    return [c for c, kind in columns.items() if kind == "text" and c != label]


def _teacher_id(teacher: RemoteModel | Job | str) -> str:
    if isinstance(teacher, RemoteModel):
        return teacher.id
    if isinstance(teacher, Job):
        return teacher.model.id
    return teacher


def _error_from(response: httpx.Response) -> DistilleryError:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        return DistilleryError(response.status_code, body)
    if isinstance(body, dict):
        # A proxy's or framework's JSON error that is not problem+json.
        return DistilleryError(
            response.status_code, {"title": response.reason_phrase, "detail": json.dumps(body)}
        )
    return DistilleryError(
        response.status_code,
        {"title": response.reason_phrase or "HTTP error", "detail": response.text[:500]},
    )
