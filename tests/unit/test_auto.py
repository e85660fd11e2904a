"""Auto-distill's ML side without jobs: budgets and presets, candidates, latency probes and
pruning, trial plans, the leaderboard and its frontier."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillery.auto import (
    AutoError,
    Budget,
    Candidate,
    ProbeResult,
    SearchSpec,
    checkpoint_candidates,
    choose_candidates,
    control_epochs,
    plan_trials,
    probe_candidates,
    resolve_search,
    spread_layers,
    teacher_cuts,
)
from distillery.halving import RUNGS, rung_step, rungs_reached, should_stop
from distillery.hyperparams import parse_hyperparameters
from distillery.leaderboard import leaderboard, pareto_front
from distillery.report_render import render_frontier
from tests.factories import qnli_like_frame


def test_spread_layers_is_every_other_at_half_depth() -> None:
    assert spread_layers(6, 3) == [0, 2, 4]
    assert spread_layers(6, 2) == [0, 5]
    assert spread_layers(3, 2) == [0, 2]
    assert spread_layers(4, 1) == [0]


def test_teacher_cuts_cover_every_depth_once() -> None:
    cuts = teacher_cuts(3)
    assert [(c.name, c.layers) for c in cuts] == [
        ("teacher-spread-2", [0, 2]),
        ("teacher-first-2", [0, 1]),
        ("teacher-spread-1", [0]),
    ]


def test_a_six_layer_teacher_gets_inner_cuts_tried_first_at_equal_depth() -> None:
    cuts = teacher_cuts(6)
    layers = {c.name: c.layers for c in cuts}
    assert layers["teacher-inner-2"] == [1, 4]
    assert layers["teacher-spread-2"] == [0, 5]
    assert layers["teacher-inner-4"] == [1, 2, 3, 4]
    assert "teacher-inner-5" not in layers and "teacher-inner-1" not in layers
    # A budget only the 2-layer cuts meet: all three families fit, two students are kept.
    probes = [
        ProbeResult(
            cut,
            parameters=len(cut.layers or []),
            size_mb=1.0,
            latency={},
            speedup=1.0,
            fits=len(cut.layers or []) <= 2,
            pruned=None if len(cut.layers or []) <= 2 else "too slow",
        )
        for cut in cuts
    ]
    chosen = choose_candidates(probes, 2)
    assert [p.candidate.name for p in chosen] == ["teacher-inner-2", "teacher-spread-2"]


def test_narrowed_cuts_come_at_half_and_quarter_width_from_two_layers_up() -> None:
    narrowed = [c for c in teacher_cuts(6, 1536) if c.intermediate_size is not None]
    shapes = {c.name: (c.family, c.layers, c.intermediate_size) for c in narrowed}
    # Each depth's inner cut: the 2-layer one is bench/quality.py's 1+4 cut at half width.
    assert shapes["teacher-2-ffn768"] == ("teacher-narrowed-half", [1, 4], 768)
    assert shapes["teacher-2-ffn384"] == ("teacher-narrowed-quarter", [1, 4], 384)
    assert shapes["teacher-4-ffn768"][1] == [1, 2, 3, 4]
    # Too shallow a count for inner cuts: the spread cut, narrowed. No 1-layer narrowing.
    assert shapes["teacher-5-ffn384"][1] == spread_layers(6, 5)
    assert not any(len(c.layers or []) < 2 for c in narrowed)
    assert len(narrowed) == 2 * 4
    assert narrowed[0].hyperparameters() == {
        "model.hf_text.checkpoint_name": "teacher",
        "model.hf_text.layers": narrowed[0].layers,
        "model.hf_text.intermediate_size": narrowed[0].intermediate_size,
    }
    # With no width known, cuts keep the teacher's width.
    assert all(c.intermediate_size is None for c in teacher_cuts(6))
    # A 3x budget met only by 1-layer cuts at full width and by narrowed 2- and 3-layer cuts:
    # the narrowed ones are kept, biggest first, and the 1-layer cut is left out.
    sizes = {"teacher-3-ffn384": 14.4, "teacher-2-ffn768": 14.1, "teacher-spread-1": 13.5}
    probes = [
        ProbeResult(
            cut,
            parameters=int(sizes.get(cut.name, 20.0) * 1e6),
            size_mb=1.0,
            latency={},
            speedup=1.0,
            pruned=None if cut.name in sizes else "too slow",
        )
        for cut in teacher_cuts(6, 1536)
    ]
    chosen = choose_candidates(probes, 2)
    assert [p.candidate.name for p in chosen] == ["teacher-3-ffn384", "teacher-2-ffn768"]


def test_at_equal_size_every_teacher_cut_comes_before_another_checkpoint() -> None:
    first = Candidate("teacher-first-2", "teacher-first", "teacher", [0, 1])
    (other,) = checkpoint_candidates(["paraphrase-MiniLM-L3-v2"])
    probes = [
        ProbeResult(c, parameters=10, size_mb=1.0, latency={}, speedup=1.0, fits=True)
        for c in (other, first)
    ]
    assert [p.candidate.name for p in choose_candidates(probes, 2)] == [
        "teacher-first-2",
        "paraphrase-MiniLM-L3-v2",
    ]


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"presets": "fastest"}, "auto.presets"),
        ({"min_speedup": 0.5}, "auto.min_speedup"),
        ({"max_latency_ms_per_row": 0.0}, "auto.max_latency_ms_per_row"),
        ({"max_size_mb": -1.0}, "auto.max_size_mb"),
        ({"time_limit": float("inf")}, "auto.time_limit"),
        ({"max_trials": 0}, "auto.max_trials"),
        ({"recipes": ["magic"]}, "auto.recipes"),
        ({"latency_mode": "p99"}, "auto.latency_mode"),
        ({"scheduler": "hyperband"}, "auto.scheduler"),
    ],
)
def test_bad_budget_names_its_field(settings: dict, field: str) -> None:
    presets = settings.pop("presets", None)
    with pytest.raises(AutoError) as error:
        resolve_search(presets, **settings)
    assert error.value.field == field


def test_presets_fill_in_the_budget_and_trials() -> None:
    spec = resolve_search("fast_inference")
    assert spec.budget.min_speedup == 3.0 and spec.max_trials == 4
    given = resolve_search("fast_inference", max_size_mb=50, max_trials=2)
    assert given.budget.min_speedup is None and given.budget.max_size_mb == 50
    assert SearchSpec.from_json(given.to_json()) == given
    assert spec.scheduler == "ASHA" and given.scheduler == "ASHA"
    assert resolve_search("fast_inference", scheduler="FIFO").scheduler == "FIFO"
    # A search stored before there was a scheduler trains every trial to its end.
    stored = {k: v for k, v in given.to_json().items() if k != "scheduler"}
    assert SearchSpec.from_json(stored).scheduler == "FIFO"


def test_halving_lets_the_first_trial_at_a_rung_go_on_and_stops_the_bottom_half() -> None:
    assert should_stop(0.5, [], higher_is_better=True) == (False, 0.5)
    assert should_stop(0.6, [0.7], higher_is_better=True)[0]  # below the better of two
    assert not should_stop(0.7, [0.7], higher_is_better=True)[0]  # a tie goes on
    assert not should_stop(0.8, [0.7], higher_is_better=True)[0]
    # Of three, the top half by the median: 0.65 is below it, 0.7 is it.
    assert should_stop(0.65, [0.6, 0.7, 0.75], higher_is_better=True) == (True, 0.675)
    assert not should_stop(0.7, [0.6, 0.75], higher_is_better=True)[0]
    # Lower is better (RMSE): the cutoff is the same quantile, from the other end.
    assert should_stop(2.0, [1.0], higher_is_better=False) == (True, 1.5)
    assert not should_stop(1.0, [2.0], higher_is_better=False)[0]


def test_rungs_are_reached_once_each_at_their_fraction_of_the_steps() -> None:
    assert rung_step(0.25, 100) == 25 and rung_step(0.25, 2) == 1
    assert rungs_reached(24, 100, []) == []
    assert rungs_reached(25, 100, []) == [0.25]
    assert rungs_reached(60, 100, [0.25]) == [0.5]
    # A run validated only at its end completes every rung there, each recorded once.
    assert rungs_reached(100, 100, []) == list(RUNGS)
    assert rungs_reached(100, 100, list(RUNGS)) == []


def test_probe_prunes_what_cannot_meet_the_budget(tiny_teacher_dir: Path) -> None:
    """Measured before training: a budget no cut of the teacher can meet prunes them all. (The
    impossible budget is a size, not a speed-up: a timing on a busy machine once made a 1-layer
    cut 74x its 2-layer teacher.)"""
    rows = qnli_like_frame(16)
    config = parse_hyperparameters({}, distill=True)  # as the search's plan parses its keys
    candidates = teacher_cuts(2)
    impossible = resolve_search(None, max_size_mb=0.01, int8=False)
    teacher_latency, probes = probe_candidates(
        candidates,
        lambda c: (tiny_teacher_dir, c.layers),
        tiny_teacher_dir,
        rows,
        config,
        ["question", "sentence"],
        2,
        impossible,
    )
    assert teacher_latency["batched_ms_per_row"] > 0
    assert probes and all(p.pruned for p in probes)
    assert choose_candidates(probes, 2) == []
    easy = resolve_search(None, max_latency_ms_per_row=1e6)
    _, probes = probe_candidates(
        candidates,
        lambda c: (tiny_teacher_dir, c.layers),
        tiny_teacher_dir,
        rows,
        config,
        ["question", "sentence"],
        2,
        easy,
    )
    chosen = choose_candidates(probes, 2)
    assert [p.candidate.name for p in chosen] == ["teacher-spread-1"]
    trials = plan_trials(chosen, easy, {"optimization.max_epochs": 1}, config)
    assert [t.recipe for t in trials] == ["no_distill", "default", "hard_labels", "low_lr"]
    assert trials[0].hyperparameters["model.hf_text.layers"] == [0]
    assert trials[0].hyperparameters["optimization.max_epochs"] == 1
    # The distill default (3e-4) down to the grid's other point.
    assert trials[3].hyperparameters["optimization.learning_rate"] == pytest.approx(1e-4)
    assert trials[0].hyperparameters["distiller.soft_label_weight"] == 0.0
    assert len(plan_trials(chosen, resolve_search(None, max_trials=1), {}, config)) == 2
    # The labels-only control gets a distilled trial's steps: 800 labels against 9,863 rows.
    two = parse_hyperparameters({"optimization.max_epochs": 2})
    assert control_epochs(two, 800, 9863) == 25 and control_epochs(two, 800, 800) == 2
    steps = parse_hyperparameters({"optimization.max_steps": 100})
    assert control_epochs(steps, 800, 9863) == steps.max_epochs
    fair = plan_trials(chosen, easy, {"optimization.max_epochs": 2}, two, control_max_epochs=25)
    assert fair[0].recipe == "no_distill"
    assert fair[0].hyperparameters["optimization.max_epochs"] == 25
    assert all(t.hyperparameters["optimization.max_epochs"] == 2 for t in fair[1:])


def test_cuts_of_one_depth_share_one_timing(tiny_teacher_dir: Path) -> None:
    """The layers a cut keeps do not change its cost: twins are timed once, so noise cannot
    prune one and keep the other."""
    twins = [
        Candidate("teacher-first-1", "teacher-first", "teacher", [0]),
        Candidate("teacher-inner-1", "teacher-inner", "teacher", [1]),
        Candidate("teacher-2", "teacher-first", "teacher", [0, 1]),
        # The same depth at half the width (32 of 64 neurons): another architecture, timed apart.
        Candidate("teacher-1-ffn32", "teacher-narrowed-half", "teacher", [0], 32),
    ]
    timed: list[Candidate] = []

    def resolve(candidate: Candidate) -> tuple[Path, list[int] | None]:
        timed.append(candidate)
        return tiny_teacher_dir, candidate.layers

    _, probes = probe_candidates(
        twins,
        resolve,
        tiny_teacher_dir,
        qnli_like_frame(16),
        parse_hyperparameters({}),
        ["question", "sentence"],
        2,
        resolve_search(None, max_latency_ms_per_row=1e6),
    )
    assert [p.candidate.name for p in probes] == [c.name for c in twins]
    assert probes[0].latency == probes[1].latency and probes[0].int8_latency is not None
    assert probes[1].int8_latency == probes[0].int8_latency
    assert probes[2].latency != probes[0].latency and probes[2].parameters > probes[0].parameters
    assert timed[-1].intermediate_size == 32 and probes[3].latency != probes[0].latency
    assert probes[3].parameters < probes[0].parameters


def trial(name: str, accuracy: float, student_ms: float, status: str = "succeeded") -> dict:
    candidate = Candidate(name, "teacher-first", "teacher", [0]).__dict__
    return {
        "id": f"job_{name}",
        "status": status,
        "spec": {"name": name, "candidate": candidate, "recipe": "default", "probe": {}},
        "metrics": {
            "tuning": {"accuracy": accuracy},
            "report": {
                "student": {
                    "accuracy": accuracy,
                    "size_bytes": 4_000_000,
                    "parameters": 1000,
                    "cpu_latency": {"batched_ms_per_row": student_ms, "single_row_ms": 1.0},
                },
                "teacher": {
                    "accuracy": 0.9,
                    "size_bytes": 40_000_000,
                    "parameters": 10_000,
                    "cpu_latency": {"batched_ms_per_row": 6.0, "single_row_ms": 3.0},
                },
            },
        },
        "int8": {
            "accuracy_drop_points": 1.0,
            "cpu_latency": {
                "float": {"batched_ms_per_row": student_ms},
                "variant": {"batched_ms_per_row": student_ms / 2},
            },
        },
        "model": f"mdl_{name}",
        "cost_seconds": 10.0,
    }


def test_leaderboard_picks_the_most_accurate_within_budget_and_draws_it() -> None:
    trials = [
        trial("deep", 0.86, 3.0),  # 2x the teacher: misses a 3x budget in float, meets it int8
        trial("shallow", 0.80, 1.5),
        trial("lost", 0.0, 1.0, status="failed"),
    ]
    trials[2]["metrics"] = {}
    trials[1]["metrics"]["halving"] = {"rungs": {"0.25": 0.8}, "stopped_at": 0.25}
    board = leaderboard(trials, Budget(min_speedup=3.0))
    names = [r["name"] for r in board["rows"]]
    assert names[:2] == ["deep", "deep+int8"]
    best = board["best"]
    assert best["name"] == "deep+int8" and best["variant"] == "int8"
    assert best["tuning_accuracy"] == pytest.approx(0.85) and best["speedup"] == 4.0
    assert board["teacher"]["tuning_accuracy"] == 0.9
    # The teacher is on the frontier (slowest, most accurate); "shallow" float is beaten by
    # "deep+int8", as fast and more accurate.
    assert board["frontier"] == ["shallow+int8", "deep+int8", "deep", "teacher"]
    failed = next(r for r in board["rows"] if r["name"] == "lost")
    assert failed["within_budget"] is None and failed["status"] == "failed"
    stopped = [r["name"] for r in board["rows"] if r["stopped_early_at"] == 0.25]
    assert stopped == ["shallow", "shallow+int8"]
    png = render_frontier({**board, "job": "job_x", "status": "succeeded"})
    assert png.startswith(b"\x89PNG")
    assert render_frontier({"rows": [], "budget": {}}).startswith(b"\x89PNG")


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [
        {"name": "a", "latency_ms_per_row": 1.0, "tuning_accuracy": 0.7},
        {"name": "b", "latency_ms_per_row": 2.0, "tuning_accuracy": 0.65},
        {"name": "c", "latency_ms_per_row": 3.0, "tuning_accuracy": 0.8},
    ]
    assert pareto_front(points, "latency_ms_per_row") == ["a", "c"]


def test_checkpoint_candidates_are_named_by_folder() -> None:
    assert checkpoint_candidates(["/models/paraphrase-MiniLM-L3-v2"])[0].name == (
        "paraphrase-MiniLM-L3-v2"
    )
