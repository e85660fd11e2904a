"""Request and response bodies of the /v1 API. One concept, one name: these match the columns."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_PREDICT_ROWS = 1024


class DatasetOut(BaseModel):
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
    created_at: datetime


class ModelOut(BaseModel):
    id: str
    name: str
    source: Literal["upload", "job"]
    problem_type: str
    labels: list[str]
    text_columns: list[str]
    architecture: str
    num_parameters: int
    size_bytes: int
    job_id: str | None
    metrics: dict[str, Any]
    lineage: dict[str, Any]
    created_at: datetime


class JobCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "kind": "distill",
                    "train_dataset": "ds_0123456789abcdef0123",
                    "tuning_dataset": "ds_3210fedcba9876543210",
                    "teacher_model": "mdl_0123456789abcdef0123",
                    "label": "label",
                    "hyperparameters": {
                        "model.hf_text.checkpoint_name": "sentence-transformers/all-MiniLM-L6-v2",
                        "model.hf_text.layers": 3,
                        "optimization.max_epochs": 2,
                    },
                }
            ]
        },
    )

    kind: Literal["finetune", "distill"]
    train_dataset: str = Field(description="Id of the training dataset")
    tuning_dataset: str | None = Field(
        default=None, description="Id of the dataset that picks the best checkpoint"
    )
    teacher_model: str | None = Field(default=None, description="Teacher model id (distill)")
    label: str | None = Field(
        default=None, description="Label column; defaults to the training dataset's"
    )
    text_columns: list[str] | None = Field(
        default=None, description="Text columns; default: the training dataset's"
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="AutoMM-style dotted keys, e.g. optimization.max_epochs"
    )


class JobError(BaseModel):
    code: str
    message: str


class JobOut(BaseModel):
    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    train_dataset: str
    tuning_dataset: str | None
    teacher_model: str | None
    label: str
    text_columns: list[str]
    hyperparameters: dict[str, Any]
    progress: float
    metrics: dict[str, Any]
    error: JobError | None
    model: str | None = Field(description="The model this job produced, once it succeeded")
    attempt: int
    device: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "rows": [
                        {
                            "question": "What is the capital of France?",
                            "sentence": "Paris is the capital of France.",
                        }
                    ],
                    "return_probabilities": True,
                }
            ]
        },
    )

    rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_PREDICT_ROWS)
    return_probabilities: bool = False


class PredictResponse(BaseModel):
    model: str
    predictions: list[str] | list[float]
    probabilities: list[dict[str, float]] | None = None


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str
    label: str | None = Field(default=None, description="Label column; default: the dataset's")


class EvaluateResponse(BaseModel):
    model: str
    dataset: str
    row_count: int
    metrics: dict[str, float]


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: str
    broker: str
