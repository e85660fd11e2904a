"""Auto-distill's leaderboard (AutoGluon's `leaderboard()`): every trial and its int8 variant
with what it scored and what it costs, the teacher, the Pareto frontier of accuracy against
latency on one timing scale, and the best row within the budget.

It reads the service's records of a search's trials (domain/auto_distill.py hands them over)
and the search's budget; distillery/auto.py decides what the trials are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from distillery.auto import LATENCY_KEYS, NO_DISTILL, PRUNE_SLACK, Budget
from distillery.hyperparams import TEACHER_CHECKPOINT


def _speed(report: Mapping[str, Any], side: str, key: str) -> float | None:
    value = (report.get(side) or {}).get("cpu_latency", {}).get(key)
    return float(value) if isinstance(value, int | float) else None


def trial_rows(trial: Mapping[str, Any], budget: Budget) -> list[dict[str, Any]]:
    """One trial's leaderboard rows: its float student, and its int8 variant when measured.

    `trial` is the service's record of one child job: id, status, spec (TrialSpec.to_json),
    metrics (the job's), int8 (the variant's comparison, or None), cost_seconds, attempts,
    started_at, finished_at, worker, model, error."""
    key = LATENCY_KEYS[budget.latency_mode]
    metrics = trial.get("metrics") or {}
    spec = {
        "name": trial["id"],
        "recipe": None,
        **(trial.get("spec") or {}),
    }
    candidate = {
        "name": spec["name"],
        "checkpoint": None,
        "layers": None,
        **spec.get("candidate", {}),
    }
    report = metrics.get("report") or {}
    probe = spec.get("probe") or {}
    student = report.get("student") or {}
    latency = _speed(report, "student", key)
    teacher_latency = _speed(report, "teacher", key)
    speedup = teacher_latency / latency if latency and teacher_latency else None
    size_mb = student["size_bytes"] / 1e6 if "size_bytes" in student else None
    accuracy = (metrics.get("tuning") or {}).get("accuracy", student.get("accuracy"))
    int8 = trial.get("int8")
    row: dict[str, Any] = {
        "trial": trial["id"],
        "name": spec["name"],
        "candidate": candidate["name"],
        "checkpoint": candidate["checkpoint"],
        "layers": candidate["layers"],
        "recipe": spec["recipe"],
        # The labels-only trial: init-only when it starts from the teacher's own layers.
        "control": (
            None
            if spec["recipe"] != NO_DISTILL
            else "init-only"
            if candidate["checkpoint"] == TEACHER_CHECKPOINT
            else "no-distill"
        ),
        "variant": "float",
        "status": trial["status"],
        "tuning_accuracy": accuracy,
        "latency_ms_per_row": latency,
        "probe_latency_ms_per_row": (probe.get("latency") or {}).get(key),
        "probe_speedup": probe.get("speedup"),
        "speedup": round(speedup, 3) if speedup else None,
        "size_mb": round(size_mb, 3) if size_mb is not None else None,
        "parameters": student.get("parameters", probe.get("parameters")),
        "int8_drop_points": int8.get("accuracy_drop_points") if int8 else None,
        "cost_seconds": trial.get("cost_seconds"),
        # The fraction of its steps at which the search's early stopping ended it, or None.
        "stopped_early_at": (metrics.get("halving") or {}).get("stopped_at"),
        "attempts": trial.get("attempts"),
        "worker": trial.get("worker"),
        "started_at": trial.get("started_at"),
        "finished_at": trial.get("finished_at"),
        "model": trial.get("model"),
        "error": trial.get("error"),
    }
    rows = [row]
    if int8 and accuracy is not None and latency is not None:
        int8_latency = (int8.get("cpu_latency") or {}).get("variant", {}).get(key)
        float_latency = (int8.get("cpu_latency") or {}).get("float", {}).get(key)
        if int8_latency and float_latency:
            # Scaled onto the report's measurement of the float model, so float and int8 rows
            # compare with the teacher alike (the variant's timing ran at another moment).
            scaled = latency * int8_latency / float_latency
            rows.append(
                {
                    **row,
                    "name": f"{spec['name']}+int8",
                    "variant": "int8",
                    "tuning_accuracy": accuracy - int8["accuracy_drop_points"] / 100,
                    "latency_ms_per_row": round(scaled, 4),
                    "speedup": round(teacher_latency / scaled, 3) if teacher_latency else None,
                    "probe_latency_ms_per_row": (probe.get("int8_latency") or {}).get(key),
                    "probe_speedup": probe.get("int8_speedup"),
                    "size_mb": probe.get("int8_size_mb") or row["size_mb"],
                    "int8_drop_points": int8["accuracy_drop_points"],
                }
            )
    for entry in rows:
        entry["within_budget"] = (
            _within(entry, budget)
            if entry["status"] == "succeeded"
            and entry["latency_ms_per_row"] is not None
            and entry["tuning_accuracy"] is not None
            else None
        )
    return rows


def _within(entry: Mapping[str, Any], budget: Budget) -> bool:
    """Whether the row's model fits, by the planning probe's measurement where it has one:
    every candidate and the teacher timed in one run, on one worker, before any training. A
    trial's own report is timed while other trials may be training on the same machine (on
    a busy 2-core host two timings of one model differ twofold), so it is shown beside it but
    decides only for a model that was not probed."""
    size = entry["size_mb"] or 0.0
    probe_ms, probe_speedup = entry.get("probe_latency_ms_per_row"), entry.get("probe_speedup")
    if probe_ms is not None and probe_speedup is not None:
        return budget.meets(probe_ms, probe_speedup, size, PRUNE_SLACK)
    return budget.meets(entry["latency_ms_per_row"], entry["speedup"] or 0.0, size, PRUNE_SLACK)


def teacher_row(trials: Sequence[Mapping[str, Any]], budget: Budget) -> dict[str, Any] | None:
    """The teacher as the trials' reports measured it (the first report that has it)."""
    key = LATENCY_KEYS[budget.latency_mode]
    for trial in trials:
        report = (trial.get("metrics") or {}).get("report") or {}
        teacher = report.get("teacher")
        if teacher:
            return {
                "name": "teacher",
                "variant": "float",
                "recipe": None,
                "status": "teacher",
                "tuning_accuracy": teacher.get("accuracy"),
                "latency_ms_per_row": _speed(report, "teacher", key),
                "speedup": 1.0,
                "size_mb": round(teacher["size_bytes"] / 1e6, 3)
                if "size_bytes" in teacher
                else None,
                "parameters": teacher.get("parameters"),
                "within_budget": None,
            }
    return None


