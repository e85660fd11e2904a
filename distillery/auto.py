"""Auto-distill, the ML side: which students and recipes to try for a deployment budget, and
how fast each candidate is before it is trained (distillery/leaderboard.py ranks what the
trials got).

A search is asked for with a budget (what the deployment can afford: CPU milliseconds per
row, a speed-up over the teacher, a size) and a compute budget (`time_limit` seconds,
`max_trials`). Presets fill in the rest. The candidates are:

- cuts of the teacher: its first N layers, N layers spread over its depth (DistilBERT's
  every-other layer when N is half), and N spread over its inner layers (first and last left
  out), for every N below the teacher's depth;
- the same cuts narrowed: the inner cut of each depth (the spread one where a teacher is too
  shallow for inner cuts) with its feed-forward layers at a half and a quarter of the teacher's
  width (`model.hf_text.intermediate_size`). Depth alone moves in coarse steps: on QNLI the
  2-of-6-layer cut of MiniLM measured 2.5-3.1x its teacher and the 1-layer cut lost everything
  the teacher taught, while the 2-layer cut at half width measured 3.8x and kept 0.960 of the
  teacher's accuracy over 3 seeds (bench/results/quality.json);
- other checkpoints (packaged ones, and those the request names: another tokenizer is fine),
  each optionally served int8.

Every candidate's CPU latency is *measured* before anything trains (its architecture with the
weights it would start from; weights do not change the time a forward pass takes), on the
worker that plans the search, with the same measure the distillation report uses afterwards
(`distillery.report.cpu_latency`). Candidates that cannot meet the budget are pruned; of the
rest, the deepest of each family (as deep as the budget allows) is kept, and the recipes are
tried on them in order: the measured default first.

Nothing here knows of jobs or queues: the service (domain/auto_distill.py) turns trial specs
into child jobs and hands the trials' records to distillery.leaderboard.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch

from distillery.backbones import count_parameters, load_classifier
from distillery.encoding import encode_rows
from distillery.halving import SCHEDULERS
from distillery.hyperparams import TEACHER_CHECKPOINT, TrainingConfig
from distillery.inference import compute_outputs
from distillery.predictor import Predictor
from distillery.report import cpu_latency
from distillery.variants import module_memory_bytes, quantize_linear_int8

LATENCY_MODES = ("batched", "single_row")
# distillery.report.cpu_latency's keys for each mode.
LATENCY_KEYS = {"batched": "batched_ms_per_row", "single_row": "single_row_ms"}
# A candidate must meet the budget with this much headroom in the probe's timing (the speed-up
# 5% above the minimum, latency and size 5% below the maximum): a later timing of the same
# model on the same machine lands within a few percent of it, on either side. The same rule
# prunes before training and picks the winner after, so no trial is spent on a student that
# could not be chosen.
SELECT_HEADROOM = 1.05
PRUNE_SLACK = 1 / SELECT_HEADROOM
# The measured default (distillery/hyperparams.py's distiller defaults, bench/quality.py) and a
# small, principled set around it: one knob each.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "hard_labels": {"distiller.hard_label_weight": 0.5},
    "low_temperature": {"distiller.temperature": 2.0},
    "features": {"distiller.output_feature_loss_weight": 1.0},
    "low_lr": {},  # the job's learning rate divided by LOW_LR_DIVISOR, set per search
}
# From a distill job's default rate (3e-4) down to the labels-only default (1e-4): the other
# point of bench/quality.py's grid.
LOW_LR_DIVISOR = 3.0
# The control trial: the same student from the same start, labels only.
NO_DISTILL = "no_distill"
NO_DISTILL_HYPERPARAMETERS: dict[str, Any] = {
    "distiller.soft_label_weight": 0.0,
    "distiller.hard_label_weight": 1.0,
    "distiller.augmentation_pair_copies": 0,
    "distiller.transfer_from_teacher_data": False,
}


@dataclass(frozen=True)
class Preset:
    description: str
    # The deployment budget when the request names none.
    default_min_speedup: float
    max_trials: int
    # Candidate families kept (deepest student of each).
    candidates: int
    recipes: tuple[str, ...]
    int8: bool = True
    no_distill: bool = True


PRESETS: dict[str, Preset] = {
    # Its second recipe is the learning rate, the one knob bench/quality.py's hand tuning turns
    # (1e-4 and 3e-4; its tuning rows chose 3e-4 for every distilled arm of the 1+4 cut, and
    # 1e-4 for 4 of the 6 distilled arms of the 0+5 cut): a hard-label weight was never
    # measured to matter.
    "fast_inference": Preset(
        "a student at least 3x faster than the teacher, few trials",
        default_min_speedup=3.0,
        max_trials=4,
        candidates=2,
        recipes=("default", "low_lr"),
    ),
    "medium_quality": Preset(
        "at least 2x faster, a handful of trials",
        default_min_speedup=2.0,
        max_trials=6,
        candidates=3,
        recipes=("default", "hard_labels", "low_lr"),
    ),
    "best_quality": Preset(
        "at least 1.5x faster, every recipe on every family",
        default_min_speedup=1.5,
        max_trials=16,
        candidates=4,
        recipes=tuple(RECIPES),
    ),
}
DEFAULT_PRESET = "medium_quality"
MAX_TIME_LIMIT = 30 * 24 * 3600


class AutoError(ValueError):
    """The search cannot run as asked; `field` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Budget:
    """What the deployment can afford; None is no limit. Latency is CPU milliseconds per row,
    `latency_mode` "batched" (rows in batches of 32) or "single_row" (batch 1)."""

    max_latency_ms_per_row: float | None = None
    min_speedup: float | None = None
    max_size_mb: float | None = None
    latency_mode: str = "batched"

    def meets(self, latency_ms: float, speedup: float, size_mb: float, slack: float = 1.0) -> bool:
        if self.max_latency_ms_per_row is not None and (
            latency_ms > self.max_latency_ms_per_row * slack
        ):
            return False
        if self.min_speedup is not None and speedup * slack < self.min_speedup:
            return False
        return self.max_size_mb is None or size_mb <= self.max_size_mb * slack

    def describe(self) -> str:
        parts = []
        if self.max_latency_ms_per_row is not None:
            parts.append(f"<= {self.max_latency_ms_per_row} ms/row ({self.latency_mode})")
        if self.min_speedup is not None:
            parts.append(f">= {self.min_speedup}x the teacher ({self.latency_mode})")
        if self.max_size_mb is not None:
            parts.append(f"<= {self.max_size_mb} MB")
        return ", ".join(parts)


