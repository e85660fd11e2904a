"""The artifact store on a real S3-compatible server (moto in server mode, a subprocess on a free
port, spoken to over HTTP by boto3), and a whole job with API and worker sharing nothing but
PostgreSQL, Redis and the bucket."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from domain.config import Settings
from domain.storage import ArtifactNotFound
from domain.storage.s3 import MANIFEST, ArtifactCorrupt, S3ArtifactStore
from tests.conftest import upload_model_folder, upload_table, wait_for_job
from tests.factories import qnli_like_frame
from tests.integration.test_job_lifecycle import LIFECYCLE, events_of, wait_for_event

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with log_path.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        endpoint = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"moto server exited:\n{log_path.read_text()}")
                try:
                    httpx.get(endpoint, timeout=2)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"moto not answering:\n{log_path.read_text()}") from None
                    time.sleep(0.2)
            yield endpoint
        finally:
            server.terminate()
            server.wait(timeout=15)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # moto accepts any credentials; set here (not in the settings) as a deployment would.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def bucket(s3_endpoint: str, aws_env: None) -> str:
    name = f"distillery-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint).create_bucket(Bucket=name)
    return name


def s3_client(endpoint: str):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def s3_settings(home: Path, endpoint: str, bucket: str, **more: object) -> Settings:
    return Settings(
        home=home, artifact_url=f"s3://{bucket}/deploy-a", s3_endpoint_url=endpoint, **more
    )


def store_on(home: Path, endpoint: str, bucket: str) -> S3ArtifactStore:
    """A store as one host sees it: its own DISTILLERY_HOME for local copies."""
    return S3ArtifactStore.from_settings(s3_settings(home, endpoint, bucket))


def object_names(endpoint: str, bucket: str) -> list[str]:
    listed = s3_client(endpoint).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def files_per_folder(endpoint: str, bucket: str) -> dict[str, int]:
    """How many files (manifests aside) each folder of the bucket holds."""
    folders = [n.rsplit("/", 1)[0] for n in object_names(endpoint, bucket) if MANIFEST not in n]
    return {folder: folders.count(folder) for folder in folders}


def make_folder(folder: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    return folder


def test_tables_and_folders_travel_between_hosts(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    writer = store_on(tmp_path / "host-a", s3_endpoint, bucket)
    reader = store_on(tmp_path / "host-b", s3_endpoint, bucket)
    frame = pd.DataFrame({"text": ["a", "b", "c"], "label": [0, 1, 0]})

    size = writer.write_table("datasets/ds_1.parquet", frame)
    assert size > 0
    pd.testing.assert_frame_equal(reader.read_table("datasets/ds_1.parquet"), frame)
    assert (tmp_path / "host-b/artifact-cache/datasets/ds_1.parquet").is_file()

    files = {"config.json": b"{}", "tokenizer/vocab.txt": b"a\nb\n", "w.safetensors": b"x" * 5000}
    published = writer.put_folder("models/mdl_1", make_folder(tmp_path / "bundle", files))
    assert not (tmp_path / "bundle").exists()  # consumed: moved into host A's cache
    assert published == tmp_path / "host-a/artifact-cache/models/mdl_1"
    assert object_names(s3_endpoint, bucket) == [
        "deploy-a/datasets/ds_1.parquet",
        f"deploy-a/models/mdl_1/{MANIFEST}",
        "deploy-a/models/mdl_1/config.json",
        "deploy-a/models/mdl_1/tokenizer/vocab.txt",
        "deploy-a/models/mdl_1/w.safetensors",
    ]
    copy = reader.local_folder("models/mdl_1")
    assert copy == tmp_path / "host-b/artifact-cache/models/mdl_1"
    for name, content in files.items():
        assert (copy / name).read_bytes() == content
    # A second lookup is served from the host's cache, not downloaded again.
    (copy / "marker").write_text("kept")
    assert (reader.local_folder("models/mdl_1") / "marker").is_file()


def test_a_folder_without_its_manifest_or_with_a_changed_file_is_never_served(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    writer = store_on(tmp_path / "host-a", s3_endpoint, bucket)
    writer.put_folder("models/mdl_2", make_folder(tmp_path / "b", {"w.safetensors": b"weights"}))
    client = s3_client(s3_endpoint)

    client.put_object(Bucket=bucket, Key="deploy-a/models/mdl_2/w.safetensors", Body=b"torn!!!")
    with pytest.raises(ArtifactCorrupt, match="does not match its manifest"):
        store_on(tmp_path / "host-b", s3_endpoint, bucket).local_folder("models/mdl_2")
    assert not (tmp_path / "host-b/artifact-cache/models/mdl_2").exists()

    client.delete_object(Bucket=bucket, Key=f"deploy-a/models/mdl_2/{MANIFEST}")
    with pytest.raises(ArtifactNotFound):
        store_on(tmp_path / "host-c", s3_endpoint, bucket).local_folder("models/mdl_2")


def checkpoint_step(working: Path, step: int) -> Path:
    """A training checkpoint's files as of `step`, written into the working folder."""
    return make_folder(
        working, {"state.pt": f"step {step}".encode(), "model.safetensors": f"w{step}".encode()}
    )


