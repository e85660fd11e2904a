"""Which cut and which loss terms move a 2-layer student? A probe beside bench/quality.py.

bench/quality.py's first 2-layer student (all-MiniLM-L6-v2's layers 0 and 5, 2.8x its teacher)
keeps about 0.72 of its teacher with a transfer set. This probe asks what moves that figure on
the same setup (the same teacher, its 800 labelled rows, 200 tuning rows, the 6,463-row
transfer set, the `distilled_transfer` arm's epochs and learning rate): other 2-layer cuts; the
terms built for a student that shares the teacher's tokenizer and width but never benchmarked
until now, hidden-state (intermediate) loss token by token over a layer map and output-feature
loss on the pooled sentence vector; and for the winning cut, layers 1 and 4, the same terms, a
lower temperature and a longer schedule (twice the epochs over the transfer set, at 1e-4 and
3e-4). And for bench/quality.py's 1-layer pair, which single layer of the teacher to keep
(`cut-1` ... `cut-4`). Last, labels only on the narrowed 1+4 cut (`labels-narrow*`): the
hidden-state term, word-noise copies, and as many made rows as the transfer set holds.

One seed and one learning rate per variant (1e-4 unless it names another: bench/quality.py's
grid chose 1e-4 for the 0+5 pair's arm on every seed, 3e-4 for the 1+4 pair's on two seeds of
three), so it is a probe, not a result: a variant that wins here earns a place in
bench/quality.py's grid, where it gets the full treatment (grid, 3 seeds, McNemar). Variants
are ranked on the tuning rows of seed 0; the test accuracy is printed beside it, not used to
choose. `--seed N` reruns variants on another seed (kept apart, under `other_seeds`) to see
whether a winner holds. Resumable: finished variants are kept in bench/results/terms.json.

    python bench/terms.py [--variants NAME ...] [--seed 0] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from bench.common import (
    RESULTS,
    TEXT_COLUMNS,
    Stopwatch,
    qnli_splits,
    save_result,
    unlabeled_rows,
    write_results,
)
from bench.quality import (
    DISTILLED_EPOCHS,
    DISTILLER,
    PAIRS,
    SETUP,
    TRANSFER_EPOCHS,
    UNLABELED_ROWS,
    accuracy,
    ensure_teacher,
    fingerprint_of,
    student_data,
    teacher_home,
)
from distillery.hyperparams import parse_hyperparameters
from distillery.predictor import Predictor
from distillery.teacher_cache import TeacherCache
from distillery.training import train

LEARNING_RATE = 1e-4
PAIR = "L6-to-2-layers"
# bench/quality.py's labels-only `distilled` arm when probed: its epochs then (6), and the rate
# its grid chose on every seed
LABELS_ONLY_EPOCHS = 6
LABELS_ONLY_ARM = {
    "optimization.max_epochs": LABELS_ONLY_EPOCHS,
    "optimization.learning_rate": 3e-4,
}
# The same arm on the narrowed student (`L6-to-layers-1-4-ffn-768`) as it was before this probe
# chose its present recipe (bench/quality.py's LABELS_ONLY_AUGMENTED).
NARROW_LABELS_ONLY_ARM = {
    "model.hf_text.intermediate_size": 768,
    "optimization.max_epochs": DISTILLED_EPOCHS,
    "optimization.learning_rate": 3e-4,
}
NARROW_LABELS = "labels-narrow"
# That arm on seed 0 at 3e-4 (bench/results/quality.json), the labels-only variants' yardstick.
LABELS_ONLY_BASELINE = {"seed": 0, "tuning_accuracy": 0.74, "test_accuracy": 0.699}


def hidden_state_terms(layer_map: list[int]) -> dict[str, Any]:
    """Hidden-state loss token by token, each student layer against the teacher's hidden state
    in `layer_map` (1 = the first layer's output)."""
    return {
        "distiller.intermediate_loss_weight": 1.0,
        "distiller.intermediate_layer_map": layer_map,
        "distiller.intermediate_pooling": "tokens",
    }


# name -> (teacher layers kept, keys over DISTILLER and the arm's epochs)
VARIANTS: dict[str, tuple[list[int], dict[str, Any]]] = {
    "cut-0-5": ([0, 5], {}),
    "cut-0-5+hidden": ([0, 5], hidden_state_terms([1, 6])),
    "cut-0-5+feature": ([0, 5], {"distiller.output_feature_loss_weight": 1.0}),
    "cut-0-3": ([0, 3], {}),
    "cut-1-4": ([1, 4], {}),
    # The schedule, on the winning cut: twice the passes over the transfer set (the best
    # checkpoint on the tuning rows is kept, so more epochs cannot make it worse on them).
    "cut-1-4x2epochs": ([1, 4], {"optimization.max_epochs": 2 * TRANSFER_EPOCHS}),
    # ... at the rate bench/quality.py's tuning rows chose for this arm on two seeds of three.
    "cut-1-4x2epochs-lr3e-4": (
        [1, 4],
        {"optimization.max_epochs": 2 * TRANSFER_EPOCHS, "optimization.learning_rate": 3e-4},
    ),
    # The terms again, on the winning cut: its layers are the teacher's layers 1 and 4, whose
    # outputs are the teacher's hidden states 2 and 5; and a softer-label schedule.
    "cut-1-4+hidden": ([1, 4], hidden_state_terms([2, 5])),
    "cut-1-4+T2": ([1, 4], {"distiller.temperature": 2.0}),
    # Labels only (no transfer set: the 800 rows and what is made from them), where
    # bench/quality.py's `distilled` arm keeps 0.889 of the teacher against a 0.90 target. Its
    # seed-0 run at the rate its grid chose (3e-4, 6 epochs, 2 pairs per row) is the baseline:
    # tuning 0.74, test 0.699. The two levers left untried: more recombined pairs per row (more
    # teacher-labelled rows) and a longer schedule over the same rows.
    "labels-1-4-pairs-6": (
        [1, 4],
        {**LABELS_ONLY_ARM, "distiller.augmentation_pair_copies": 6},
    ),
    "labels-1-4x2epochs": (
        [1, 4],
        {**LABELS_ONLY_ARM, "optimization.max_epochs": 2 * LABELS_ONLY_EPOCHS},
    ),
    # Labels only again, on bench/quality.py's >= 3x student (layers 1 and 4, feed-forward
    # halved), where its `distilled` arm kept 0.886 of the teacher over 3 seeds against the 0.90
    # target. That arm's recipe then (12 epochs, 3e-4, 2 pairs per row) is the first variant;
    # then the teacher's hidden states (layers 1 and 4 are its hidden states 2 and 5), which the
    # halved blocks no longer reproduce and which carry far more than two logits per row; and
    # word-noise copies, measured before only on the 0+5 cut, where the teacher's outputs barely
    # helped at all.
    **{
        f"{NARROW_LABELS}{suffix}": (
            [1, 4],
            {**NARROW_LABELS_ONLY_ARM, **keys},
        )
        for suffix, keys in {
            "": {},
            "+hidden": hidden_state_terms([2, 5]),
            "+noisy-2": {"distiller.augmentation_copies": 2},
            # As many teacher-labelled rows as the transfer arm sees (800 x 11, against 8,863),
            # all made from the 800, at that arm's schedule.
            "+pairs-6+noisy-4": {
                "distiller.augmentation_pair_copies": 6,
                "distiller.augmentation_copies": 4,
                "optimization.max_epochs": TRANSFER_EPOCHS,
            },
        }.items()
    },
    # One layer of six: by layer count well past 3x its teacher, where two layers measure
    # 2.5-3.1x (not timed itself: it failed on accuracy first).
    # Which layer, ranked on tuning rows with the transfer set at the rate the 1+4 cut's grid
    # preferred; layer 0 is left out, since every cut that kept it fell to about 0.57.
    **{
        f"cut-{layer}": ([layer], {"optimization.learning_rate": 3e-4})
        for layer in (1, 2, 3, 4)
    },
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache/distillery-bench")
    args = parser.parse_args()
    pair = PAIRS[PAIR]
    splits = qnli_splits()
    # The teacher (and its cached outputs) is bench/quality.py's own, so the two agree.
    pair_work = args.work_dir / f"{PAIR}-{fingerprint_of(SETUP, pair)}"
    teacher_folder = ensure_teacher(pair, splits, teacher_home(args.work_dir, pair))
    teacher = Predictor(teacher_folder)
    teacher_test = accuracy(teacher, splits["test"])[0]
    cache = TeacherCache(args.work_dir / "teacher-cache")
    transfer_rows = pd.concat(
        [splits["teacher_train"][TEXT_COLUMNS], unlabeled_rows(UNLABELED_ROWS)[TEXT_COLUMNS]],
        ignore_index=True,
    )
    path = RESULTS / "terms.json"
    earlier = json.loads(path.read_text()) if path.is_file() else {}
    # Seed 0 ranks every variant; another seed reruns a variant to see how far it holds.
    probes: dict[str, Any] = earlier.get("variants", {})
    reruns: dict[str, dict[str, Any]] = earlier.get("other_seeds", {})
    for name in args.variants:
        rows = probes if args.seed == 0 else reruns.setdefault(name, {})
        key = name if args.seed == 0 else str(args.seed)
        if key in rows:
            print(f"{name}, seed {args.seed}: already measured, skipped", flush=True)
            continue
        layers, keys = VARIANTS[name]
        hyperparameters = {
            "model.hf_text.checkpoint_name": pair.student_checkpoint,
            "model.hf_text.layers": layers,
            "optimization.learning_rate": LEARNING_RATE,
            "optimization.max_epochs": TRANSFER_EPOCHS,
            "env.batch_size": 32,
            "env.seed": args.seed,
            **DISTILLER,
            **keys,  # last: a variant may change any of the above
        }
        labels_only = name.startswith("labels-")
        with Stopwatch() as watch:
            result = train(
                parse_hyperparameters(hyperparameters),
                student_data(splits, None if labels_only else transfer_rows),
                teacher_folder,
                teacher=teacher,
                teacher_cache=cache,
                teacher_fingerprint=f"bench-{teacher_folder.name}",
            )
        student = Predictor(save_result(result, pair_work / f"terms-{name}"))
        test_accuracy = accuracy(student, splits["test"])[0]
        rows[key] = {
            "layers": layers,
            "keys": keys,
            "transfer_set": not labels_only,
            "seed": args.seed,
            "tuning_accuracy": result.tuning_metrics["accuracy"],
            "test_accuracy": test_accuracy,
            "teacher_fraction": test_accuracy / teacher_test,
            "seconds": round(watch.seconds, 1),
        }
        print(f"{name}, seed {args.seed}: {json.dumps(rows[key])}", flush=True)
        publish(probes, reruns, teacher_test)
    publish(probes, reruns, teacher_test)


def publish(rows: dict[str, Any], reruns: dict[str, dict[str, Any]], teacher_test: float) -> None:
    transfer = {
        name: row
        for name, row in rows.items()
        if row.get("transfer_set", True) and len(row["layers"]) == 2
    }
    best = max(transfer, key=lambda name: transfer[name]["tuning_accuracy"])
    baseline = rows.get("cut-0-5")
    seeds = {"0": rows[best], **reruns.get(best, {})}
    summary = {
        "teacher_test_accuracy": teacher_test,
        "best_on_tuning": best,
        "best_test_accuracy": rows[best]["test_accuracy"],
        "best_teacher_fraction": rows[best]["teacher_fraction"],
        "best_over_cut_0_5_points": (
            100 * (rows[best]["test_accuracy"] - baseline["test_accuracy"]) if baseline else None
        ),
        # The winner on the seeds it was run on: one learning rate, no grid, so a probe.
        "best_seeds": sorted(int(seed) for seed in seeds),
        "best_test_accuracy_by_seed": [seeds[s]["test_accuracy"] for s in sorted(seeds)],
        "best_teacher_fraction_mean": (
            sum(row["teacher_fraction"] for row in seeds.values()) / len(seeds)
        ),
        "labels_only": labels_only_summary(rows, reruns),
        "one_layer": one_layer_summary(rows),
    }
    print("summary:", json.dumps(summary), flush=True)
    write_results(
        "terms",
        {
            "setup": {"pair": PAIR, "learning_rate": LEARNING_RATE, "epochs": TRANSFER_EPOCHS},
            "variants": rows,
            "other_seeds": reruns,
            "summary": summary,
        },
    )


def labels_only_summary(
    rows: dict[str, Any], reruns: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The labels-only variants against their yardsticks: the full-width cut's against the
    quality bench's own arm (seed 0, at 3e-4), the narrowed cut's (under `narrow`) against
    that arm's recipe run here (`labels-narrow`)."""
    probed = {name: row for name, row in rows.items() if not row.get("transfer_set", True)}
    full_width = {n: row for n, row in probed.items() if not n.startswith(NARROW_LABELS)}
    narrowed = {n: row for n, row in probed.items() if n.startswith(NARROW_LABELS)}
    summary = variants_against(full_width, LABELS_ONLY_BASELINE, reruns)
    if NARROW_LABELS in narrowed:
        baseline = narrowed.pop(NARROW_LABELS)
        summary = {**(summary or {}), "narrow": variants_against(narrowed, baseline, reruns)}
    return summary


def variants_against(
    probed: dict[str, Any], baseline: dict[str, Any], reruns: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    if not probed:
        return None
    best = max(probed, key=lambda name: probed[name]["tuning_accuracy"])
    seeds = {"0": probed[best], **reruns.get(best, {})}
    return {
        "baseline": {key: baseline[key] for key in ("seed", "tuning_accuracy", "test_accuracy")},
        "tuning_accuracy": {name: row["tuning_accuracy"] for name, row in probed.items()},
        "best_on_tuning": best,
        "beats_baseline_on_tuning": (
            probed[best]["tuning_accuracy"] > baseline["tuning_accuracy"]
        ),
        "best_test_accuracy_by_seed": [seeds[s]["test_accuracy"] for s in sorted(seeds)],
        "best_teacher_fraction_mean": (
            sum(row["teacher_fraction"] for row in seeds.values()) / len(seeds)
        ),
    }


def one_layer_summary(rows: dict[str, Any]) -> dict[str, Any] | None:
    """Which single layer bench/quality.py's 1-layer pair keeps: the best on the tuning rows."""
    probed = {name: row for name, row in rows.items() if len(row["layers"]) == 1}
    if not probed:
        return None
    best = max(probed, key=lambda name: probed[name]["tuning_accuracy"])
    return {
        "best_on_tuning": best,
        "layer": probed[best]["layers"][0],
        "tuning_accuracy": {name: row["tuning_accuracy"] for name, row in probed.items()},
        "best_test_accuracy": probed[best]["test_accuracy"],
        "best_teacher_fraction": probed[best]["teacher_fraction"],
    }


if __name__ == "__main__":
    main()