@dataclass(frozen=True)
class SearchSpec:
    """A search as resolved at submit: the preset's defaults filled in."""

    presets: str
    budget: Budget
    max_trials: int
    time_limit: float | None = None
    # Checkpoints to try beside cuts of the teacher; None: the packaged ones.
    students: list[str] | None = None
    int8: bool = True
    no_distill: bool = True
    candidates: int = 2
    recipes: list[str] = field(default_factory=lambda: ["default"])
    # distillery/halving.py: ASHA stops hopeless trials early; FIFO (searches stored before
    # there was a choice) trains every trial to its end.
    scheduler: str = "FIFO"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SearchSpec:
        return cls(**{**raw, "budget": Budget(**raw["budget"])})


def resolve_search(
    presets: str | None,
    *,
    max_latency_ms_per_row: float | None = None,
    latency_mode: str = "batched",
    min_speedup: float | None = None,
    max_size_mb: float | None = None,
    time_limit: float | None = None,
    max_trials: int | None = None,
    students: Sequence[str] | None = None,
    int8: bool | None = None,
    no_distill: bool | None = None,
    recipes: Sequence[str] | None = None,
    scheduler: str | None = None,
) -> SearchSpec:
    """The search asked for, checked; AutoError names the field at fault."""
    name = presets or DEFAULT_PRESET
    if name not in PRESETS:
        raise AutoError("auto.presets", f"presets must be one of {', '.join(PRESETS)}")
    preset = PRESETS[name]
    if latency_mode not in LATENCY_MODES:
        raise AutoError("auto.latency_mode", f"must be one of {', '.join(LATENCY_MODES)}")
    checks: list[tuple[str, float | None, float]] = [
        ("auto.max_latency_ms_per_row", max_latency_ms_per_row, 0.0),
        ("auto.max_size_mb", max_size_mb, 0.0),
        ("auto.time_limit", time_limit, 0.0),
    ]
    for key, value, low in checks:
        if value is not None and not (math.isfinite(value) and value > low):
            raise AutoError(key, f"must be a number above {low:g}, got {value}")
    if time_limit is not None and time_limit > MAX_TIME_LIMIT:
        raise AutoError("auto.time_limit", f"must be at most {MAX_TIME_LIMIT} s (30 days)")
    if min_speedup is not None and not (math.isfinite(min_speedup) and min_speedup >= 1.0):
        raise AutoError(
            "auto.min_speedup", f"must be at least 1 (times the teacher's speed), got {min_speedup}"
        )
    if max_trials is not None and max_trials < 1:
        raise AutoError("auto.max_trials", f"must be at least 1, got {max_trials}")
    chosen = list(recipes) if recipes is not None else list(preset.recipes)
    unknown = [r for r in chosen if r not in RECIPES]
    if unknown or not chosen:
        raise AutoError(
            "auto.recipes",
            f"unknown recipe(s) {', '.join(unknown) or '(none given)'}; recipes are: "
            f"{', '.join(RECIPES)}",
        )
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise AutoError("auto.scheduler", f"must be one of {', '.join(SCHEDULERS)}")
    if max_latency_ms_per_row is None and min_speedup is None and max_size_mb is None:
        min_speedup = preset.default_min_speedup
    return SearchSpec(
        presets=name,
        budget=Budget(max_latency_ms_per_row, min_speedup, max_size_mb, latency_mode),
        max_trials=max_trials or preset.max_trials,
        time_limit=time_limit,
        students=None if students is None else list(dict.fromkeys(students)),
        int8=preset.int8 if int8 is None else int8,
        no_distill=preset.no_distill if no_distill is None else no_distill,
        candidates=preset.candidates,
        recipes=list(dict.fromkeys(chosen)),
        scheduler=scheduler or "ASHA",
    )


