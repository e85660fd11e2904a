"""Loss terms against values computed by hand."""

import math

import torch

from distillery.losses import (
    attention_loss,
    feature_loss,
    hard_label_loss,
    masked_mean_pool,
    rkd_angle_loss,
    rkd_distance_loss,
    soft_label_loss,
    token_hidden_state_loss,
)


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


def test_feature_losses_by_hand() -> None:
    student, teacher = (
        torch.tensor([[1.0, 0.0], [0.0, 2.0]]),
        torch.tensor([[0.0, 1.0], [0.0, 1.0]]),
    )
    # squared errors: row 1: 1 + 1, row 2: 0 + 1 -> mean over 4 values = 0.75
    assert math.isclose(feature_loss(student, teacher, "mse").item(), 0.75, rel_tol=1e-6)
    # cosines: 0 and 1 -> mean of (1 - cos) = 0.5
    assert math.isclose(feature_loss(student, teacher, "cosine").item(), 0.5, rel_tol=1e-6)


def test_rkd_distance_by_hand() -> None:
    # Three points on a line at 0, 1, 3 (student) vs 0, 2, 4 (teacher); distances normalised by
    # their mean over ordered pairs: student (1, 3, 2)/2, teacher (2, 4, 2)/(8/3).
    student = torch.tensor([[0.0], [1.0], [3.0]])
    teacher = torch.tensor([[0.0], [2.0], [4.0]])
    s = [1 / 2, 3 / 2, 2 / 2]
    t = [2 / (8 / 3), 4 / (8 / 3), 2 / (8 / 3)]
    differences = [abs(a - b) for a, b in zip(s, t, strict=True)]
    # smooth L1 (beta 1) over the 9 entries of the matrix: each off-diagonal pair twice
    expected = 2 * sum(0.5 * d * d if d < 1 else d - 0.5 for d in differences) / 9
    assert math.isclose(rkd_distance_loss(student, teacher).item(), expected, rel_tol=1e-5)


def test_rkd_is_scale_free_and_zero_for_similar_shapes() -> None:
    points = torch.randn(5, 4)
    assert rkd_distance_loss(points * 3.0, points).item() < 1e-6
    assert rkd_angle_loss(points * 3.0, points).item() < 1e-6
    assert rkd_angle_loss(torch.randn(5, 4), points).item() > 0


def test_rkd_angle_by_hand() -> None:
    # Right angle at the origin for the student, 45 degrees for the teacher.
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    loss = rkd_angle_loss(student, teacher)
    assert loss.item() > 0
    assert rkd_angle_loss(teacher, teacher).item() == 0.0


def test_masked_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0], [3.0], [100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert masked_mean_pool(hidden, mask).item() == 2.0


def test_token_hidden_state_loss_skips_padding() -> None:
    student = torch.tensor([[[1.0], [5.0]]])
    teacher = torch.tensor([[[0.0], [-5.0]]])
    loss = token_hidden_state_loss(student, teacher, torch.tensor([[1, 0]]), "mse")
    assert loss.item() == 1.0


def test_attention_loss_by_hand() -> None:
    # One head, two queries; the second query is padding and does not count.
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    student = torch.tensor([[[[0.25, 0.75], [0.0, 1.0]]]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    loss = attention_loss(student, teacher, torch.tensor([[1, 0]]))
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    assert attention_loss(teacher, teacher, torch.tensor([[1, 1]])).item() < 1e-6
