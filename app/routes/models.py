from __future__ import annotations

import os
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask

from app.cursors import CursorQuery, from_domain, to_domain
from app.deps import CallerDep, IdempotencyDep, PredictorsDep, SessionDep, SettingsDep, StoreDep
from app.errors import Problem, problem_responses
from app.idempotency import fingerprint_json, fingerprint_upload
from app.schemas import (
    EvaluateRequest,
    EvaluateResponse,
    ModelOut,
    ModelPage,
    ModelReadiness,
    PredictProbaRequest,
    PredictRequest,
    PredictResponse,
    VariantCreate,
    VariantList,
    VariantOut,
)
from app.services.predict import evaluate as evaluate_on_dataset
from app.services.predict import predict as predict_rows
from app.services.predict import readiness, serving_target
from app.serving import ServingContext, serving_context
from app.uploads import parse_name_list, read_capped
from domain.datasets import get_dataset
from domain.models import (
    delete_model,
    download_archive,
    get_model,
    list_models,
    register_server_folder,
    register_upload,
)
from domain.orm import Model, ModelVariant
from domain.pagination import DEFAULT_LIMIT, MAX_LIMIT
from domain.variants import comparison_dataset, list_variants, make_variant

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_out(model: Model) -> ModelOut:
    return ModelOut.model_validate(model, from_attributes=True)


def variant_out(variant: ModelVariant, model: Model) -> VariantOut:
    return VariantOut(
        id=variant.id,
        model=variant.model_id,
        kind=variant.kind,
        dataset=variant.dataset_id,
        comparison=variant.comparison,
        is_default=model.default_variant == variant.kind,
        created_at=variant.created_at,
    )


@router.post(
    "",
    status_code=201,
    response_model=ModelOut,
    operation_id="create_model",
    responses=problem_responses(400, 409, 413, 415, 422),
)
async def create_model(
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    idempotency: IdempotencyDep,
    file: UploadFile = File(
        description="Hugging Face checkpoint folder, or a folder AutoGluon's "
        "MultiModalPredictor.save() wrote, as .zip or .tar.gz"
    ),
    text_columns: str = Form(
        description="Comma-separated input columns, e.g. question,sentence",
        # At least one name: a character that is not a separator, quote or bracket.
        pattern=r"[^\s,\[\]'\"]",
    ),
    name: str | None = Form(default=None),
    labels: str | None = Form(
        default=None,
        description="Comma-separated class names in output order "
        "(default: the checkpoint's id2label)",
    ),
) -> ModelOut | JSONResponse:
    """Upload a checkpoint (config.json, *.safetensors, tokenizer files) as .zip or .tar.gz.

    The archive is treated as hostile: links, paths leaving the archive, too many members, too
    much unpacked data, zip bombs, pickled weights (.bin, .pt, .pkl: convert to safetensors) and
    checkpoints that need their own code are refused; config, weights, tokenizer and label map
    must load before the model is registered.

    An AutoGluon AutoMM predictor folder (MultiModalPredictor.save(), the hf_text model, text
    classification or regression) is converted to a model that computes what AutoMM does: its
    model.ckpt is read as tensors only (torch.load with weights_only=True) or refused, its .pkl
    files are never unpickled (the class names and a regression target's scaler are read from
    df_preprocessor.pkl as inert data; failing that, a classifier needs `labels`, which are
    ordered as AutoMM's label encoder orders them: sorted)."""
    content = await read_capped(file, settings.max_upload_bytes)
    filename = file.filename or "checkpoint.zip"
    form = {"filename": filename, "text_columns": text_columns, "name": name, "labels": labels}

    async def create() -> ModelOut:
        model = await run_in_threadpool(
            register_upload,
            session,
            store,
            filename=filename,
            content=content,
            name=name,
            text_columns=parse_name_list(text_columns) or [],
            labels=parse_name_list(labels),
            owner=caller.owner,
        )
        return model_out(model)

    return await idempotency.run(fingerprint_upload(content, form), 201, create)


