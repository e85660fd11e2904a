"""Load a bundle; encode, forward and decode rows; predict, predict_proba or evaluate on a table
(used by the API, the worker and the benchmarks)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from distillery.automm import load_pooled_classifier
from distillery.backbones import load_classifier, usable_text_length
from distillery.bundle import BundleMetadata, read_metadata
from distillery.encoding import EncodedRow, encode_records, encode_rows
from distillery.inference import compute_outputs, softmax
from distillery.metrics import classification_metrics, regression_metrics
from distillery.tables import TableError, label_to_class_name


class Predictor:
    """A loaded model with its label order and text columns; thread-compatible for inference."""

    def __init__(self, folder: Path, device: str = "cpu", batch_size: int = 64) -> None:
        self.folder = folder
        self.metadata: BundleMetadata = read_metadata(folder)
        id2label = dict(enumerate(self.metadata.labels)) if self.metadata.labels else None
        if self.metadata.head:  # a converted AutoMM predictor: its own pooled head
            model, self.tokenizer = load_pooled_classifier(folder, self.metadata)
        else:
            backbone = load_classifier(
                folder,
                num_labels=max(1, len(self.metadata.labels)),
                id2label=id2label,
                problem_type=self.metadata.problem_type,
            )
            model, self.tokenizer = backbone.model, backbone.tokenizer
        self.model = model.to(device).eval()
        # None: columns packed as a pair; a number: AutoMM's per-column packing.
        self.column_segments: int | None = self.metadata.text_encoding.get("segments")
        # Tokens kept per row: the bundle's max_text_len, within the model's positions.
        self.max_text_len = usable_text_length(self.model, self.metadata.max_text_len)
        self.device = device
        self.batch_size = batch_size

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    @property
    def problem_type(self) -> str:
        return self.metadata.problem_type

    def check_columns(self, frame: pd.DataFrame) -> None:
        missing = [c for c in self.metadata.text_columns if c not in frame.columns]
        if missing:
            raise TableError(
                f"missing text column(s) {', '.join(missing)}; this model reads "
                f"{', '.join(self.metadata.text_columns)}",
                field="text_columns",
            )

    def encode(
        self, frame: pd.DataFrame, text_columns: Sequence[str] | None = None
    ) -> list[EncodedRow]:
        """Token ids of each row, unpadded (tokenizing only: no forward pass), as this model
        reads them (its length limit and packing). `text_columns` names the frame's columns in
        the model's order when they are not the model's own names (a job's data for a teacher)."""
        if text_columns is None:
            self.check_columns(frame)
        return encode_rows(
            self.tokenizer,
            frame,
            text_columns or self.metadata.text_columns,
            self.max_text_len,
            column_segments=self.column_segments,
        )

    def encode_records(self, records: Sequence[dict[str, str]]) -> list[EncodedRow]:
        """`encode` for rows given as dicts holding a string for every text column."""
        return encode_records(
            self.tokenizer,
            records,
            self.metadata.text_columns,
            self.max_text_len,
            column_segments=self.column_segments,
        )

    def forward(self, rows: Sequence[EncodedRow]) -> np.ndarray:
        """Raw outputs (logits, or one value per row for regression) of encoded rows."""
        # compute_outputs runs under inference_mode itself.
        return compute_outputs(
            self.model,
            rows,
            batch_size=self.batch_size,
            pad_token_id=self.pad_token_id,
            device=self.device,
        )

    def raw_outputs(self, frame: pd.DataFrame) -> np.ndarray:
        return self.forward(self.encode(frame))

    def decode(self, outputs: np.ndarray) -> list[str] | list[float]:
        """Raw outputs as predictions: class names in the bundle's label order, or values."""
        if self.problem_type == "regression":
            return [float(v) for v in outputs[:, 0]]
        return [self.metadata.labels[i] for i in outputs.argmax(axis=1)]

    def probabilities(self, outputs: np.ndarray) -> list[dict[str, float]]:
        """Raw outputs as each row's probability per class name."""
        labels = self.metadata.labels
        return [
            {label: float(p) for label, p in zip(labels, row, strict=True)}
            for row in self._softmax(outputs)
        ]

    def _softmax(self, outputs: np.ndarray) -> np.ndarray:
        if self.problem_type == "regression":
            raise TableError("predict_proba is for classifiers; this model does regression")
        return softmax(outputs)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self._softmax(self.raw_outputs(frame))

    def predict(self, frame: pd.DataFrame) -> list[str] | list[float]:
        return self.decode(self.raw_outputs(frame))

    def evaluate(self, frame: pd.DataFrame, label_column: str) -> dict[str, float]:
        if label_column not in frame.columns:
            raise TableError(
                f"label column '{label_column}' not found; columns are: {', '.join(frame.columns)}",
                field="label",
            )
        outputs = self.raw_outputs(frame)
        if self.problem_type == "regression":
            targets = frame[label_column].astype(float).to_numpy()
            return regression_metrics(targets, outputs[:, 0])
        true_ids = label_ids(frame[label_column], self.metadata.labels)
        return classification_metrics(true_ids, softmax(outputs))


def label_ids(labels: pd.Series, classes: list[str]) -> np.ndarray:
    """Map label values to class ids in `classes` order; unknown values are an error."""
    index = {name: i for i, name in enumerate(classes)}
    names = labels.map(label_to_class_name)
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise TableError(
            f"label value(s) {', '.join(unknown[:5])} are not classes of this model "
            f"({', '.join(classes)})",
            field="label",
        )
    return names.map(index).to_numpy(dtype=np.int64)
