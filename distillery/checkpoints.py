"""Resumable training state: weights, optimizer, scheduler, RNG and loop position on disk.

A retried job attempt picks up from the last checkpoint instead of starting over. Weights are
safetensors; the rest is a torch file of tensors and plain values, written by us and read back
with `weights_only=True`, so even a tampered checkpoint cannot run code. Each save is atomic:
written to a temporary folder, then renamed over the previous one.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

STATE_FILE = "state.pt"
WEIGHTS_FILE = "model.safetensors"
BEST_WEIGHTS_FILE = "best.safetensors"


@dataclass
class LoopState:
    """Where the loop is, and what it has learnt about the best checkpoint so far."""

    step: int = 0
    epoch_index: int = 0
    # Micro-batches of `epoch_index` already trained on; the epoch's shuffle is replayed from
    # `epoch_generator_state` and these are skipped.
    next_micro_index: int = 0
    epoch_generator_state: torch.Tensor | None = None
    best_score: float | None = None
    best_step: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    validations_without_improvement: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _contiguous_copy(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory; a contiguous CPU copy of each is safe.
    return {
        name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in weights.items()
    }


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loop: LoopState,
    best_weights: dict[str, torch.Tensor] | None,
) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file(_contiguous_copy(model.state_dict()), str(staging / WEIGHTS_FILE))
        if best_weights is not None:
            save_file(_contiguous_copy(best_weights), str(staging / BEST_WEIGHTS_FILE))
        torch.save(
            {
                "loop": asdict(loop),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "python_rng": list(random.getstate()[1]),
            },
            staging / STATE_FILE,
        )
        previous = folder.with_name(folder.name + ".old")
        if folder.exists():
            folder.rename(previous)
        staging.rename(folder)
        shutil.rmtree(previous, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def has_checkpoint(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file()


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[LoopState, dict[str, torch.Tensor] | None]:
    """Restore everything in place; return the loop state and the best weights so far."""
    state = torch.load(folder / STATE_FILE, weights_only=True)
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    random.setstate((3, tuple(state["python_rng"]), None))
    best_file = folder / BEST_WEIGHTS_FILE
    best_weights = load_file(str(best_file)) if best_file.is_file() else None
    return LoopState(**state["loop"]), best_weights


def remove_checkpoint(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(folder.with_name(folder.name + ".old"), ignore_errors=True)