class ModelFromPath(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "path": "/data/shared/ag_distillation_sample_teacher",
                    "labels": ["entailment", "not_entailment"],
                }
            ]
        },
    )

    path: str = Field(
        min_length=1,
        max_length=4096,
        # Absolute, with no NUL byte: what the server can look up at all.
        pattern=r"^/[^\u0000]*$",
        description="A checkpoint or AutoMM predictor folder on the server, under one of "
        "DISTILLERY_ALLOWED_DATA_ROOTS",
    )
    name: str | None = Field(default=None, max_length=255)
    text_columns: list[Annotated[str, Field(min_length=1, max_length=255)]] | None = Field(
        default=None,
        description="Input columns, in order (default for an AutoMM predictor: its own)",
    )
    labels: list[Annotated[str, Field(min_length=1, max_length=255)]] | None = Field(
        default=None,
        description="Class names in output order (default: the checkpoint's id2label, or an "
        "AutoMM predictor's own classes; for AutoMM, in any order)",
    )


@router.post(
    "/from-path",
    status_code=201,
    response_model=ModelOut,
    operation_id="register_model_path",
    responses=problem_responses(403, 409, 413, 422),
)
async def register_model_path(
    request: ModelFromPath,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    idempotency: IdempotencyDep,
) -> ModelOut | JSONResponse:
    """Register a checkpoint folder the server can already read (a Hugging Face checkpoint or
    an AutoMM predictor folder, checked as archive uploads are), from under
    DISTILLERY_ALLOWED_DATA_ROOTS (403 outside them, or when none are configured). The folder is
    copied in: later changes to it do not change the model."""

    async def create() -> ModelOut:
        model = await run_in_threadpool(
            register_server_folder,
            session,
            store,
            roots=settings.allowed_data_roots,
            raw_path=request.path,
            max_bytes=settings.max_upload_bytes,
            name=request.name,
            text_columns=request.text_columns,
            labels=request.labels,
            owner=caller.owner,
        )
        return model_out(model)

    return await idempotency.run(fingerprint_json(request), 201, create)