def test_checkpoints_mirror_to_another_host_and_a_torn_one_is_ignored(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    first = store_on(tmp_path / "host-a", s3_endpoint, bucket)
    second = store_on(tmp_path / "host-b", s3_endpoint, bucket)
    key = "checkpoints/job_1"
    working = first.working_folder(key)
    first.sync_folder(key, checkpoint_step(working, 1))
    first.sync_folder(key, checkpoint_step(working, 2))
    # One generation of files in the bucket: the first sync's were removed by the second.
    assert list(files_per_folder(s3_endpoint, bucket).values()) == [2]

    resumed = second.working_folder(key)
    assert not second.pull_folder("checkpoints/job_9", resumed)
    assert second.pull_folder(key, resumed)
    assert (resumed / "state.pt").read_bytes() == b"step 2"
    assert not (resumed / MANIFEST).exists()

    # A file changed under its manifest: the next attempt starts over rather than resume from it.
    (generation,) = files_per_folder(s3_endpoint, bucket)
    s3_client(s3_endpoint).put_object(Bucket=bucket, Key=f"{generation}/state.pt", Body=b"step 3")
    third = store_on(tmp_path / "host-c", s3_endpoint, bucket)
    assert not third.pull_folder(key, third.working_folder(key))


class FailsOnUpload:
    """An S3 client whose worker dies after `uploads` file uploads."""

    def __init__(self, client: object, uploads: int) -> None:
        self.client, self.uploads = client, uploads

    def upload_file(self, *args: object) -> None:
        if self.uploads == 0:
            raise ConnectionError("worker lost mid-upload")
        self.uploads -= 1
        self.client.upload_file(*args)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.client, name)


