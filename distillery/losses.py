"""Training losses: the hard-label loss and the soft-label distillation term.

Each function takes raw model outputs (logits, or one value per row for regression) and returns
a scalar tensor averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hard_label_loss(
    outputs: torch.Tensor, targets: torch.Tensor, problem_type: str
) -> torch.Tensor:
    """Cross-entropy on class ids, or mean squared error on regression targets."""
    if problem_type == "regression":
        return F.mse_loss(outputs.squeeze(-1), targets.float())
    return F.cross_entropy(outputs, targets)


def soft_label_loss(
    student_outputs: torch.Tensor,
    teacher_outputs: torch.Tensor,
    *,
    problem_type: str,
    temperature: float,
    loss_type: str = "kl",
) -> torch.Tensor:
    """Match the teacher's softened outputs.

    - `kl`: KL(teacher_T || student_T) x T², as in Hinton et al. (2015) and DistilBERT; the T²
      keeps the gradient scale independent of the temperature.
    - `cross_entropy`: soft-target cross-entropy, AutoMM's default (KL plus the teacher's entropy,
      which has no gradient), not rescaled, as AutoMM does.
    - `mse`: squared error between the softened probabilities.
    Regression has nothing to soften: the student's values regress onto the teacher's.
    """
    if problem_type == "regression":
        return F.mse_loss(student_outputs.squeeze(-1), teacher_outputs.squeeze(-1).float())
    student_log_probs = F.log_softmax(student_outputs / temperature, dim=-1)
    teacher_probs = F.softmax(teacher_outputs.float() / temperature, dim=-1)
    if loss_type == "kl":
        return F.kl_div(student_log_probs, teacher_probs, reduction="batchmean") * temperature**2
    if loss_type == "cross_entropy":
        return -(teacher_probs * student_log_probs).sum(dim=-1).mean()
    if loss_type == "mse":
        return F.mse_loss(student_log_probs.exp(), teacher_probs)
    raise ValueError(f"unknown soft label loss type {loss_type!r}")