@router.get(
    "", response_model=ModelPage, operation_id="list_models", responses=problem_responses(422)
)
def read_models(
    session: SessionDep,
    caller: CallerDep,
    limit: int = Query(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    cursor: str | None = CursorQuery,
) -> ModelPage:
    """Your models (every owner's for an admin key), newest first: uploads and job results."""
    models, next_cursor = list_models(session, caller, limit, to_domain(cursor))
    return ModelPage(data=[model_out(m) for m in models], next_cursor=from_domain(next_cursor))


@router.get(
    "/{model_id}",
    response_model=ModelOut,
    operation_id="get_model",
    responses=problem_responses(404),
)
def read_model(model_id: str, session: SessionDep, caller: CallerDep) -> ModelOut:
    """Architecture, parameter count, size, label map, metrics and lineage (teacher, datasets,
    job, hyperparameters)."""
    return model_out(get_model(session, model_id, caller=caller))


@router.get(
    "/{model_id}/download",
    response_class=FileResponse,
    operation_id="download_model",
    responses={
        200: {
            "description": "The bundle folder as .tar.gz: a Hugging Face checkpoint (config, "
            "safetensors, tokenizer) plus distillery.json; or, with format=onnx, the ONNX "
            "graphs with the tokenizer",
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **problem_responses(404),
    },
)
def download_model(
    model_id: str,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: CallerDep,
    format: Literal["bundle", "onnx"] = Query(
        default="bundle",
        description="bundle: the Hugging Face folder plus distillery.json; onnx: model.onnx "
        "(fp32) and model-int8.onnx (ONNX Runtime's int8) with the tokenizer and "
        "distillery.json, both graphs checked against torch (onnx-check.json)",
    ),
) -> FileResponse:
    """Download the model's bundle; `transformers` loads the unpacked folder as it is. With
    `format=onnx`, the model exported for ONNX Runtime (takes seconds: it is exported now)."""
    model = get_model(session, model_id, caller=caller)
    archive, filename = download_archive(
        session, store, model, format, settings.variant_eval_max_rows
    )
    return FileResponse(
        archive,
        media_type="application/gzip",
        filename=filename,
        background=BackgroundTask(os.unlink, archive),
    )


@router.delete(
    "/{model_id}",
    status_code=204,
    response_class=Response,
    operation_id="delete_model",
    responses=problem_responses(404, 409),
)
def remove_model(
    model_id: str,
    session: SessionDep,
    store: StoreDep,
    predictors: PredictorsDep,
    caller: CallerDep,
) -> Response:
    """Delete the model and its bundle; 409 while a queued or running job uses it (as teacher
    or as the student's starting checkpoint)."""
    model = delete_model(session, store, model_id, caller)
    predictors.evict(model.id)
    return Response(status_code=204)


ServingDep = Annotated[ServingContext, Depends(serving_context)]
VariantQuery = Query(
    default=None,
    description="Serving variant: float, or one made with POST .../variants (default: the "
    "model's default_variant)",
)


@router.post(
    "/{model_id}/predict",
    response_model=PredictResponse,
    operation_id="predict",
    responses=problem_responses(400, 404, 413, 422, 429, 503),
)
async def predict(
    model_id: str,
    request: PredictRequest,
    serving: ServingDep,
    caller: CallerDep,
    variant: str | None = VariantQuery,
) -> PredictResponse:
    """Predict classes (and, if asked, probabilities) or values for up to 1024 rows.

    Concurrent requests for one model share forward passes (micro-batching); when too many rows
    are already queued the answer is 429 with Retry-After."""
    return await predict_rows(serving, caller, model_id, variant, request)


@router.post(
    "/{model_id}/predict_proba",
    response_model=PredictResponse,
    operation_id="predict_proba",
    responses=problem_responses(400, 404, 413, 422, 429, 503),
)
async def predict_proba(
    model_id: str,
    request: PredictProbaRequest,
    serving: ServingDep,
    caller: CallerDep,
    variant: str | None = VariantQuery,
) -> PredictResponse:
    """Class probabilities (with the predicted class) for up to 1024 rows; classifiers only."""
    return await predict_rows(serving, caller, model_id, variant, request, classifiers_only=True)


@router.get(
    "/{model_id}/ready",
    response_model=ModelReadiness,
    operation_id="model_ready",
    responses=problem_responses(404, 422),
)
def model_ready(
    model_id: str,
    session: SessionDep,
    predictors: PredictorsDep,
    caller: CallerDep,
    variant: str | None = VariantQuery,
) -> ModelReadiness:
    """Whether the model (variant) is loaded and warmed up, so predict will not wait for a load.
    Models load on their first predict, or at startup when listed in DISTILLERY_PRELOAD_MODELS."""
    return readiness(predictors, serving_target(session, model_id, variant, caller))


@router.get(
    "/{model_id}/variants",
    response_model=VariantList,
    operation_id="list_model_variants",
    responses=problem_responses(404),
)
def read_variants(model_id: str, session: SessionDep, caller: CallerDep) -> VariantList:
    """The model's serving variants, each with its accuracy against the float model."""
    model = get_model(session, model_id, caller=caller)
    return VariantList(data=[variant_out(v, model) for v in list_variants(session, model)])


@router.post(
    "/{model_id}/variants",
    status_code=201,
    response_model=VariantOut,
    operation_id="create_model_variant",
    responses=problem_responses(404, 422),
)
def create_variant(
    model_id: str,
    request: VariantCreate,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    predictors: PredictorsDep,
    caller: CallerDep,
) -> VariantOut:
    """Make a CPU serving variant (int8: dynamic quantization of the linear layers; onnx and
    onnx-int8: the ONNX export run by ONNX Runtime, fp32 or quantized), scored against the
    float model on a labelled dataset (default: the model's tuning data, up to
    DISTILLERY_VARIANT_EVAL_MAX_ROWS rows). Making it again replaces the comparison."""
    model = get_model(session, model_id, caller=caller)
    named = None
    if request.dataset is not None:
        named = get_dataset(session, request.dataset, "dataset", caller=caller)
    dataset = comparison_dataset(session, model, named)
    label_column = request.label or dataset.label_column
    if label_column is None:
        raise Problem(
            422,
            "No label column",
            f"dataset '{dataset.id}' has no label column; name one with label",
            field="label",
        )
    frame = store.read_table(dataset.storage_key)
    variant = make_variant(
        session,
        store,
        model,
        request.kind,
        frame,
        label_column,
        dataset_id=dataset.id,
        max_rows=settings.variant_eval_max_rows,
        make_default=request.make_default,
    )
    # A new default variant changes what predict serves when no variant is named.
    predictors.lookups.discard(lambda key: key[0] == model.id)
    return variant_out(variant, model)


@router.post(
    "/{model_id}/evaluate",
    response_model=EvaluateResponse,
    operation_id="evaluate",
    responses=problem_responses(400, 404, 413, 422),
)
def evaluate(
    model_id: str,
    request: EvaluateRequest,
    session: SessionDep,
    serving: ServingDep,
    caller: CallerDep,
    variant: str | None = VariantQuery,
) -> EvaluateResponse:
    """Score the model on one of your stored datasets (accuracy, F1, ROC AUC; or RMSE, R²)."""
    return evaluate_on_dataset(serving, session, caller, model_id, variant, request)