@dataclass(frozen=True)
class Candidate:
    """A student: a checkpoint ("teacher" for a cut of the teacher) and the layers it keeps."""

    name: str
    family: str
    checkpoint: str
    layers: list[int] | None = None
    # Feed-forward neurons per kept block; None keeps the checkpoint's width.
    intermediate_size: int | None = None

    def hyperparameters(self) -> dict[str, Any]:
        keys: dict[str, Any] = {"model.hf_text.checkpoint_name": self.checkpoint}
        if self.layers is not None:
            keys["model.hf_text.layers"] = list(self.layers)
        if self.intermediate_size is not None:
            keys["model.hf_text.intermediate_size"] = self.intermediate_size
        return keys


def _evenly(first: int, last: int, count: int) -> list[int]:
    """`count` ≥ 2 layer indices spread evenly over first..last, both included."""
    return sorted({round(first + i * (last - first) / (count - 1)) for i in range(count)})


def spread_layers(depth: int, count: int) -> list[int]:
    """`count` of `depth` layers spread evenly, first and last included (every other layer when
    count is half the depth, as DistilBERT)."""
    if count == 1:
        return [0]
    if count * 2 == depth:
        return list(range(0, depth, 2))
    return _evenly(0, depth - 1, count)


def inner_layers(depth: int, count: int) -> list[int]:
    """`count` ≥ 2 layers spread over the teacher's inner layers 1..depth-2: its first and last
    layers left out. On QNLI the 2-layer cut [1, 4] of a 6-layer teacher kept 0.71 where [0, 5]
    kept 0.57, distilled the same way (bench/results/terms.json)."""
    return _evenly(1, depth - 2, count)


# The narrowed widths tried, as fractions of the teacher's feed-forward width.
NARROWING = {"half": 2, "quarter": 4}


def teacher_cuts(depth: int, width: int | None = None) -> list[Candidate]:
    """Every cut shallower than the teacher: first N layers, N spread layers, and N spread over
    the inner layers (where there are N inner layers and that cut is new). Given the teacher's
    feed-forward `width`, each depth's inner cut (else its spread cut) also comes narrowed to
    each of NARROWING's fractions of it, in a family of its own per fraction; a 1-layer cut is
    not narrowed (on QNLI it kept nothing of the teacher even at full width)."""
    cuts: list[Candidate] = []
    for count in range(depth - 1, 0, -1):
        first = list(range(count))
        spread = spread_layers(depth, count)
        narrowed = spread
        if 2 <= count <= depth - 2:
            inner = inner_layers(depth, count)
            if inner not in (first, spread):
                narrowed = inner
                cuts.append(
                    Candidate(f"teacher-inner-{count}", "teacher-inner", TEACHER_CHECKPOINT, inner)
                )
        cuts.append(
            Candidate(f"teacher-spread-{count}", "teacher-spread", TEACHER_CHECKPOINT, spread)
        )
        if spread != first:
            cuts.append(
                Candidate(f"teacher-first-{count}", "teacher-first", TEACHER_CHECKPOINT, first)
            )
        if width is None or count < 2:
            continue
        for fraction, divisor in NARROWING.items():
            size = width // divisor
            if size >= 1:
                cuts.append(
                    Candidate(
                        f"teacher-{count}-ffn{size}",
                        f"teacher-narrowed-{fraction}",
                        TEACHER_CHECKPOINT,
                        narrowed,
                        intermediate_size=size,
                    )
                )
    return cuts


