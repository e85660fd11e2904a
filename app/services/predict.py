"""Predict on JSON rows through the serving cache and batcher; evaluate on stored datasets.

Each route makes one call here. The database read, the row checks and tokenization run in one
worker thread (never on the event loop) before the rows queue, so the inference thread runs
forward passes only, and the model's own predictor decodes its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.batching import BatchTimeout, QueueFull
from app.errors import Problem
from app.schemas import (
    EvaluateRequest,
    EvaluateResponse,
    ModelReadiness,
    PredictProbaRequest,
    PredictRequest,
    PredictResponse,
)
from app.serving import PredictorCache, RequestRows, ServedModel, ServingContext
from distillery.encoding import EncodedRow
from distillery.variants import FLOAT, VARIANT_KINDS
from domain.auth import Caller
from domain.config import Settings
from domain.datasets import get_dataset
from domain.models import get_model
from domain.orm import ModelVariant


@dataclass(frozen=True)
class ServingTarget:
    """What predict needs from the database, read once per request."""

    model_id: str
    variant: str
    storage_key: str
    text_columns: list[str]


def serving_target(
    session: Session,
    model_id: str,
    variant: str | None,
    caller: Caller,
) -> ServingTarget:
    """The model (404 if unseen) and the variant to serve: the one asked for, or its default.

    Closes `session` before returning (loaded objects stay readable): a predict request next
    waits on the model, and holding a pooled connection through that wait would cap concurrent
    requests at the pool size."""
    try:
        return _serving_target(session, model_id, variant, caller)
    finally:
        session.close()


def _serving_target(
    session: Session, model_id: str, variant: str | None, caller: Caller
) -> ServingTarget:
    model = get_model(session, model_id, caller=caller)
    chosen = variant or model.default_variant or FLOAT
    if chosen not in VARIANT_KINDS:
        raise Problem(
            422,
            "Unknown variant",
            f"variant '{chosen}' is not one of: {', '.join(VARIANT_KINDS)}",
            field="variant",
        )
    if chosen != FLOAT:
        made = session.scalar(
            select(ModelVariant.id).where(
                ModelVariant.model_id == model.id, ModelVariant.kind == chosen
            )
        )
        if made is None:
            raise Problem(
                404,
                "Variant not found",
                f"model '{model.id}' has no '{chosen}' variant yet; make it with "
                f'POST /v1/models/{model.id}/variants {{"kind": "{chosen}"}}',
                field="variant",
            )
    return ServingTarget(model.id, chosen, model.storage_key, list(model.text_columns))


def checked_rows(
    rows: list[dict[str, Any]], text_columns: list[str], settings: Settings, truncate: bool
) -> RequestRows:
    """The rows reduced to the model's text columns, as strings, within the server's limits."""
    if len(rows) > settings.predict_max_rows:
        raise Problem(
            422,
            "Too many rows",
            f"{len(rows)} rows in one request; the limit is {settings.predict_max_rows}: "
            "split them over several requests",
            field="rows",
        )
    limit = settings.predict_max_text_chars
    checked: RequestRows = []
    for index, row in enumerate(rows):
        missing = [c for c in text_columns if c not in row]
        if missing:
            raise Problem(
                422,
                "Missing text columns",
                f"row {index} is missing text column(s) {', '.join(missing)}; this model "
                f"reads {', '.join(text_columns)}",
                field="text_columns",
                extra={"missing": missing, "row": index},
            )
        values: dict[str, str] = {}
        for column in text_columns:
            value = row[column]
            if value is None:
                value = ""
            elif isinstance(value, bool) or not isinstance(value, str | int | float):
                raise Problem(
                    422,
                    "Invalid text",
                    f"rows[{index}].{column} must be a string, not {type(value).__name__}",
                    field=f"rows[{index}].{column}",
                )
            text = str(value)
            if len(text) > limit:
                if not truncate:
                    raise Problem(
                        422,
                        "Text too long",
                        f"rows[{index}].{column} has {len(text)} characters; the limit is "
                        f'{limit}: shorten it, or send "truncate": true to cut it',
                        field=f"rows[{index}].{column}",
                    )
                text = text[:limit]
            values[column] = text
        checked.append(values)
    return checked


async def predict_outputs(
    served: ServedModel, rows: list[EncodedRow], timeout: float
) -> np.ndarray:
    """Raw outputs for `rows`, from a forward pass shared with concurrent requests."""
    try:
        return await served.batcher.submit(rows, timeout)
    except QueueFull as full:
        raise Problem(
            429,
            "Too many requests",
            f"{full.queued_rows} rows are already waiting for model '{served.model_id}'; "
            f"retry in {full.retry_after_seconds} s",
            headers={"Retry-After": str(full.retry_after_seconds)},
        ) from None
    except BatchTimeout as timed_out:
        raise Problem(
            503,
            "Prediction timed out",
            f"model '{served.model_id}' did not answer in time ({timed_out}); the server is "
            "overloaded: retry later",
            headers={"Retry-After": "1"},
        ) from None


def cached_target(
    serving: ServingContext, caller: Caller, model_id: str, variant: str | None
) -> ServingTarget:
    """`serving_target`, reused for the same key within DISTILLERY_PREDICT_LOOKUP_TTL_SECONDS:
    for a model that is already loaded, the database read was most of a request's work
    outside the forward pass. Only successes are kept, so a 404 is never remembered."""
    key = (model_id, variant, caller.key_id if not caller.is_admin else "admin")
    target: ServingTarget | None = serving.cache.lookups.get(key)
    if target is None:
        with serving.session_factory() as session:
            target = _serving_target(session, model_id, variant, caller)
        serving.cache.lookups.put(key, target)
    return target


def _prepare(
    serving: ServingContext,
    caller: Caller,
    model_id: str,
    variant: str | None,
    request: PredictRequest | PredictProbaRequest,
    classifiers_only: bool,
) -> tuple[ServedModel, list[EncodedRow]]:
    """Everything before the forward pass, in one thread: the model's row (404 if unseen), the
    rows checked against its text columns, the loaded model (loading it on a miss) and the
    rows' token ids. One thread hop per request instead of one per step: on a busy CPU each
    hop costs about as much as the step itself."""
    target = cached_target(serving, caller, model_id, variant)
    rows = checked_rows(request.rows, target.text_columns, serving.settings, request.truncate)
    locate = partial(serving.store.local_folder, target.storage_key)
    served = serving.cache.get(target.model_id, locate, target.variant)
    if classifiers_only and served.predictor.problem_type == "regression":
        raise Problem(
            422,
            "Not a classifier",
            f"model '{target.model_id}' does regression: use /predict",
            field="model_id",
        )
    return served, served.encode(rows)


async def predict(
    serving: ServingContext,
    caller: Caller,
    model_id: str,
    variant: str | None,
    request: PredictRequest | PredictProbaRequest,
    *,
    classifiers_only: bool = False,
) -> PredictResponse:
    """Predictions (with probabilities when asked, or when `classifiers_only`) for the rows."""
    served, encoded = await run_in_threadpool(
        _prepare, serving, caller, model_id, variant, request, classifiers_only
    )
    outputs = await predict_outputs(served, encoded, serving.settings.predict_timeout_seconds)
    predictor = served.predictor
    with_probabilities = classifiers_only or getattr(request, "return_probabilities", False)
    return PredictResponse(
        model=served.model_id,
        predictions=predictor.decode(outputs),
        probabilities=(
            predictor.probabilities(outputs)
            if with_probabilities and predictor.problem_type != "regression"
            else None
        ),
    )


def readiness(cache: PredictorCache, target: ServingTarget) -> ModelReadiness:
    state, detail = cache.state(target.model_id, target.variant)
    return ModelReadiness(
        model=target.model_id,
        variant=target.variant,
        ready=state == "ready",
        state=state,
        detail=detail,
    )


def evaluate(
    serving: ServingContext,
    session: Session,
    caller: Caller,
    model_id: str,
    variant: str | None,
    request: EvaluateRequest,
) -> EvaluateResponse:
    """Score the model on a stored dataset (blocking: the route runs it in a thread)."""
    target = _serving_target(session, model_id, variant, caller)
    dataset = get_dataset(session, request.dataset, "dataset", caller=caller)
    label_column = request.label or dataset.label_column
    if label_column is None:
        raise Problem(
            422,
            "No label column",
            f"dataset '{dataset.id}' has no label column; name one with label",
            field="label",
        )
    served = serving.cache.get(
        target.model_id, partial(serving.store.local_folder, target.storage_key), target.variant
    )
    frame = serving.store.read_table(dataset.storage_key)
    metrics = served.predictor.evaluate(frame, label_column)
    return EvaluateResponse(
        model=target.model_id, dataset=dataset.id, row_count=len(frame), metrics=metrics
    )
