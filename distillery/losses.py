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


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, loss_type: str) -> torch.Tensor:
    """Match feature vectors (last dimension): `mse`, or `cosine` = mean of 1 - cos."""
    teacher = teacher.float()
    if loss_type == "mse":
        return F.mse_loss(student, teacher)
    if loss_type == "cosine":
        return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    raise ValueError(f"unknown feature loss type {loss_type!r}")


def _normalized_distances(embeddings: torch.Tensor) -> torch.Tensor:
    distances = torch.cdist(embeddings, embeddings)
    positive = distances[distances > 0]
    return distances / (positive.mean() if positive.numel() else 1.0)


def rkd_distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Relational KD, distance-wise (Park et al., 2019): the batch's pairwise distances, each
    normalised by its mean, should agree (smooth L1). Widths may differ: only geometry matters."""
    with torch.no_grad():
        teacher_distances = _normalized_distances(teacher.float())
    return F.smooth_l1_loss(_normalized_distances(student), teacher_distances)


def _angles(embeddings: torch.Tensor) -> torch.Tensor:
    differences = F.normalize(embeddings.unsqueeze(0) - embeddings.unsqueeze(1), p=2, dim=2)
    return torch.bmm(differences, differences.transpose(1, 2)).reshape(-1)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Relational KD, angle-wise (Park et al., 2019): the cosines of the angles each triple of
    rows forms should agree (smooth L1)."""
    with torch.no_grad():
        teacher_angles = _angles(teacher.float())
    return F.smooth_l1_loss(_angles(student), teacher_angles)


def masked_mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def token_hidden_state_loss(
    student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor, loss_type: str
) -> torch.Tensor:
    """Token-by-token hidden-state loss over real (unpadded) tokens; both sides must share
    the tokenization."""
    keep = attention_mask.bool()
    return feature_loss(student[keep], teacher[keep], loss_type)


def attention_loss(
    student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """KL(teacher || student) between attention distributions [batch, heads, query, key],
    averaged over real query tokens and heads (padding keys already carry ~0 probability)."""
    log_student = torch.log(student.float().clamp(min=1e-12))
    teacher = teacher.float()
    pointwise = teacher * (torch.log(teacher.clamp(min=1e-12)) - log_student)
    per_query = pointwise.sum(dim=-1)  # [batch, heads, query]
    query_mask = attention_mask[:, None, :].to(per_query.dtype)
    return (per_query * query_mask).sum() / (query_mask.sum() * per_query.shape[1])
