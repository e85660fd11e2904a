from __future__ import annotations

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool

from app.deps import PredictorsDep, SessionDep, SettingsDep, StoreDep
from app.orm import Model
from app.schemas import (
    EvaluateRequest,
    EvaluateResponse,
    ModelOut,
    PredictRequest,
    PredictResponse,
)
from app.services.datasets import get_dataset
from app.services.models import get_model, register_upload
from app.services.predict import evaluate_model, predict_rows
from app.uploads import parse_name_list, read_capped

router = APIRouter(prefix="/v1/models", tags=["models"])


def model_out(model: Model) -> ModelOut:
    return ModelOut.model_validate(model, from_attributes=True)


@router.post("", status_code=201, response_model=ModelOut, operation_id="create_model")
async def create_model(
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    file: UploadFile = File(description="Hugging Face checkpoint folder as .zip or .tar.gz"),
    text_columns: str = Form(description="Comma-separated input columns, e.g. question,sentence"),
    name: str | None = Form(default=None),
    labels: str | None = Form(
        default=None,
        description="Comma-separated class names in output order "
        "(default: the checkpoint's id2label)",
    ),
) -> ModelOut:
    content = await read_capped(file, settings.max_upload_bytes)
    model = await run_in_threadpool(
        register_upload,
        session,
        store,
        filename=file.filename or "checkpoint.zip",
        content=content,
        name=name,
        text_columns=parse_name_list(text_columns) or [],
        labels=parse_name_list(labels),
    )
    return model_out(model)


@router.get("/{model_id}", response_model=ModelOut, operation_id="get_model")
def read_model(model_id: str, session: SessionDep) -> ModelOut:
    return model_out(get_model(session, model_id))


@router.post("/{model_id}/predict", response_model=PredictResponse, operation_id="predict")
async def predict(
    model_id: str,
    request: PredictRequest,
    session: SessionDep,
    store: StoreDep,
    predictors: PredictorsDep,
) -> PredictResponse:
    model = get_model(session, model_id)
    predictor = await run_in_threadpool(predictors.get, model.id, store.path(model.storage_key))
    # Inference runs in a worker thread so the event loop keeps serving other requests.
    return await run_in_threadpool(
        predict_rows, predictor, model.id, request.rows, request.return_probabilities
    )


@router.post("/{model_id}/evaluate", response_model=EvaluateResponse, operation_id="evaluate")
async def evaluate(
    model_id: str,
    request: EvaluateRequest,
    session: SessionDep,
    store: StoreDep,
    predictors: PredictorsDep,
) -> EvaluateResponse:
    model = get_model(session, model_id)
    dataset = get_dataset(session, request.dataset, "dataset")
    predictor = await run_in_threadpool(predictors.get, model.id, store.path(model.storage_key))
    return await run_in_threadpool(evaluate_model, predictor, model, dataset, store, request.label)