def test_a_checkpoint_sync_cut_short_leaves_the_last_complete_one_to_resume_from(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    first = store_on(tmp_path / "host-a", s3_endpoint, bucket)
    key = "checkpoints/job_2"
    working = first.working_folder(key)
    first.sync_folder(key, checkpoint_step(working, 1))

    first.client = FailsOnUpload(first.client, uploads=1)
    with pytest.raises(ConnectionError):
        first.sync_folder(key, checkpoint_step(working, 2))

    second = store_on(tmp_path / "host-b", s3_endpoint, bucket)
    resumed = second.working_folder(key)
    assert second.pull_folder(key, resumed)
    assert (resumed / "state.pt").read_bytes() == b"step 1"
    assert (resumed / "model.safetensors").read_bytes() == b"w1"

    # The next sync that completes clears the half-written generation away.
    second.sync_folder(key, resumed)
    assert list(files_per_folder(s3_endpoint, bucket).values()) == [2]


def test_files_and_delete_keep_to_their_key(tmp_path: Path, s3_endpoint: str, bucket: str) -> None:
    store = store_on(tmp_path / "host-a", s3_endpoint, bucket)
    source = tmp_path / "entry.safetensors"
    source.write_bytes(b"logits")
    store.put_file("teacher_outputs/abc.safetensors", source)
    fetched = tmp_path / "elsewhere/abc.safetensors"
    assert store.fetch_file("teacher_outputs/abc.safetensors", fetched)
    assert fetched.read_bytes() == b"logits"
    assert not store.fetch_file("teacher_outputs/missing.safetensors", tmp_path / "m")
    assert not (tmp_path / "m").exists()

    store.put_folder("models/mdl_1", make_folder(tmp_path / "one", {"a": b"1"}))
    store.put_folder("models/mdl_10", make_folder(tmp_path / "ten", {"a": b"10"}))
    store.delete("models/mdl_1")
    assert object_names(s3_endpoint, bucket) == [
        f"deploy-a/models/mdl_10/{MANIFEST}",
        "deploy-a/models/mdl_10/a",
        "deploy-a/teacher_outputs/abc.safetensors",
    ]
    assert not (tmp_path / "host-a/artifact-cache/models/mdl_1").exists()
    with pytest.raises(ValueError, match="outside the store"):
        store.local_folder("models/../../etc")


def test_readyz_names_the_storage_when_the_bucket_is_missing(
    tmp_path: Path, s3_endpoint: str, bucket: str
) -> None:
    ready = s3_settings(tmp_path / "ok", s3_endpoint, bucket)
    with TestClient(create_app(ready)) as client:
        response = client.get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["components"]["storage"] == "ok"

    missing = s3_settings(tmp_path / "missing", s3_endpoint, "no-such-bucket")
    with TestClient(create_app(missing)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["field"] == "storage"
    assert body["components"] == {"database": "ok", "broker": "ok", "storage": "ClientError"}


FAST = {"optimization.learning_rate": 3e-3, "optimization.max_epochs": 3, "env.batch_size": 16}


def test_job_end_to_end_with_api_and_worker_sharing_only_postgres_redis_and_the_bucket(
    tmp_path: Path,
    s3_endpoint: str,
    bucket: str,
    postgres_redis_settings: Settings,
    start_worker,
    qnli_tables: dict,
    tiny_student_dir: Path,
) -> None:
    shared = {
        "artifact_url": f"s3://{bucket}/deploy-a",
        "s3_endpoint_url": s3_endpoint,
    }
    api_settings = postgres_redis_settings.model_copy(
        update={"home": tmp_path / "api-host", **shared}
    )
    worker_settings = postgres_redis_settings.model_copy(
        update={"home": tmp_path / "worker-host", "log_format": "json", **shared}
    )
    worker_settings.ensure_local_dirs()
    worker = start_worker(worker_settings)

    with TestClient(create_app(api_settings)) as client:
        assert client.get("/readyz").status_code == 200
        train = upload_table(client, qnli_tables["train"], "train.csv")
        tuning = upload_table(client, qnli_tables["tuning"], "tuning.csv")
        # The starting checkpoint travels through the bucket too: a folder path on the API's
        # disk would mean nothing to the worker.
        backbone = upload_model_folder(client, tiny_student_dir)["id"]

        teacher = client.post(
            "/v1/jobs",
            json={
                "kind": "finetune",
                "train_dataset": train["id"],
                "tuning_dataset": tuning["id"],
                "hyperparameters": {"model.hf_text.checkpoint_name": backbone, **FAST},
            },
        )
        assert teacher.status_code == 202, teacher.text
        teacher_job = wait_for_job(client, teacher.json()["id"])
        assert teacher_job["status"] == "succeeded", teacher_job["error"]
        teacher_id = teacher_job["model"]

        distill = client.post(
            "/v1/jobs",
            json={
                "kind": "distill",
                "train_dataset": train["id"],
                "tuning_dataset": tuning["id"],
                "teacher_model": teacher_id,
                "hyperparameters": {
                    **FAST,
                    "model.hf_text.checkpoint_name": "teacher",
                    "model.hf_text.layers": [0],
                },
            },
        )
        assert distill.status_code == 202, distill.text
        distill_job = wait_for_job(client, distill.json()["id"])
        assert distill_job["status"] == "succeeded", distill_job["error"]
        student_id = distill_job["model"]

        rows = qnli_tables["test"].drop(columns=["label"]).head(5).to_dict(orient="records")
        predicted = client.post(
            f"/v1/models/{student_id}/predict",
            json={"rows": rows, "return_probabilities": True},
        )
        assert predicted.status_code == 200, predicted.text
        assert len(predicted.json()["predictions"]) == 5

        downloaded = client.get(f"/v1/models/{teacher_id}/download")
        assert downloaded.status_code == 200
        assert downloaded.content[:2] == b"\x1f\x8b"

    names = object_names(s3_endpoint, bucket)
    for artifact in (
        f"datasets/{train['id']}.parquet",
        f"models/{backbone}/{MANIFEST}",
        f"models/{teacher_id}/{MANIFEST}",
        f"models/{student_id}/{MANIFEST}",
    ):
        assert f"deploy-a/{artifact}" in names
    assert any(name.startswith("deploy-a/teacher_outputs/") for name in names)
    # Finished jobs leave no checkpoints, in the bucket or on the worker's disk.
    assert not any(name.startswith("deploy-a/checkpoints/") for name in names)
    assert not any((tmp_path / "worker-host/working/checkpoints").glob("*"))

    # Each host holds only its own copies, fetched from the bucket: the worker read the
    # datasets the API wrote, the API read the model the worker wrote.
    worker_cache = tmp_path / "worker-host/artifact-cache"
    api_cache = tmp_path / "api-host/artifact-cache"
    assert (worker_cache / f"datasets/{train['id']}.parquet").is_file()
    assert (worker_cache / f"models/{backbone}/{MANIFEST}").is_file()
    assert (api_cache / f"models/{student_id}/{MANIFEST}").is_file()
    # Nothing went to either host's local artifact directory (the embedded default's store).
    for host in ("api-host", "worker-host"):
        local = tmp_path / host / "artifacts"
        assert not [p for p in local.rglob("*") if p.is_file()], host

    # The worker logged JSON, and each job's lines, Celery's own included, carry its id.
    lines = worker.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    for job in (teacher_job, distill_job):
        own = [r for r in records if r.get("job_id") == job["id"]]
        assert any(r["logger"] == "distillery.worker" and "attempt 1" in r["message"] for r in own)
        assert any(r["logger"] == "celery.app.trace" and "succeeded" in r["message"] for r in own)


def test_a_job_whose_worker_dies_resumes_on_another_host_from_the_bucket(
    tmp_path: Path,
    s3_endpoint: str,
    bucket: str,
    postgres_redis_settings: Settings,
    start_worker,
    tiny_student_dir: Path,
) -> None:
    """The checkpoint lives in the bucket: a second worker with a home of its own resumes it."""
    common = {"artifact_url": f"s3://{bucket}/deploy-a", "s3_endpoint_url": s3_endpoint}
    settings = postgres_redis_settings.model_copy(update={**LIFECYCLE, **common})

    def host(name: str) -> Settings:
        on_host = settings.model_copy(update={"home": tmp_path / name})
        on_host.ensure_local_dirs()
        return on_host

    with TestClient(create_app(host("api-host"))) as client:
        train = upload_table(client, qnli_like_frame(800, seed=4), "big.csv")["id"]
        uploaded = upload_model_folder(client, tiny_student_dir)
        first = start_worker(host("first-host"), "first")
        job_id = client.post(
            "/v1/jobs",
            json={
                "kind": "finetune",
                "train_dataset": train,
                "hyperparameters": {
                    "model.hf_text.checkpoint_name": uploaded["id"],
                    "optimization.max_epochs": 4,
                    "optimization.patience": 1000,
                    "env.batch_size": 16,
                },
            },
        ).json()["id"]
        saved = wait_for_event(client, job_id, "checkpoint_saved")
        first.kill()
        assert f"deploy-a/checkpoints/{job_id}/{MANIFEST}" in object_names(s3_endpoint, bucket)

        start_worker(host("second-host"), "second")
        job = wait_for_job(client, job_id)
        assert job["status"] == "succeeded", job["error"]
        assert job["attempt"] == 2
        assert "resumed" in [event["kind"] for event in events_of(client, job_id)]
        assert job["metrics"]["info"]["resumed_from_step"] >= saved["data"]["step"] > 0

    assert not any(
        name.startswith(f"deploy-a/checkpoints/{job_id}")
        for name in object_names(s3_endpoint, bucket)
    )
