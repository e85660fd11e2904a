"""Does distillation pay? Teacher, no-distill, distilled and distilled + transfer set on QNLI.

Teacher: all-MiniLM-L6-v2 fine-tuned on 2,463 labelled rows the students never see (trained once,
seed 0). Students (paraphrase-MiniLM-L3-v2; MiniLM-L6 cut to its first 3 layers; MiniLM-L6 cut
to layers 0, 2, 4, which when distilled starts from the fine-tuned teacher's own layers, as
DistilBERT does) train on 800 rows, pick their best checkpoint on 200 tuning rows, and are scored
once on 1,000 separate test rows. Every student configuration gets the same learning-rate grid,
and the grid point is chosen on the tuning rows, never on test rows; the transfer-set run reuses
the learning rate that the distilled run chose (no extra tuning of its own). Per seed, the
distillation ratio is (student - no-distill) / (teacher - no-distill) on test accuracy.
Writes bench/results/quality.json.

    python bench/quality.py [--seeds 0 1 2] [--students MiniLM-L6-layers-024 ...]
        [--keep-other-students]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.common import (
    LABELS,
    MINILM_L6,
    RESULTS,
    STUDENTS,
    STUDENTS_FROM_TEACHER,
    TEXT_COLUMNS,
    Stopwatch,
    backbone_path,
    qnli_splits,
    save_result,
    score,
    unlabeled_rows,
    write_results,
)
from distillery.hyperparams import parse_hyperparameters
from distillery.predictor import Predictor
from distillery.teacher_cache import TeacherCache
from distillery.training import TrainingData, train

TEACHER_HYPERPARAMETERS = {
    "optimization.max_epochs": 2,
    "optimization.learning_rate": 1e-4,
    "env.batch_size": 32,
}
LEARNING_RATES = (1e-4, 3e-4)
STUDENT_EPOCHS = 4
TRANSFER_EPOCHS = 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--unlabeled-rows", type=int, default=2000)
    parser.add_argument(
        "--keep-other-students",
        action="store_true",
        help="keep results of students not run now from the existing quality.json",
    )
    args = parser.parse_args()
    splits = qnli_splits()
    unlabeled = unlabeled_rows(args.unlabeled_rows)
    scratch = Path(tempfile.mkdtemp(prefix="distillery-quality-"))
    cache = TeacherCache(scratch / "teacher-cache")

    teacher_data = TrainingData(
        splits["teacher_train"], None, TEXT_COLUMNS, "label", "binary", LABELS
    )
    with Stopwatch() as watch:
        teacher_result = train(
            parse_hyperparameters(TEACHER_HYPERPARAMETERS), teacher_data, backbone_path(MINILM_L6)
        )
    teacher_folder = save_result(teacher_result, scratch / "teacher")
    teacher = Predictor(teacher_folder)
    teacher_test = score(teacher, splits["test"])
    print(
        f"teacher: test accuracy {teacher_test['accuracy']:.4f} ({watch.seconds:.0f} s)", flush=True
    )

    def fit(
        student: str, seed: int, learning_rate: float, *, distill: bool, transfer: bool = False
    ) -> dict[str, Any]:
        checkpoint, layers = STUDENTS[student]
        hyperparameters: dict[str, Any] = {
            "model.hf_text.checkpoint_name": checkpoint,
            "optimization.learning_rate": learning_rate,
            "optimization.max_epochs": TRANSFER_EPOCHS if transfer else STUDENT_EPOCHS,
            "env.batch_size": 32,
            "env.seed": seed,
        }
        if layers is not None:
            hyperparameters["model.hf_text.layers"] = layers
        data = TrainingData(
            splits["student_train"],
            splits["tuning"],
            TEXT_COLUMNS,
            "label",
            "binary",
            LABELS,
            unlabeled=unlabeled if transfer else None,
        )
        config = parse_hyperparameters(hyperparameters)
        # A student cut from the teacher starts from the teacher's fine-tuned layers only when
        # it is distilled: without a teacher it starts from the same pretrained checkpoint.
        backbone = teacher_folder if distill and student in STUDENTS_FROM_TEACHER else None
        with Stopwatch() as watch:
            result = train(
                config,
                data,
                backbone or backbone_path(checkpoint),
                teacher=teacher if distill else None,
                teacher_cache=cache,
                teacher_fingerprint="bench-teacher",
            )
        return {
            "learning_rate": learning_rate,
            "tuning": result.tuning_metrics,
            "seconds": round(watch.seconds, 1),
            "result": result,
        }

    def best_on_tuning(runs: list[dict[str, Any]]) -> dict[str, Any]:
        return max(runs, key=lambda run: run["tuning"]["accuracy"])

    def publish() -> None:
        """Write what is measured so far (a long run leaves results even if cut short)."""
        summary = summarize(report)
        print("summary:", summary)
        path = write_results(
            "quality",
            {
                "setup": {
                    "teacher": "all-MiniLM-L6-v2",
                    "teacher_train_rows": len(splits["teacher_train"]),
                    "teacher_hyperparameters": TEACHER_HYPERPARAMETERS,
                    "student_train_rows": 800,
                    "tuning_rows": 200,
                    "test_rows": 1000,
                    "unlabeled_rows": len(unlabeled),
                    "learning_rate_grid": LEARNING_RATES,
                    "student_epochs": STUDENT_EPOCHS,
                    "transfer_epochs": TRANSFER_EPOCHS,
                    "distiller": "service defaults: KL x T^2, T=5, hard 0.1, soft 1.0",
                    "distilled_from_teacher_layers": sorted(STUDENTS_FROM_TEACHER),
                    "threads": torch.get_num_threads(),
                },
                "teacher": {"test": teacher_test, "tuning": teacher_result.tuning_metrics},
                "students": report,
                "targets": {"distill_ratio_mean": 0.5, "transfer_ratio_mean": 0.8},
                "summary": summary,
            },
        )
        print(f"wrote {path}")

    report: dict[str, Any] = {}
    if args.keep_other_students and (RESULTS / "quality.json").is_file():
        earlier = json.loads((RESULTS / "quality.json").read_text())["students"]
        report.update({name: v for name, v in earlier.items() if name not in args.students})
    for student in args.students:
        per_seed = []
        for seed in args.seeds:
            chosen = {
                "no_distill": best_on_tuning(
                    [fit(student, seed, lr, distill=False) for lr in LEARNING_RATES]
                ),
                "distilled": best_on_tuning(
                    [fit(student, seed, lr, distill=True) for lr in LEARNING_RATES]
                ),
            }
            chosen["distilled_transfer"] = fit(
                student, seed, chosen["distilled"]["learning_rate"], distill=True, transfer=True
            )
            row: dict[str, Any] = {"seed": seed}
            for name, run in chosen.items():
                folder = save_result(run.pop("result"), scratch / f"{student}-{seed}-{name}")
                run["test"] = score(Predictor(folder), splits["test"])
                row[name] = run
            baseline = row["no_distill"]["test"]["accuracy"]
            for name in ("distilled", "distilled_transfer"):
                row[name]["ratio"] = (row[name]["test"]["accuracy"] - baseline) / (
                    teacher_test["accuracy"] - baseline
                )
            per_seed.append(row)
            print(
                f"{student} seed {seed}: "
                + ", ".join(
                    f"{name} {row[name]['test']['accuracy']:.4f} (lr {row[name]['learning_rate']})"
                    for name in chosen
                )
                + f"; ratios {row['distilled']['ratio']:.2f} / "
                f"{row['distilled_transfer']['ratio']:.2f}",
                flush=True,
            )
            report[student] = {
                "seeds": per_seed,
                **{
                    f"{name}_accuracy": spread([r[name]["test"]["accuracy"] for r in per_seed])
                    for name in ("no_distill", "distilled", "distilled_transfer")
                },
                "distill_ratio": spread([r["distilled"]["ratio"] for r in per_seed]),
                "transfer_ratio": spread([r["distilled_transfer"]["ratio"] for r in per_seed]),
                "distill_beats_nodistill_every_seed": all(
                    r["distilled"]["test"]["accuracy"] > r["no_distill"]["test"]["accuracy"]
                    for r in per_seed
                ),
            }
            publish()


def summarize(report: dict[str, Any]) -> dict[str, Any]:
    """Means over every student run, and each student's own, so no recipe hides another."""
    students = list(report.values())
    return {
        "by_student": {
            name: {
                "distill_ratio_mean": s["distill_ratio"]["mean"],
                "transfer_ratio_mean": s["transfer_ratio"]["mean"],
                "distill_beats_nodistill_every_seed": s["distill_beats_nodistill_every_seed"],
            }
            for name, s in report.items()
        },
        "distill_ratio_mean": statistics.mean(s["distill_ratio"]["mean"] for s in students),
        "transfer_ratio_mean": statistics.mean(s["transfer_ratio"]["mean"] for s in students),
        "distill_beats_nodistill_every_seed": all(
            s["distill_beats_nodistill_every_seed"] for s in students
        ),
    }


def spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.mean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


if __name__ == "__main__":
    main()
