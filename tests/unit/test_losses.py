"""Loss terms against values computed by hand."""

import math

import torch

from distillery.losses import hard_label_loss, soft_label_loss


def test_hard_label_cross_entropy() -> None:
    logits = torch.tensor([[2.0, 0.0]])
    expected = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert math.isclose(
        hard_label_loss(logits, torch.tensor([0]), "binary").item(), expected, rel_tol=1e-6
    )


def test_hard_label_regression_is_mse() -> None:
    outputs = torch.tensor([[1.0], [3.0]])
    loss = hard_label_loss(outputs, torch.tensor([2.0, 2.0]), "regression")
    assert math.isclose(loss.item(), 1.0, rel_tol=1e-6)


def softmax(values: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def test_kl_is_scaled_by_temperature_squared() -> None:
    student, teacher, temperature = [1.0, 0.0], [0.0, 2.0], 2.0
    p_teacher, p_student = softmax(teacher, temperature), softmax(student, temperature)
    kl = sum(t * math.log(t / s) for t, s in zip(p_teacher, p_student, strict=True))
    loss = soft_label_loss(
        torch.tensor([student]),
        torch.tensor([teacher]),
        problem_type="binary",
        temperature=temperature,
        loss_type="kl",
    )
    assert math.isclose(loss.item(), kl * temperature**2, rel_tol=1e-5)


def test_soft_cross_entropy_and_mse() -> None:
    student, teacher, temperature = [0.5, -0.5, 1.0], [1.0, 0.0, 0.0], 1.0
    p_teacher, p_student = softmax(teacher, temperature), softmax(student, temperature)
    cross_entropy = -sum(t * math.log(s) for t, s in zip(p_teacher, p_student, strict=True))
    mse = sum((t - s) ** 2 for t, s in zip(p_teacher, p_student, strict=True)) / 3
    kwargs = {"problem_type": "multiclass", "temperature": temperature}
    s, t = torch.tensor([student]), torch.tensor([teacher])
    assert math.isclose(
        soft_label_loss(s, t, loss_type="cross_entropy", **kwargs).item(),
        cross_entropy,
        rel_tol=1e-5,
    )
    assert math.isclose(soft_label_loss(s, t, loss_type="mse", **kwargs).item(), mse, rel_tol=1e-5)


def test_regression_soft_loss_ignores_temperature() -> None:
    loss = soft_label_loss(
        torch.tensor([[1.0]]), torch.tensor([[3.0]]), problem_type="regression", temperature=5.0
    )
    assert math.isclose(loss.item(), 4.0, rel_tol=1e-6)


def test_identical_outputs_give_zero_kl() -> None:
    logits = torch.tensor([[0.3, -1.2, 2.0]])
    loss = soft_label_loss(logits, logits.clone(), problem_type="multiclass", temperature=3.0)
    assert abs(loss.item()) < 1e-6
