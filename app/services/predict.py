"""Predict on JSON rows and evaluate on stored datasets with a loaded model."""

from __future__ import annotations

from typing import Any

import pandas as pd

from app.errors import Problem
from app.orm import Dataset, Model
from app.schemas import EvaluateResponse, PredictResponse
from app.storage import LocalArtifactStore
from distillery.predictor import Predictor


def predict_rows(
    predictor: Predictor, model_id: str, rows: list[dict[str, Any]], with_probabilities: bool
) -> PredictResponse:
    frame = pd.DataFrame.from_records(rows)
    if with_probabilities and predictor.problem_type != "regression":
        probabilities = predictor.predict_proba(frame)
        labels = predictor.metadata.labels
        return PredictResponse(
            model=model_id,
            predictions=[labels[i] for i in probabilities.argmax(axis=1)],
            probabilities=[
                {label: float(p) for label, p in zip(labels, row, strict=True)}
                for row in probabilities
            ],
        )
    return PredictResponse(model=model_id, predictions=predictor.predict(frame))


def evaluate_model(
    predictor: Predictor,
    model: Model,
    dataset: Dataset,
    store: LocalArtifactStore,
    label: str | None,
) -> EvaluateResponse:
    label_column = label or dataset.label_column
    if label_column is None:
        raise Problem(
            422,
            "No label column",
            f"dataset '{dataset.id}' has no label column; name one with label",
            field="label",
        )
    frame = store.read_table(dataset.storage_key)
    metrics = predictor.evaluate(frame, label_column)
    return EvaluateResponse(
        model=model.id, dataset=dataset.id, row_count=len(frame), metrics=metrics
    )
