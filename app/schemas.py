"""Request and response bodies of the /v1 API. Field names are the API's: where a column is
named otherwise (`train_dataset_id`, `result_model_id`), the route's `*_out` function maps it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from app.cursors import CURSOR_PATTERN
from distillery.hyperparams import KNOWN_KEYS

MAX_PREDICT_ROWS = 1024
# One character, not a double quote or a line break (what the table reader accepts).
DELIMITER_PATTERN = r'^[^\r\n"]$'
ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    """One page of a listing, newest first."""

    data: list[ItemT]
    next_cursor: str | None = Field(
        description="Pass as cursor for the next page; null at end", pattern=CURSOR_PATTERN
    )


DATASET_EXAMPLE: dict[str, Any] = {
    "id": "ds_0123456789abcdef0123",
    "name": "qnli-train",
    "filename": "qnli-train.csv",
    "format": "csv",
    "row_count": 2000,
    "columns": ["question", "sentence", "label"],
    "text_columns": ["question", "sentence"],
    "label_column": "label",
    "problem_type": "binary",
    "label_counts": {"entailment": 1004, "not_entailment": 996},
    "size_bytes": 183220,
    "created_at": "2026-11-29T10:00:00Z",
}


class DatasetOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [DATASET_EXAMPLE]})

    id: str
    name: str
    filename: str
    format: Literal["csv", "tsv", "jsonl", "parquet"]
    row_count: int
    columns: list[str]
    text_columns: list[str] = Field(description="Input columns, named at upload or inferred")
    label_column: str | None = Field(description="null for an unlabelled table")
    problem_type: Literal["binary", "multiclass", "regression"] | None
    label_counts: dict[str, int] = Field(description="Rows per class (empty for regression)")
    size_bytes: int = Field(description="Size as stored (Parquet)")
    created_at: datetime


class ColumnDetail(BaseModel):
    name: str
    dtype: str = Field(description="Stored type: string, int64, double, bool, ...")
    role: Literal["text", "label", "other"] = Field(
        description="text: a model input; label: the target; other: not used"
    )


class DatasetDetail(DatasetOut):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **DATASET_EXAMPLE,
                    "column_details": [
                        {"name": "question", "dtype": "string", "role": "text"},
                        {"name": "sentence", "dtype": "string", "role": "text"},
                        {"name": "label", "dtype": "string", "role": "label"},
                    ],
                    "preview": [
                        {
                            "question": "What is the capital of France?",
                            "sentence": "Paris is the capital of France.",
                            "label": "entailment",
                        }
                    ],
                }
            ]
        }
    )

    column_details: list[ColumnDetail] = Field(description="Every column's type and role")
    preview: list[dict[str, Any]] = Field(
        description="The first rows (at most 5); text over 200 characters is cut, ending in '…'"
    )


class DatasetPage(Page[DatasetOut]):
    pass


class DatasetFromPath(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"path": "/data/shared/qnli/train.parquet", "label": "label"}]
        },
    )

    path: str = Field(
        min_length=1,
        max_length=4096,
        # Absolute, with no NUL byte: what the server can look up at all.
        pattern=r"^/[^\u0000]*$",
        description="A file on the server, under one of DISTILLERY_ALLOWED_DATA_ROOTS",
    )
    name: str | None = Field(default=None, max_length=255)
    label: str | None = Field(default=None, description="Label column (default: 'label')")
    text_columns: list[str] | None = Field(
        default=None, description="Text columns (default: inferred)"
    )
    encoding: str | None = Field(
        default=None, max_length=64, description="Text encoding of CSV/TSV/JSONL (default: UTF-8)"
    )
    delimiter: str | None = Field(
        default=None,
        pattern=DELIMITER_PATTERN,
        description="CSV delimiter (default: detected among , ; tab |)",
    )


class ModelOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "mdl_0123456789abcdef0123",
                    "name": "distill-job_0123456789abcdef0123",
                    "source": "job",
                    "problem_type": "binary",
                    "labels": ["entailment", "not_entailment"],
                    "text_columns": ["question", "sentence"],
                    "architecture": "BertForSequenceClassification",
                    "num_parameters": 17_400_000,
                    "size_bytes": 69_800_000,
                    "job_id": "job_0123456789abcdef0123",
                    "metrics": {"tuning": {"accuracy": 0.84, "f1": 0.84}},
                    "lineage": {
                        "job": "job_0123456789abcdef0123",
                        "kind": "distill",
                        "teacher_model": "mdl_3210fedcba9876543210",
                        "train_dataset": "ds_0123456789abcdef0123",
                        "tuning_dataset": "ds_3210fedcba9876543210",
                        "backbone": "sentence-transformers/all-MiniLM-L6-v2",
                        "hyperparameters": {"optimization.max_epochs": 2},
                    },
                    "created_at": "2026-11-29T10:00:00Z",
                }
            ]
        }
    )

    id: str
    name: str
    source: Literal["upload", "job"]
    problem_type: Literal["binary", "multiclass", "regression"]
    labels: list[str] = Field(
        description="The label map: class names in output order (logit i is labels[i])"
    )
    text_columns: list[str] = Field(description="Input columns the model reads, in order")
    architecture: str
    num_parameters: int
    size_bytes: int = Field(description="Size of the bundle on disk")
    job_id: str | None = Field(description="The job that trained it (source: job)")
    metrics: dict[str, Any]
    lineage: dict[str, Any] = Field(
        description="Where it came from: teacher, datasets, job, backbone, hyperparameters "
        "(source: job); original filename (source: upload)"
    )
    created_at: datetime
    default_variant: str = Field(
        default="float",
        description="Serving variant predict uses when the request names none (see /variants)",
    )


class ModelPage(Page[ModelOut]):
    pass


class AutoDistillCreate(BaseModel):
    """An auto-distill search: what the deployment can afford, and what the search may spend."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"presets": "fast_inference", "min_speedup": 3, "time_limit": 3600}]
        },
    )

    presets: Literal["fast_inference", "medium_quality", "best_quality"] = Field(
        default="medium_quality",
        description="Fill in what is not given: fast_inference (>= 3x the teacher, 4 trials), "
        "medium_quality (>= 2x, 6 trials), best_quality (>= 1.5x, every recipe)",
    )
    max_latency_ms_per_row: float | None = Field(
        default=None,
        gt=0,
        description="CPU milliseconds per row the chosen student may take, measured on a "
        "worker (latency_mode says batched or batch 1)",
    )
    latency_mode: Literal["batched", "single_row"] = Field(
        default="batched",
        description="batched: rows in batches of 32 (throughput); single_row: batch 1",
    )
    min_speedup: float | None = Field(
        default=None, ge=1, description="At least this many times the teacher's CPU speed"
    )
    max_size_mb: float | None = Field(
        default=None, gt=0, description="Weights of the served model, in MB"
    )
    time_limit: float | None = Field(
        default=None,
        gt=0,
        le=30 * 24 * 3600,
        description="Seconds the search may spend (AutoGluon's name): trials not started by "
        "then are cancelled, running ones end training with their best weights",
    )
    max_trials: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Distilled trials at most (the preset's when omitted); the no-distill "
        "control comes on top",
    )
    scheduler: Literal["ASHA", "FIFO"] | None = Field(
        default=None,
        description="ASHA (default): a trial below the median of the search's other trials at "
        "25% or 50% of its steps stops there with its best weights; FIFO: every trial trains "
        "to its end",
    )
    students: list[str] | None = Field(
        default=None,
        max_length=16,
        description="Checkpoints to try beside cuts of the teacher (registered model ids, "
        "packaged names, folders); default: the packaged ones",
    )
    int8: bool | None = Field(
        default=None, description="Also consider each student served int8 (default: true)"
    )
    no_distill: bool | None = Field(
        default=None,
        description="Add one control trial, the first student trained on labels only "
        "(default: true)",
    )
    recipes: (
        list[Literal["default", "hard_labels", "low_temperature", "features", "low_lr"]] | None
    ) = Field(default=None, min_length=1, description="Recipes to try (the preset's when omitted)")


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

    kind: Literal["finetune", "distill", "auto_distill"] = Field(
        description="auto_distill: search students and recipes for the budget in `auto`"
    )
    train_dataset: str = Field(description="Id of the training dataset")
    tuning_dataset: str | None = Field(
        default=None, description="Id of the dataset that picks the best checkpoint"
    )
    teacher_model: str | None = Field(default=None, description="Teacher model id (distill)")
    unlabeled_dataset: str | None = Field(
        default=None,
        description="Distill only: rows without labels that learn from the teacher (a transfer "
        "set); they add every loss term but the hard-label one",
    )
    label: str | None = Field(
        default=None, description="Label column; defaults to the training dataset's"
    )
    text_columns: list[str] | None = Field(
        default=None, description="Text columns; default: the training dataset's"
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict,
        description="AutoMM-style dotted keys, e.g. optimization.max_epochs (README: the table)",
        # The keys the server knows; any other is a 422 naming it.
        json_schema_extra={"propertyNames": {"enum": list(KNOWN_KEYS)}},
    )
    accelerator: Literal["any", "gpu", "cpu"] = Field(
        default="any", description="gpu: run only on a GPU worker; cpu: only on a CPU worker"
    )
    auto: AutoDistillCreate | None = Field(
        default=None, description="kind auto_distill only: the budget and the search's settings"
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
    unlabeled_dataset: str | None
    teacher_model: str | None
    label: str
    text_columns: list[str]
    hyperparameters: dict[str, Any]
    accelerator: str
    progress: float = Field(description="Fraction of training steps done, 0 to 1")
    eta_seconds: float | None = Field(description="Estimated seconds left, while running")
    cancel_requested: bool
    metrics: dict[str, Any] = Field(
        description="Summary: run info, latest logged step, last and best validation"
    )
    error: JobError | None
    model: str | None = Field(description="The model this job produced, once it succeeded")
    attempt: int
    device: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parent_job: str | None = Field(
        default=None, description="The auto_distill search this job is a trial of"
    )
    phase: str | None = Field(
        default=None,
        description="auto_distill only: planning (measuring candidates), trials (waiting on "
        "its trial jobs), done",
    )


class JobPage(Page[JobOut]):
    pass


class JobEventOut(BaseModel):
    at: datetime
    kind: str = Field(
        description="queued, claimed, training_started, resumed, checkpoint_saved, "
        "retried, requeued, cancel_requested, succeeded, failed, cancelled"
    )
    message: str
    data: dict[str, Any]


class JobEventList(BaseModel):
    data: list[JobEventOut]


class JobMetricOut(BaseModel):
    at: datetime
    attempt: int
    kind: Literal["train", "validation"]
    step: int
    epoch: float
    values: dict[str, float]


class JobMetricList(BaseModel):
    data: list[JobMetricOut]


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
    truncate: bool = Field(
        default=False,
        description="Cut text cells longer than the server's limit instead of refusing them",
    )


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "mdl_0123456789abcdef0123",
                    "predictions": ["entailment"],
                    "probabilities": [{"entailment": 0.93, "not_entailment": 0.07}],
                }
            ]
        }
    )

    model: str
    predictions: list[str] | list[float]
    probabilities: list[dict[str, float]] | None = None


class PredictProbaRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_PREDICT_ROWS)
    truncate: bool = Field(
        default=False,
        description="Cut text cells longer than the server's limit instead of refusing them",
    )


class VariantCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"kind": "int8", "make_default": True}]},
    )

    kind: Literal["int8", "onnx", "onnx-int8"] = Field(
        description="int8: PyTorch dynamic int8 quantization of the linear layers; onnx: the "
        "model exported to ONNX and run by ONNX Runtime; onnx-int8: that graph quantized to int8 "
        "by ONNX Runtime. All run on CPU."
    )
    dataset: str | None = Field(
        default=None,
        description="Labelled dataset to compare variant and float on "
        "(default: the tuning dataset of the job that made the model)",
    )
    label: str | None = Field(default=None, description="Label column; default: the dataset's")
    make_default: bool = Field(default=False, description="Serve this variant by default")


class VariantOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "var_0123456789abcdef0123",
                    "model": "mdl_0123456789abcdef0123",
                    "kind": "int8",
                    "dataset": "ds_0123456789abcdef0123",
                    "comparison": {
                        "rows": 1000,
                        "float": {"accuracy": 0.84},
                        "variant": {"accuracy": 0.836},
                        "agreement": 0.98,
                        "accuracy_drop_points": 0.4,
                        "cpu_latency": {
                            "float": {"single_row_ms": 4.1, "batched_ms_per_row": 1.9},
                            "variant": {"single_row_ms": 2.2, "batched_ms_per_row": 0.8},
                        },
                        "cpu_speedup_batched": 2.4,
                    },
                    "is_default": True,
                    "created_at": "2026-11-29T10:00:00Z",
                }
            ]
        }
    )

    id: str
    model: str
    kind: str
    dataset: str | None = Field(description="The labelled rows the comparison was made on")
    comparison: dict[str, Any] = Field(
        description="Float and variant scores on the same rows, their agreement, and "
        "accuracy_drop_points (float accuracy minus variant accuracy, in points)"
    )
    is_default: bool
    created_at: datetime


