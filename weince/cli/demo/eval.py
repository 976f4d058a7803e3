"""Frozen-feature evaluation: cosine k-NN and a linear probe, fitted on train, scored on test."""

from __future__ import annotations

import warnings

import numpy as np


def metric_names(knn_ks: tuple[int, ...]) -> list[str]:
    """The metrics ``evaluate`` returns, in table order.

    Args:
        knn_ks: the ``k`` of each k-NN metric.

    Returns:
        ``knn_{k}`` for each ``k``, then ``linear``.
    """
    return [f"knn_{k}" for k in knn_ks] + ["linear"]


def metric_label(name: str) -> str:
    """A metric's column title: ``knn_5`` -> ``kNN k=5``.

    Args:
        name: a name of ``metric_names``.

    Returns:
        The title.
    """
    return "linear probe" if name == "linear" else f"kNN k={name.split('_')[1]}"


def evaluate(
    features_train: np.ndarray,
    y_train: np.ndarray,
    features_test: np.ndarray,
    y_test: np.ndarray,
    knn_ks: tuple[int, ...],
) -> dict[str, float]:
    """Test accuracies: ``knn_{k}`` (majority vote of the ``k`` nearest by cosine) and ``linear``.

    The linear probe is scikit-learn's multinomial logistic regression (L2, ``C = 1``) on
    standardised features, the usual frozen-feature protocol at this scale.

    Args:
        features_train: the training images' features, ``(n, f)``.
        y_train: their labels.
        features_test: the test images' features.
        y_test: their labels.
        knn_ks: the ``k`` of each k-NN metric.

    Returns:
        The accuracy of each metric of ``metric_names``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features_train = np.asarray(features_train, dtype=np.float64)
    features_test = np.asarray(features_test, dtype=np.float64)
    if not (np.all(np.isfinite(features_train)) and np.all(np.isfinite(features_test))):
        raise ValueError("the features hold NaN or infinite values: the training diverged")
    scores = {}
    for k in knn_ks:
        knn = KNeighborsClassifier(
            n_neighbors=min(k, len(y_train)), metric="cosine", algorithm="brute"
        )
        scores[f"knn_{k}"] = float(knn.fit(features_train, y_train).score(features_test, y_test))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    with warnings.catch_warnings():
        # A probe that stops at max_iter is still a probe; its score is what it is.
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores["linear"] = float(probe.fit(features_train, y_train).score(features_test, y_test))
    return scores
