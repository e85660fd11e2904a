"""Make serving variants of a model (on request, or after a distill job) and list them."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from distillery.predictor import Predictor
from distillery.variants import compare_variant
from domain.errors import Invalid
from domain.orm import Dataset, Job, Model, ModelVariant
from domain.storage import ArtifactStore, variant_key

log = logging.getLogger("distillery.variants")


def comparison_dataset(session: Session, model: Model, dataset: Dataset | None) -> Dataset:
    """The rows to compare on: the one named, else the tuning data of the job behind the model."""
    if dataset is not None:
        return dataset
    job = session.get(Job, model.job_id) if model.job_id else None
    if job is None or job.tuning_dataset is None or job.tuning_dataset.deleted_at is not None:
        raise Invalid(
            "No comparison data",
            f"model '{model.id}' was not made by a job with tuning data; name a labelled "
            "dataset to compare the variant with the float model on",
            field="dataset",
        )
    return job.tuning_dataset


def make_variant(
    session: Session,
    store: ArtifactStore,
    model: Model,
    kind: str,
    frame: pd.DataFrame,
    label_column: str,
    *,
    dataset_id: str | None,
    max_rows: int,
    make_default: bool = False,
    predictor: Predictor | None = None,
) -> ModelVariant:
    """Build `kind` from the model's float weights, score both on up to `max_rows` labelled
    rows, record the comparison (replacing an earlier one) and commit. `predictor`, the model
    already loaded on CPU, saves loading it again (it is left as it was)."""
    rows = frame.head(max_rows)
    predictor = predictor or Predictor(store.local_folder(model.storage_key), device="cpu")
    comparison = compare_variant(predictor, kind, rows, label_column)
    key = variant_key(model.storage_key, kind)
    # The recipe, next to the model: int8 is rebuilt from the float weights at load time.
    with tempfile.NamedTemporaryFile(
        "w", suffix=".json", dir=store.scratch_dir(), delete=False
    ) as recipe:
        json.dump({"kind": kind, "built_from": "float weights at load time", **comparison}, recipe)
    try:
        store.put_file(f"{key}/variant.json", Path(recipe.name))
    finally:
        Path(recipe.name).unlink(missing_ok=True)
    variant = session.scalar(
        select(ModelVariant).where(ModelVariant.model_id == model.id, ModelVariant.kind == kind)
    )
    if variant is None:
        variant = ModelVariant(model_id=model.id, kind=kind, storage_key=key)
        session.add(variant)
    variant.comparison = comparison
    variant.dataset_id = dataset_id
    if make_default:
        model.default_variant = kind
    session.commit()
    log.info(
        "model %s: %s variant, %s",
        model.id,
        kind,
        {k: v for k, v in comparison.items() if k in ("rows", "agreement", "accuracy_drop_points")},
    )
    return variant


def make_variants_after_distill(
    session: Session,
    store: ArtifactStore,
    model: Model,
    tuning_frame: pd.DataFrame,
    label_column: str,
    *,
    kinds: list[str],
    max_rows: int,
    dataset_id: str | None,
    student: Predictor | None = None,
) -> list[ModelVariant]:
    """The variants a distill job makes for its student; one failing does not stop the rest."""
    made = []
    for kind in kinds:
        try:
            made.append(
                make_variant(
                    session,
                    store,
                    model,
                    kind,
                    tuning_frame,
                    label_column,
                    dataset_id=dataset_id,
                    max_rows=max_rows,
                    predictor=student,
                )
            )
        except Exception:
            session.rollback()
            log.exception("model %s: could not make the %s variant", model.id, kind)
    return made


def list_variants(session: Session, model: Model) -> list[ModelVariant]:
    return list(
        session.scalars(
            select(ModelVariant)
            .where(ModelVariant.model_id == model.id)
            .order_by(ModelVariant.created_at)
        )
    )