def checkpoint_candidates(names: Sequence[str]) -> list[Candidate]:
    return [Candidate(_short_name(name), f"checkpoint:{name}", name) for name in names]


def _short_name(name: str) -> str:
    return Path(name).name or name


@dataclass
class _Probe:
    """The little of a Predictor that `cpu_latency` uses, around a model not saved as a bundle."""

    model: torch.nn.Module
    tokenizer: Any
    text_columns: list[str]
    max_text_len: int
    batch_size: int = 64

    def raw_outputs(self, frame: pd.DataFrame) -> Any:
        rows = encode_rows(self.tokenizer, frame, self.text_columns, self.max_text_len)
        return compute_outputs(
            self.model,
            rows,
            batch_size=self.batch_size,
            pad_token_id=self.tokenizer.pad_token_id or 0,
            device="cpu",
        )


def measure_latency(
    model: torch.nn.Module,
    tokenizer: Any,
    frame: pd.DataFrame,
    text_columns: list[str],
    max_text_len: int,
    repeats: int = 2,
) -> dict[str, float]:
    """CPU ms per row, single-row and batched, exactly as the distillation report measures a
    saved model (the best of `repeats` runs, so a busy moment of a shared CPU counts less)."""
    probe = _Probe(model.eval(), tokenizer, text_columns, max_text_len)
    runs = [cpu_latency(cast(Predictor, probe), frame) for _ in range(repeats)]
    return {key: min(run[key] for run in runs) for key in runs[0]}


@dataclass
class ProbeResult:
    candidate: Candidate
    parameters: int
    size_mb: float
    latency: dict[str, float]
    speedup: float
    int8_latency: dict[str, float] | None = None
    int8_speedup: float | None = None
    int8_size_mb: float | None = None
    fits: bool = False
    int8_fits: bool = False
    pruned: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "candidate": asdict(self.candidate)}


def probe_candidates(
    candidates: Sequence[Candidate],
    resolve: Callable[[Candidate], tuple[Path, int | list[int] | None]],
    teacher_folder: Path,
    rows: pd.DataFrame,
    config: TrainingConfig,
    text_columns: list[str],
    num_labels: int,
    spec: SearchSpec,
    should_stop: Callable[[], bool] = lambda: False,
) -> tuple[dict[str, float], list[ProbeResult]]:
    """The teacher's latency and every candidate's, measured here on CPU; each result says
    whether the candidate fits the budget (float, or int8 when the search allows int8)."""
    mode = LATENCY_KEYS[spec.budget.latency_mode]
    teacher = load_classifier(teacher_folder, num_labels=num_labels)
    teacher_latency = measure_latency(
        teacher.model, teacher.tokenizer, rows, text_columns, config.max_text_len
    )
    del teacher
    results = []
    # Which layers a cut keeps changes no forward pass's cost, only how many it keeps (and how
    # wide): cuts of one shape from one model are timed once, so timing noise cannot prune one
    # and keep its twin (two timings of one architecture in one QNLI search differed by 15 %).
    timed: dict[tuple[str, int | None, int | None], ProbeResult] = {}
    for candidate in candidates:
        if should_stop():
            break
        folder, layers = resolve(candidate)
        depth = len(layers) if isinstance(layers, list) else layers
        architecture = (str(folder), depth, candidate.intermediate_size)
        if architecture in timed:
            results.append(replace(timed[architecture], candidate=candidate))
            continue
        backbone = load_classifier(
            folder,
            num_labels=num_labels,
            layers=layers,
            intermediate_size=candidate.intermediate_size,
        )
        model = backbone.model.eval()
        latency = measure_latency(
            model, backbone.tokenizer, rows, text_columns, config.max_text_len
        )
        parameters = count_parameters(model)
        result = ProbeResult(
            candidate=candidate,
            parameters=parameters,
            size_mb=round(module_memory_bytes(model) / 1e6, 3),
            latency=latency,
            speedup=round(teacher_latency[mode] / latency[mode], 3),
        )
        result.fits = spec.budget.meets(latency[mode], result.speedup, result.size_mb, PRUNE_SLACK)
        if spec.int8:
            quantized = quantize_linear_int8(model).eval()
            result.int8_latency = measure_latency(
                quantized, backbone.tokenizer, rows, text_columns, config.max_text_len
            )
            result.int8_speedup = round(teacher_latency[mode] / result.int8_latency[mode], 3)
            result.int8_size_mb = round(module_memory_bytes(quantized) / 1e6, 3)
            result.int8_fits = spec.budget.meets(
                result.int8_latency[mode], result.int8_speedup, result.int8_size_mb, PRUNE_SLACK
            )
        if not (result.fits or result.int8_fits):
            result.pruned = (
                f"measured {latency[mode]} ms/row ({spec.budget.latency_mode}), "
                f"{result.speedup}x the teacher, {result.size_mb} MB: cannot meet "
                f"{spec.budget.describe()}"
            )
        timed[architecture] = result
        results.append(result)
    return teacher_latency, results


