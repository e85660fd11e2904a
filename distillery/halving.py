"""Early stopping of hopeless trials: asynchronous successive halving (ASHA, Li et al. 2020).

A search's trials are scored on the tuning rows at a few rungs, fractions of their training.
At each rung a trial is compared with every trial of its search that reached the same rung
before it (or at the same time); if it is below the top 1/ETA of them, it stops there, keeping
its best weights. Nothing waits for a rung to fill: the first trial to reach a rung always goes
on, so a search on one worker stops its later, worse trials and never idles, and N workers
running trials at once need no coordination beyond the scores each trial writes. This is the
stopping form Ray Tune's AsyncHyperBandScheduler uses, and what AutoMM's
`hyperparameter_tune_kwargs={"scheduler": "ASHA"}` selects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SCHEDULERS = ("ASHA", "FIFO")  # FIFO: every trial trains to its end
# Fractions of a trial's steps at which it is scored against its siblings. Halving twice
# (eta 2): a trial stopped at the first rung cost a quarter of a full one.
RUNGS = (0.25, 0.5)
ETA = 2


def rung_step(rung: float, total_steps: int) -> int:
    """The training step at which a trial reaches `rung`."""
    return max(1, round(rung * total_steps))


def rungs_reached(step: int, total_steps: int, done: Sequence[float]) -> list[float]:
    """The rungs a validation at `step` completes that were not recorded before."""
    return [r for r in RUNGS if r not in done and step >= rung_step(r, total_steps)]


def should_stop(
    score: float, others: Sequence[float], higher_is_better: bool, eta: int = ETA
) -> tuple[bool, float]:
    """Whether a trial scoring `score` at a rung stops, given the scores `others` recorded
    there; and the cutoff it was held to. It goes on when it is at least as good as the
    (1 - 1/eta) quantile of all the scores at the rung, its own included."""
    scores = np.array([*others, score], dtype=float)
    if not higher_is_better:
        scores = -scores
    cutoff = float(np.percentile(scores, 100 * (1 - 1 / eta)))
    stop = bool(scores[-1] < cutoff)
    return stop, cutoff if higher_is_better else -cutoff