class VariantList(BaseModel):
    data: list[VariantOut]


class ModelReadiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "mdl_0123456789abcdef0123",
                    "variant": "int8",
                    "ready": True,
                    "state": "ready",
                    "detail": None,
                }
            ]
        }
    )

    model: str
    variant: str
    ready: bool = Field(description="Loaded and warmed up: the next predict needs no load")
    state: Literal["ready", "loading", "failed", "not_loaded"]
    detail: str | None = Field(default=None, description="Why the last load failed")


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"dataset": "ds_0123456789abcdef0123"}]},
    )

    dataset: str
    label: str | None = Field(default=None, description="Label column; default: the dataset's")


class EvaluateResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "mdl_0123456789abcdef0123",
                    "dataset": "ds_0123456789abcdef0123",
                    "row_count": 1000,
                    "metrics": {"accuracy": 0.84, "f1": 0.84, "roc_auc": 0.91},
                }
            ]
        }
    )

    model: str
    dataset: str
    row_count: int
    metrics: dict[str, float]


class Health(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ok",
                    "version": "0.1.0",
                    "database": "postgresql",
                    "broker": "redis",
                    "auth": "on",
                }
            ]
        }
    )

    status: Literal["ok"]
    version: str
    database: str
    broker: str
    auth: Literal["on", "off"] = Field(
        description="off: no API keys, every caller sees everything (single-user default)"
    )


class Readiness(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "components": {"database": "ok", "broker": "ok", "storage": "ok"},
                }
            ]
        }
    )

    status: Literal["ready"]
    components: dict[str, Literal["ok"]] = Field(
        description="database, broker and storage, each reached just now"
    )