def choose_candidates(results: Sequence[ProbeResult], count: int) -> list[ProbeResult]:
    """The deepest fitting student of each family, largest families first, `count` of them."""
    best: dict[str, ProbeResult] = {}
    for result in results:
        if result.pruned is not None:
            continue
        family = result.candidate.family
        if family not in best or result.parameters > best[family].parameters:
            best[family] = result
    ranked = sorted(best.values(), key=lambda r: (-r.parameters, _family_rank(r.candidate)))
    return ranked[:count]


# At equal size, the inner layers first (they distilled best, bench/results/terms.json), then
# spread layers (DistilBERT's choice), then the first layers, then narrowed cuts (a narrowed
# cut is smaller than the full-width cut of its depth, so a tie is another depth).
FAMILY_ORDER = {
    family: rank
    for rank, family in enumerate(
        ["teacher-inner", "teacher-spread", "teacher-first"]
        + [f"teacher-narrowed-{fraction}" for fraction in NARROWING]
    )
}


def _family_rank(candidate: Candidate) -> tuple[int, str]:
    return FAMILY_ORDER.get(candidate.family, len(FAMILY_ORDER)), candidate.family


@dataclass(frozen=True)
class TrialSpec:
    name: str
    candidate: Candidate
    recipe: str
    hyperparameters: dict[str, Any]
    probe: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "candidate": asdict(self.candidate)}


def recipe_hyperparameters(recipe: str, base: TrainingConfig) -> dict[str, Any]:
    if recipe == "low_lr":
        return {"optimization.learning_rate": base.learning_rate / LOW_LR_DIVISOR}
    if recipe == NO_DISTILL:
        return dict(NO_DISTILL_HYPERPARAMETERS)
    return dict(RECIPES[recipe])


def control_epochs(base: TrainingConfig, labelled_rows: int, distilled_rows: int) -> int:
    """Epochs over its labelled rows that give the labels-only control about as many optimizer
    steps as a distilled trial takes over its labelled, made and transfer rows. The request's
    epochs alone would leave it a fraction of a trial's training (50 steps against 554 on
    QNLI's 800 labels) and overstate what the teacher's outputs added; its best checkpoint on
    the tuning rows is kept and patience ends it once it stops improving, so more cannot hurt."""
    if base.max_steps > 0 or labelled_rows < 1:
        return base.max_epochs  # a step budget is the same for every trial already
    return max(base.max_epochs, math.ceil(base.max_epochs * distilled_rows / labelled_rows))


def plan_trials(
    chosen: Sequence[ProbeResult],
    spec: SearchSpec,
    base_hyperparameters: Mapping[str, Any],
    base: TrainingConfig,
    control_max_epochs: int | None = None,
) -> list[TrialSpec]:
    """The no-distill control first (it trains on the labels alone, so a search cut short by
    its time limit still shows what the teacher's outputs added; `control_max_epochs` from
    control_epochs gives it a trial's steps), then the recipes in order over the chosen
    students (each student's default first, so such a search has tried every student once).
    max_trials counts the distilled trials."""
    trials: list[TrialSpec] = []
    if spec.no_distill and chosen:
        control = dict(base_hyperparameters)
        if control_max_epochs is not None:
            control["optimization.max_epochs"] = control_max_epochs
        trials.append(_trial(chosen[0], NO_DISTILL, control, base))
    distilled = [
        _trial(result, recipe, base_hyperparameters, base)
        for recipe in spec.recipes
        for result in chosen
    ]
    return trials + distilled[: spec.max_trials]


def _trial(
    result: ProbeResult, recipe: str, base_hyperparameters: Mapping[str, Any], base: TrainingConfig
) -> TrialSpec:
    hyperparameters = {
        **base_hyperparameters,
        **result.candidate.hyperparameters(),
        **recipe_hyperparameters(recipe, base),
    }
    return TrialSpec(
        name=f"{result.candidate.name}/{recipe}",
        candidate=result.candidate,
        recipe=recipe,
        hyperparameters=hyperparameters,
        probe=result.to_json(),
    )
