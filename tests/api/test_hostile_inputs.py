"""Hostile and malformed input, one table row each: what is sent, the status, what the problem says.

The service runs with auth on and a small upload cap; requests are made with key A, while key B
owns a dataset and a model of its own (someone else's ids). Every error must be a problem+json
body naming what is wrong; nothing a client sends may give a 5xx.

`python -m tests.api.test_hostile_inputs` prints the same table in Markdown.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from domain.auth import create_key
from domain.config import Settings
from tests.conftest import migrate, zip_folder
from tests.factories import qnli_like_frame, save_tiny_bert

PROBLEM = "application/problem+json"
MAX_UPLOAD_BYTES = 6 * 1024 * 1024


@dataclass
class Env:
    client: TestClient
    headers: dict[str, str]  # key A: the caller in every row
    teacher_dir: Path
    allowed_root: Path
    own_dataset: str
    others_dataset: str
    others_model: str

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(
            url, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs
        )

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(url, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs)

    def upload(self, filename: str, content: bytes, **form: str) -> httpx.Response:
        return self.post("/v1/datasets", files={"file": (filename, content)}, data=form)

    def upload_model(self, filename: str, content: bytes, **form: str) -> httpx.Response:
        form.setdefault("text_columns", "question,sentence")
        form.setdefault("labels", "entailment,not_entailment")
        return self.post("/v1/models", files={"file": (filename, content)}, data=form)

    def job(self, **body: Any) -> httpx.Response:
        return self.post(
            "/v1/jobs", json={"kind": "finetune", "train_dataset": self.own_dataset, **body}
        )


def build_env(home: Path) -> Iterator[Env]:
    settings = Settings(
        home=home / "home",
        auth_enabled=True,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        allowed_data_roots=[home / "shared"],
        task_queue="hostile-tests",
    )
    settings.ensure_local_dirs()
    migrate(settings.resolved_database_url())
    shared = home / "shared"
    shared.mkdir()
    (shared / "train.csv").write_bytes(qnli_like_frame(20).to_csv(index=False).encode())
    (home / "outside.csv").write_bytes(qnli_like_frame(20).to_csv(index=False).encode())
    (shared / "escape.csv").symlink_to(home / "outside.csv")
    teacher_dir = save_tiny_bert(home / "teacher", layers=1, hidden=16)
    app = create_app(settings)
    with app.state.session_factory() as session:
        _, key_a = create_key(session, "user a")
        _, key_b = create_key(session, "user b")
    with TestClient(app) as client:
        as_b = {"Authorization": f"Bearer {key_b}"}
        as_a = {"Authorization": f"Bearer {key_a}"}
        csv = qnli_like_frame(30).to_csv(index=False).encode()
        others_dataset = client.post("/v1/datasets", files={"file": ("b.csv", csv)}, headers=as_b)
        own_dataset = client.post("/v1/datasets", files={"file": ("a.csv", csv)}, headers=as_a)
        others_model = client.post(
            "/v1/models",
            files={"file": ("teacher.zip", zip_folder(teacher_dir))},
            data={"text_columns": "question,sentence", "labels": "entailment,not_entailment"},
            headers=as_b,
        )
        for response in (others_dataset, own_dataset, others_model):
            assert response.status_code == 201, response.text
        yield Env(
            client=client,
            headers=as_a,
            teacher_dir=teacher_dir,
            allowed_root=shared,
            own_dataset=own_dataset.json()["id"],
            others_dataset=others_dataset.json()["id"],
            others_model=others_model.json()["id"],
        )


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def zip_with(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = 0o120777 << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def tar_gz_with(
    members: dict[str, bytes], links: dict[str, tuple[bytes, str]] | None = None
) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


def checkpoint_members(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def with_config(folder: Path, **changes: Any) -> bytes:
    members = checkpoint_members(folder)
    config = json.loads(members["config.json"])
    config.update(changes)
    members["config.json"] = json.dumps(config).encode()
    return zip_with(members)


def junk(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def oversized_stream() -> Iterator[bytes]:
    """A chunked multipart body with no Content-Length, bigger than the cap."""
    yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
    for _ in range(8):
        yield b"x" * (1024 * 1024)
    yield b"\r\n--b--\r\n"


@dataclass
class Case:
    name: str
    send: Callable[[Env], httpx.Response]
    status: int
    says: str
    field: str | None = None


CASES = [
    # --- tables ---------------------------------------------------------------------------
    Case("empty file", lambda e: e.upload("empty.csv", b""), 422, "the file is empty", "file"),
    Case(
        "binary junk named .csv",
        lambda e: e.upload("data.csv", junk(4096)),
        415,
        "binary data",
        "file",
    ),
    Case(
        "Excel workbook renamed .csv",
        lambda e: e.upload("data.csv", zip_with({"xl/workbook.xml": b"<x/>"})),
        415,
        "zip archive",
        "file",
    ),
    Case(
        "PNG image named .parquet",
        lambda e: e.upload("data.parquet", b"\x89PNG\r\n\x1a\n" + junk(100)),
        415,
        "PNG image",
        "file",
    ),
    Case(
        "text named .parquet",
        lambda e: e.upload("data.parquet", csv_bytes(qnli_like_frame(5))),
        415,
        "not a Parquet file",
        "file",
    ),
    Case(
        "Parquet named .csv",
        lambda e: e.upload("data.csv", parquet_bytes(qnli_like_frame(5))),
        415,
        "holds Parquet",
        "file",
    ),
    Case(
        "unsupported extension .xlsx",
        lambda e: e.upload("data.xlsx", b"a,b\n1,2\n"),
        415,
        "unsupported file type '.xlsx'",
        "file",
    ),
    Case(
        "corrupt Parquet (signature, then junk)",
        lambda e: e.upload("data.parquet", b"PAR1" + junk(2000) + b"PAR1"),
        422,
        "could not read the file as parquet",
        "file",
    ),
    Case(
        "2 GB declared Content-Length",
        lambda e: e.post(
            "/v1/datasets",
            content=b"x",
            headers={
                "Content-Length": str(2 * 1024**3),
                "Content-Type": "multipart/form-data; boundary=b",
            },
        ),
        413,
        "over the",
    ),
    Case(
        "chunked body past the cap, no Content-Length",
        lambda e: e.post(
            "/v1/datasets",
            content=oversized_stream(),
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        ),
        413,
        "request body is over",
    ),
    Case(
        "file over the cap (body within the form allowance)",
        lambda e: e.upload("big.csv", b"a,b\n" + b"1,2\n" * (MAX_UPLOAD_BYTES // 4 + 10)),
        413,
        "byte limit",
        "file",
    ),
    Case(
        "non-UTF-8 (Latin-1) text, no encoding given",
        lambda e: e.upload(
            "latin.csv",
            "question,label\ncafé crème brûlée,a\nçà et là encore,b\n".encode("latin-1"),
        ),
        422,
        "not valid UTF-8",
        "encoding",
    ),
    Case(
        "unknown encoding name",
        lambda e: e.upload("data.csv", csv_bytes(qnli_like_frame(5)), encoding="klingon"),
        422,
        "unknown encoding 'klingon'",
        "encoding",
    ),
    Case(
        "bytes-to-bytes codec as encoding (hex)",
        lambda e: e.upload("data.csv", csv_bytes(qnli_like_frame(5)), encoding="hex"),
        422,
        "use a text encoding",
        "encoding",
    ),
    Case(
        "delimiter of two characters",
        lambda e: e.upload("data.csv", csv_bytes(qnli_like_frame(5)), delimiter=";;"),
        422,
        "delimiter must be one character",
        "delimiter",
    ),
    Case(
        "wrong label column",
        lambda e: e.upload("data.csv", csv_bytes(qnli_like_frame(5)), label="lable"),
        422,
        "label column 'lable' not found; columns are: question, sentence, label",
        "label",
    ),
    Case(
        "mixed label types (JSONL: 1, 'yes', 0, 'no')",
        lambda e: e.upload(
            "mixed.jsonl",
            b"".join(
                json.dumps({"text": "a long enough sentence", "label": v}).encode() + b"\n"
                for v in [1, "yes", 0, "no"]
            ),
        ),
        422,
        "mixes value types",
        "label",
    ),
    Case(
        "one class only",
        lambda e: e.upload("one.csv", csv_bytes(qnli_like_frame(6).assign(label="same"))),
        422,
        "need at least 2",
        "label",
    ),
    Case(
        "label missing in some rows",
        lambda e: e.upload(
            "holes.csv", b"text,label\na long sentence here,yes\nanother long sentence,\n"
        ),
        422,
        "is empty in 1 row(s)",
        "label",
    ),
    Case(
        "header only, no rows",
        lambda e: e.upload("header.csv", b"question,sentence,label\n"),
        422,
        "no rows",
        "file",
    ),
    Case(
        "ragged CSV (a row with extra fields)",
        lambda e: e.upload("ragged.csv", b"text,label\na long sentence,yes\nb,no,extra,fields\n"),
        422,
        "could not read the file as csv",
        "file",
    ),
    Case(
        "malformed JSONL",
        lambda e: e.upload("bad.jsonl", b'{"text": "fine", "label": 1}\n{"text": oops}\n'),
        422,
        "could not read the file as jsonl",
        "file",
    ),
    Case(
        "5,000 columns",
        lambda e: e.upload(
            "wide.csv",
            (",".join(f"c{i}" for i in range(5000)) + "\n" + ",".join("1" * 5000) + "\n").encode(),
        ),
        422,
        "at most 1000 are read",
        "file",
    ),
    Case(
        "column name of 300 characters",
        lambda e: e.upload(
            "long.csv", ("x" * 300 + ",label\nsome long text,a\nother long text,b\n").encode()
        ),
        422,
        "is unusable",
        "file",
    ),
    Case(
        "text_columns naming a missing column",
        lambda e: e.upload("data.csv", csv_bytes(qnli_like_frame(5)), text_columns="question,body"),
        422,
        "text column(s) body not found",
        "text_columns",
    ),
    Case(
        "no text column to infer (numbers only)",
        lambda e: e.upload("numbers.csv", b"a,b,label\n1,2,x\n3,4,y\n"),
        422,
        "no text column found",
        "text_columns",
    ),
    Case(
        "JSON body where a multipart upload is expected",
        lambda e: e.post("/v1/datasets", json={"file": "train.csv"}),
        422,
        "file: required",
        "file",
    ),
    # --- server paths ---------------------------------------------------------------------
    Case(
        "server path outside the allowed roots",
        lambda e: e.post("/v1/datasets/from-path", json={"path": "/etc/passwd"}),
        403,
        "outside the folders this server may read",
        "path",
    ),
    Case(
        "server path: a link inside the root to a file outside",
        lambda e: e.post(
            "/v1/datasets/from-path", json={"path": str(e.allowed_root / "escape.csv")}
        ),
        403,
        "outside the folders",
        "path",
    ),
    Case(
        "server path with ../ climbing out of the root",
        lambda e: e.post(
            "/v1/datasets/from-path", json={"path": str(e.allowed_root / ".." / "outside.csv")}
        ),
        403,
        "outside the folders",
        "path",
    ),
    Case(
        "relative server path",
        lambda e: e.post("/v1/datasets/from-path", json={"path": "train.csv"}),
        422,
        "must be an absolute path",
        "path",
    ),
    # --- model archives -------------------------------------------------------------------
    Case(
        "zip slip (../ member)",
        lambda e: e.upload_model("m.zip", zip_with({"../escape.txt": b"x", "config.json": b"{}"})),
        422,
        "leaves the archive",
        "file",
    ),
    Case(
        "absolute path member",
        lambda e: e.upload_model("m.zip", zip_with({"/etc/cron.d/evil": b"x"})),
        422,
        "leaves the archive",
        "file",
    ),
    Case(
        "backslash path member (..\\..\\evil)",
        lambda e: e.upload_model("m.zip", zip_with({"..\\..\\evil.txt": b"x"})),
        422,
        "leaves the archive",
        "file",
    ),
    Case(
        "symlink member in a zip",
        lambda e: e.upload_model(
            "m.zip", zip_with({"config.json": b"{}"}, links={"vocab.txt": "/etc/passwd"})
        ),
        422,
        "is a link",
        "file",
    ),
    Case(
        "symlink member in a tar.gz",
        lambda e: e.upload_model(
            "m.tar.gz",
            tar_gz_with(
                {"config.json": b"{}"}, links={"vocab.txt": (tarfile.SYMTYPE, "/etc/passwd")}
            ),
        ),
        422,
        "is a link",
        "file",
    ),
    Case(
        "hard link member in a tar.gz",
        lambda e: e.upload_model(
            "m.tar.gz",
            tar_gz_with({"config.json": b"{}"}, links={"x": (tarfile.LNKTYPE, "/etc/shadow")}),
        ),
        422,
        "is a link",
        "file",
    ),
    Case(
        "zip bomb (40 MiB of zeros in 40 KiB)",
        lambda e: e.upload_model("m.zip", zip_with({"model.safetensors": bytes(40 * 1024**2)})),
        422,
        "a zip bomb",
        "file",
    ),
    Case(
        "tar.gz bomb (40 MiB of zeros)",
        lambda e: e.upload_model(
            "m.tar.gz", tar_gz_with({"model.safetensors": bytes(40 * 1024**2)})
        ),
        422,
        "times its size",
        "file",
    ),
    Case(
        "2,001 archive members",
        lambda e: e.upload_model("m.zip", zip_with({f"f{i}.txt": b"" for i in range(2001)})),
        422,
        "at most 2000 are accepted",
        "file",
    ),
    Case(
        "pickled weights (pytorch_model.bin)",
        lambda e: e.upload_model(
            "m.zip", zip_with({"config.json": b"{}", "pytorch_model.bin": b"\x80\x04pickle"})
        ),
        422,
        "convert them to safetensors",
        "file",
    ),
    Case(
        "pickled weights nested in a folder (sub/model.pt)",
        lambda e: e.upload_model(
            "m.zip", zip_with({"config.json": b"{}", "extra/model.pt": b"\x80\x04pickle"})
        ),
        422,
        "convert them to safetensors",
        "file",
    ),
    Case(
        "config asking for remote code (auto_map)",
        lambda e: e.upload_model(
            "m.zip",
            with_config(e.teacher_dir, auto_map={"AutoModel": "evil.EvilModel"}),
        ),
        422,
        "remote code is never run",
        "file",
    ),
    Case(
        "config.json that is not JSON",
        lambda e: e.upload_model("m.zip", zip_with({"config.json": b"{not json"})),
        422,
        "config.json is not valid JSON",
        "file",
    ),
    Case(
        "config of an unknown architecture",
        lambda e: e.upload_model("m.zip", with_config(e.teacher_dir, model_type="not-a-model")),
        422,
        "not-a-model",
        "file",
    ),
    Case(
        "checkpoint without a tokenizer",
        lambda e: e.upload_model(
            "m.zip",
            zip_with(
                {
                    name: content
                    for name, content in checkpoint_members(e.teacher_dir).items()
                    if name in ("config.json", "model.safetensors")
                }
            ),
        ),
        422,
        "tokenizer",
        "file",
    ),
    Case(
        "label map of 3 names for 2 outputs",
        lambda e: e.upload_model("m.zip", zip_folder(e.teacher_dir), labels="a,b,c"),
        422,
        "labels lists 3 names but the checkpoint has 2 outputs",
        "labels",
    ),
    Case(
        "text file named .zip",
        lambda e: e.upload_model("m.zip", b"this is not an archive"),
        415,
        "is not a .zip or .tar.gz archive",
        "file",
    ),
    Case(
        "truncated tar.gz",
        lambda e: e.upload_model("m.tar.gz", gzip.compress(junk(50_000))[:20_000]),
        422,
        "truncated",
        "file",
    ),
    # --- jobs and ids ---------------------------------------------------------------------
    Case(
        "unknown hyperparameter",
        lambda e: e.job(hyperparameters={"optimization.max_epoch": 2}),
        422,
        "optimization.max_epochs",
        "hyperparameters.optimization.max_epoch",
    ),
    Case(
        "negative epochs",
        lambda e: e.job(hyperparameters={"optimization.max_epochs": -1}),
        422,
        "max_epochs",
        "hyperparameters.optimization.max_epochs",
    ),
    Case(
        "unknown top-level job field",
        lambda e: e.job(epochs=3),
        422,
        "unknown field",
        "epochs",
    ),
    Case(
        "job kind of the wrong type",
        lambda e: e.job(kind=5),
        422,
        "kind:",
        "kind",
    ),
    Case(
        "JSON syntax error",
        lambda e: e.post(
            "/v1/jobs",
            content=b'{"kind": "finetune",',
            headers={"Content-Type": "application/json"},
        ),
        422,
        "not valid JSON",
        "body",
    ),
    Case(
        "someone else's dataset id (GET)",
        lambda e: e.get(f"/v1/datasets/{e.others_dataset}"),
        404,
        "no dataset with id",
    ),
    Case(
        "someone else's dataset id (in a job)",
        lambda e: e.job(train_dataset=e.others_dataset),
        404,
        "no dataset with id",
        "train_dataset",
    ),
    Case(
        "someone else's model as teacher",
        lambda e: e.job(kind="distill", teacher_model=e.others_model),
        404,
        "no model with id",
        "teacher_model",
    ),
    Case(
        "someone else's model as the student's checkpoint",
        lambda e: e.job(hyperparameters={"model.hf_text.checkpoint_name": e.others_model}),
        422,
        "no such model",
        "hyperparameters.model.hf_text.checkpoint_name",
    ),
    Case(
        "server folder as checkpoint (another owner's bundle by path)",
        lambda e: e.job(hyperparameters={"model.hf_text.checkpoint_name": str(e.teacher_dir)}),
        422,
        "outside the folders this server lets API keys read",
        "hyperparameters.model.hf_text.checkpoint_name",
    ),
    Case(
        "someone else's model: predict",
        lambda e: e.post(
            f"/v1/models/{e.others_model}/predict", json={"rows": [{"question": "x"}]}
        ),
        404,
        "no model with id",
    ),
    Case(
        "id with a NUL byte",
        lambda e: e.get("/v1/models/mdl_%00"),
        404,
        "no model with id",
    ),
    Case(
        "forged pagination cursor",
        lambda e: e.get("/v1/datasets", params={"cursor": "not-a-cursor!"}),
        422,
        "cursor is not one this API returned",
        "cursor",
    ),
    Case(
        "page size 0",
        lambda e: e.get("/v1/models", params={"limit": 0}),
        422,
        "limit:",
        "limit",
    ),
    Case(
        "too many rows to predict (1,025)",
        lambda e: e.post(
            f"/v1/models/{e.others_model}/predict", json={"rows": [{"question": "x"}] * 1025}
        ),
        422,
        "at most 1024",
        "rows",
    ),
    # --- auth and idempotency -------------------------------------------------------------
    Case(
        "no API key",
        lambda e: e.client.get("/v1/datasets"),
        401,
        "send an API key",
    ),
    Case(
        "unknown API key",
        lambda e: e.client.get("/v1/datasets", headers={"Authorization": "Bearer dk_forged"}),
        401,
        "unknown or revoked",
    ),
    Case(
        "Idempotency-Key reused with another body",
        lambda e: _reuse_key(e),
        422,
        "was first sent with a different request",
        "Idempotency-Key",
    ),
]


def _reuse_key(env: Env) -> httpx.Response:
    key = {"Idempotency-Key": f"reuse-{os.urandom(4).hex()}"}
    first = env.post(
        "/v1/datasets", files={"file": ("a.csv", csv_bytes(qnli_like_frame(10)))}, headers=key
    )
    assert first.status_code == 201, first.text
    return env.post(
        "/v1/datasets", files={"file": ("a.csv", csv_bytes(qnli_like_frame(11)))}, headers=key
    )


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    yield from build_env(tmp_path_factory.mktemp("hostile"))


def test_the_table_has_at_least_25_rows() -> None:
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input(env: Env, case: Case) -> None:
    response = case.send(env)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == case.status and body["title"] and body["detail"]
    assert case.says in body["detail"], body
    if case.field is not None:
        assert body.get("field") == case.field, body


def markdown_table() -> str:
    lines = ["| # | input | status | title | detail |", "| --- | --- | --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as home:
        for env in build_env(Path(home)):
            for number, case in enumerate(CASES, 1):
                response = case.send(env)
                body = response.json()
                detail = str(body.get("detail", "")).replace("|", "\\|").replace("\n", " ")
                field = f" (field `{body['field']}`)" if body.get("field") else ""
                lines.append(
                    f"| {number} | {case.name} | {response.status_code} | {body.get('title')} | "
                    f"{detail[:220]}{field} |"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
