"""Where each kind of artifact lives in the store: keys, not paths, go into the database."""

from __future__ import annotations


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}.parquet"


def model_key(model_id: str) -> str:
    return f"models/{model_id}"


def checkpoint_key(job_id: str) -> str:
    return f"checkpoints/{job_id}"


# Teacher outputs shared by every job (see distillery/teacher_cache.py).
TEACHER_OUTPUTS_KEY = "teacher_outputs"


def variant_key(model_storage_key: str, kind: str) -> str:
    """Variant artifacts live under the model's own key, so deleting the model deletes them."""
    return f"{model_storage_key}/variants/{kind}"