def pareto_front(
    points: Sequence[Mapping[str, Any]], scale: str = "comparable_ms_per_row"
) -> list[str]:
    """Names of the points no other point beats on both accuracy and latency (lower is
    better): sorted by latency, each more accurate than every faster one."""
    measured = [
        p for p in points if p.get(scale) is not None and p.get("tuning_accuracy") is not None
    ]
    measured.sort(key=lambda p: (p[scale], -p["tuning_accuracy"]))
    front, best = [], -math.inf
    for point in measured:
        if point["tuning_accuracy"] > best:
            front.append(str(point["name"]))
            best = point["tuning_accuracy"]
    return front


def choose_best(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The most accurate row within budget (a tie goes to the faster)."""
    eligible = [r for r in rows if r.get("within_budget")]
    if not eligible:
        return None
    return max(eligible, key=lambda r: (r["tuning_accuracy"], -r["comparable_ms_per_row"]))


def leaderboard(
    trials: Sequence[Mapping[str, Any]],
    budget: Budget,
    teacher_latency: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """AutoGluon's leaderboard(): every trial (and int8 variant) best first, the teacher, the
    Pareto frontier of accuracy against latency, and the best row within budget.

    Each trial's report is timed at its own moment, so rows are put on one scale for the
    frontier and the budget: `comparable_ms_per_row` is the planning probe's timing of the
    row's architecture (and variant), taken in one run with the teacher's (`teacher_latency`);
    for a model not probed, a reference teacher latency (the probe's, else the median of the
    reports') over the row's own measured speed-up."""
    rows = [row for trial in trials for row in trial_rows(trial, budget)]
    key = LATENCY_KEYS[budget.latency_mode]
    reported = sorted(
        t
        for t in (
            _speed((x.get("metrics") or {}).get("report") or {}, "teacher", key) for x in trials
        )
        if t
    )
    reference = (teacher_latency or {}).get(key) or (
        reported[len(reported) // 2] if reported else None
    )
    for row in rows:
        # The probe's timing (one run for every candidate and the teacher) where there is one.
        row["comparable_ms_per_row"] = row.get("probe_latency_ms_per_row") or (
            round(reference / row["speedup"], 4)
            if reference and row["speedup"]
            else row["latency_ms_per_row"]
        )
    rows.sort(
        key=lambda r: (
            r["tuning_accuracy"] is None,
            -(r["tuning_accuracy"] or 0.0),
            r["latency_ms_per_row"] or math.inf,
        )
    )
    teacher = teacher_row(trials, budget)
    if teacher is not None:
        teacher["comparable_ms_per_row"] = reference or teacher["latency_ms_per_row"]
    points = [*rows, *([teacher] if teacher else [])]
    front = set(pareto_front(points))
    for point in points:
        point["pareto"] = point["name"] in front
    best = choose_best(rows)
    return {
        "budget": {**asdict(budget), "describe": budget.describe()},
        "latency": f"CPU ms per row, {budget.latency_mode} "
        + ("(batches of 32)" if budget.latency_mode == "batched" else "(batch 1)"),
        "reference_teacher_ms_per_row": reference,
        "rows": rows,
        "teacher": teacher,
        "frontier": [
            p["name"]
            for p in sorted(
                (p for p in points if p["pareto"]), key=lambda p: p["comparable_ms_per_row"]
            )
        ],
        "best": dict(best) if best else None,
    }
