import numpy as np

from distillery.metrics import classification_metrics, regression_metrics, roc_auc


def test_binary_metrics_by_hand() -> None:
    true = np.array([1, 1, 0, 0])
    probabilities = np.array([[0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.4, 0.6]])
    metrics = classification_metrics(true, probabilities)
    assert metrics["accuracy"] == 0.5
    # predicted [1, 0, 0, 1]: one true positive, one false positive, one false negative
    assert metrics["f1"] == 0.5
    # positive scores 0.8, 0.4 vs negatives 0.3, 0.6: 3 of 4 pairs ordered right
    assert metrics["roc_auc"] == 0.75


def test_roc_auc_ties_count_half() -> None:
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5
    assert roc_auc(np.array([1, 1]), np.array([0.1, 0.9])) is None


def test_regression_metrics() -> None:
    metrics = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert np.isclose(metrics["rmse"], np.sqrt(4 / 3))
    assert np.isclose(metrics["mae"], 2 / 3)
