"""What distillation costs on top of fine-tuning the same student.

One run, same student (paraphrase-MiniLM-L3-v2), same 800 QNLI training rows, 200 tuning rows,
epochs and hyperparameters; teacher all-MiniLM-L6-v2 (its head untrained: cost does not depend
on what the teacher knows). Wall time of:
  - fine-tune (no teacher),
  - distill, first run: teacher outputs computed and cached,
  - distill, second run: teacher outputs read from the cache,
  - distill with the teacher online (run on every batch, as AutoMM does; also what
    intermediate-layer losses need).
Writes bench/results/cost.json.

    python bench/cost.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import (
    LABELS,
    MINILM_L3,
    MINILM_L6,
    TEXT_COLUMNS,
    Stopwatch,
    backbone_path,
    qnli_splits,
    write_results,
)
from distillery.backbones import load_classifier
from distillery.bundle import BundleMetadata, save_bundle
from distillery.hyperparams import parse_hyperparameters
from distillery.predictor import Predictor
from distillery.teacher_cache import TeacherCache
from distillery.training import TrainingData, train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    splits = qnli_splits()
    data = TrainingData(
        splits["student_train"], splits["tuning"], TEXT_COLUMNS, "label", "binary", LABELS
    )
    hyperparameters = {
        "optimization.max_epochs": args.epochs,
        "optimization.learning_rate": 2e-4,
        "env.batch_size": 32,
    }
    with tempfile.TemporaryDirectory() as scratch:
        teacher_backbone = load_classifier(
            backbone_path(MINILM_L6), num_labels=2, id2label=dict(enumerate(LABELS))
        )
        teacher_folder = save_bundle(
            teacher_backbone.model,
            teacher_backbone.tokenizer,
            BundleMetadata("binary", LABELS, TEXT_COLUMNS),
            Path(scratch) / "teacher",
        )
        cache = TeacherCache(Path(scratch) / "cache")
        student = Path(MINILM_L3)
        runs: dict[str, dict] = {}

        def run(name: str, **kwargs: object) -> None:
            extra = kwargs.pop("hyperparameters", {})
            config = parse_hyperparameters({**hyperparameters, **extra})  # type: ignore[dict-item]
            with Stopwatch() as watch:
                result = train(config, data, student, **kwargs)  # type: ignore[arg-type]
            runs[name] = {"seconds": round(watch.seconds, 2), "info": result.info}
            print(
                f"{name:28s} {watch.seconds:7.1f} s  {result.info.get('teacher_outputs', '')}",
                flush=True,
            )

        run("finetune")
        teacher = Predictor(teacher_folder)
        common = {"teacher": teacher, "teacher_fingerprint": "teacher", "teacher_cache": cache}
        run("distill_first_run", **common)
        run("distill_cache_hit", **common)
        run(
            "distill_online_teacher", **common, hyperparameters={"distiller.teacher_mode": "online"}
        )

    base = runs["finetune"]["seconds"]
    summary = {
        "ratio_first_run": round(runs["distill_first_run"]["seconds"] / base, 3),
        "ratio_cache_hit": round(runs["distill_cache_hit"]["seconds"] / base, 3),
        "ratio_online_teacher": round(runs["distill_online_teacher"]["seconds"] / base, 3),
    }
    print("distill / fine-tune wall time:", summary)
    path = write_results(
        "cost",
        {
            "setup": {
                "student": "paraphrase-MiniLM-L3-v2",
                "teacher": "all-MiniLM-L6-v2",
                "train_rows": len(splits["student_train"]),
                "tuning_rows": len(splits["tuning"]),
                "epochs": args.epochs,
                "threads": torch.get_num_threads(),
            },
            "runs": runs,
            "targets": {"ratio_first_run": 1.3, "ratio_cache_hit": 1.05},
            "summary": summary,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
