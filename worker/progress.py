"""What a running attempt writes while it trains: a heartbeat from its own thread, and the
training loop's progress, metrics and events; and the cancel check the loop asks for."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from distillery.halving import RUNGS, rungs_reached, should_stop
from distillery.training import TrainingCallbacks
from domain import lifecycle
from domain.auto_distill import TrialLimits, halving_state, rung_key, rung_scores
from domain.orm import Job, JobMetric, utcnow
from domain.storage import ArtifactStore, checkpoint_key

log = logging.getLogger("distillery.worker")
# Cancellation and ownership are read from the database at most this often.
STOP_CHECK_SECONDS = 1.0


@contextmanager
def heartbeat(
    sessions: sessionmaker[Session], job_id: str, attempt: int, every_seconds: float
) -> Iterator[None]:
    """Stamp heartbeat_at from a thread, so long steps (teacher inference, a big validation)
    never look like a dead worker."""
    stop = threading.Event()

    def beat() -> None:
        with sessions() as session:
            while not stop.wait(every_seconds):
                try:
                    lifecycle.heartbeat(session, job_id, attempt)
                except Exception:  # a missed beat is retried next time; never kill the job
                    log.warning("heartbeat for %s failed", job_id, exc_info=True)
                    session.rollback()

    # The thread runs in a copy of this context, so its log lines carry the job id too.
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(beat,), name=f"heartbeat-{job_id}", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


class JobCallbacks(TrainingCallbacks):
    """Writes progress, metrics and events for one attempt; reads the cancel flag."""

    def __init__(
        self,
        session: Session,
        job: Job,
        attempt: int,
        store: ArtifactStore,
        checkpoints: Path,
        limits: TrialLimits | None = None,
    ) -> None:
        self.session, self.job, self.attempt = session, job, attempt
        self.store, self.checkpoints = store, checkpoints
        self.last_check = 0.0
        # A search's trial ends training, keeping its best weights, when the search's time_limit
        # passes or when its early stopping says so (distillery/halving.py).
        self.limits, self.wrapped_up = limits, False
        self.total_steps, self.higher_is_better = 0, True
        # An attempt that resumes a trial stopped early stops again at once.
        self.stopped_early = halving_state(job).get("stopped_at") is not None

    def event(self, kind: str, message: str, **data: Any) -> None:
        lifecycle.add_event(self.session, self.job.id, kind, message, **data)
        self.session.commit()

    def on_start(self, total_steps: int, info: dict[str, Any]) -> None:
        self.total_steps = total_steps
        self.higher_is_better = bool(info.get("selection_higher_is_better", True))
        self.job.metrics = {**self.job.metrics, "info": info}
        if "resumed_from_step" in info:
            lifecycle.add_event(
                self.session,
                self.job.id,
                "resumed",
                f"attempt {self.attempt} resumed from the checkpoint at step "
                f"{info['resumed_from_step']}",
                step=info["resumed_from_step"],
            )
        self.event(
            "training_started", f"training for {total_steps} steps on {info['device']}", **info
        )

    def record(self, kind: str, step: int, epoch: float, values: dict[str, float]) -> None:
        self.session.add(
            JobMetric(
                job_id=self.job.id,
                attempt=self.attempt,
                kind=kind,
                step=step,
                epoch=epoch,
                values=values,
            )
        )

    def on_log(self, step: int, total_steps: int, epoch: float, values: dict[str, float]) -> None:
        self.record("train", step, epoch, values)
        self.job.progress = round(step / total_steps, 4)
        self.job.metrics = {**self.job.metrics, "latest": {"step": step, "epoch": epoch, **values}}
        self.session.commit()

    def on_validation(
        self, step: int, epoch: float, values: dict[str, float], best_score: float
    ) -> None:
        self.record("validation", step, epoch, values)
        self.job.metrics = {
            **self.job.metrics,
            "last_validation": {"step": step, "epoch": epoch, **values},
        }
        self.session.commit()
        if self.limits is not None and self.limits.halving:
            self.halve(step, best_score)

    def halve(self, step: int, best: float) -> None:
        """At each rung this validation completes, record the trial's best tuning score so far
        (the loop's, restored with its checkpoint on a resumed attempt) and stop the trial if
        its search's other trials did better there."""
        state = halving_state(self.job)
        done = [float(rung) for rung in state.get("rungs", {})]
        for rung in rungs_reached(step, self.total_steps, done):
            others = rung_scores(self.session, self.job, rung)
            stop, cutoff = should_stop(best, others, self.higher_is_better)
            state = {
                **state,
                "rungs": {**state.get("rungs", {}), rung_key(rung): best},
                **({"stopped_at": rung, "cutoff": cutoff} if stop else {}),
            }
            self.job.metrics = {**self.job.metrics, "halving": state}
            self.session.commit()
            if stop:
                self.stopped_early = True
                self.event(
                    "stopped_early",
                    f"stopped at {rung:.0%} of its steps: tuning score {best:.4f} is below "
                    f"the search's cutoff there, {cutoff:.4f} ({len(others)} other trial(s))",
                    rung=rung,
                    score=best,
                    cutoff=cutoff,
                )
                return

    def on_checkpoint(self, step: int, epoch: float) -> None:
        try:
            # In the store, so an attempt on another host can resume from it.
            self.store.sync_folder(checkpoint_key(self.job.id), self.checkpoints)
        except Exception:  # the job goes on; only a resume elsewhere would start over
            log.warning("could not copy the checkpoint to the store", exc_info=True)
        self.event(
            "checkpoint_saved", f"checkpoint at step {step}", step=step, epoch=round(epoch, 4)
        )

    def validation_fractions(self) -> tuple[float, ...]:
        return RUNGS if self.limits is not None and self.limits.halving else ()

    def should_wrap_up(self) -> bool:
        if self.stopped_early:
            return True
        deadline = self.limits.deadline if self.limits is not None else None
        if deadline is None or self.wrapped_up or utcnow() < deadline:
            return self.wrapped_up
        self.wrapped_up = True
        self.event(
            "time_limit",
            "the search's time_limit passed: training ends with its best weights so far",
        )
        return True

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self.last_check < STOP_CHECK_SECONDS:
            return False
        self.last_check = now
        return lifecycle.check_stop(self.session, self.job.id, self.attempt)
