"""Degenerate batches of docs/math.md section 8 for the selection kernels' tests, and the rule
itself written plainly: a stable descending sort of the keys ``min(S, cap)`` (``-0.0`` as
``0.0``)."""

from __future__ import annotations

import numpy as np

CAP = float(np.float32(1.0 - 1e-3))
EPS = 1e-3  # of the row-pass tests: the cap 1 - EPS rounded to the dtype


def stable_top_k(
    x: np.ndarray, k: int, excluded: np.ndarray | None, cap: float = CAP
) -> np.ndarray:
    """The columns of the rule: a stable descending sort of ``min(x, cap)``, excluded last."""
    keys = np.minimum(x.astype(np.float64), cap) + 0.0  # + 0.0: -0.0 becomes 0.0
    if excluded is not None:
        np.put_along_axis(keys, excluded, -np.inf, axis=1)
    return np.argsort(-keys, axis=1, kind="stable")[:, :k]


def degenerate_rows(columns: int, seed: int) -> np.ndarray:
    """One row per degenerate batch of docs/math.md section 8 (and plain rows), float32."""
    rng = np.random.default_rng(seed)
    rows = [
        rng.normal(size=columns) / 3,  # distinct values
        rng.integers(-3, 4, size=columns) / 4,  # many equal values: ties straddle every cut
        np.where(rng.random(columns) < 0.5, 1.0, rng.random(columns)),  # half above the cap
        np.full(columns, 0.25),  # all equal
        np.where(rng.random(columns) < 0.5, -0.0, 0.0),  # -0.0 and 0.0: equal keys
        np.where(np.arange(columns) % 3 == 0, CAP, 1.0),  # at and above the cap: all tie
        np.where(rng.random(columns) < 0.3, -1.0, rng.integers(0, 2, size=columns) / 2),
        -np.abs(rng.normal(size=columns)),  # all negative
    ]
    return np.stack(rows).astype(np.float32)


def excluded_columns(rows: int, columns: int) -> np.ndarray:
    """Each row's anchor and positive (two-view layout, wrapped to the width)."""
    anchor = np.arange(rows) % columns
    return np.stack([anchor, (anchor + columns // 2) % columns], axis=1)


def row_pass_expected(x: np.ndarray, lam: np.ndarray, excluded, tau, beta_w, total_rows, blend):
    """``(P * dG/dS / R, logsumexp G)`` in NumPy float64, the cap rounded to ``x``'s dtype."""
    cap = float(x.dtype.type(1.0) - x.dtype.type(EPS))
    s, lam = x.astype(np.float64), lam.astype(np.float64)[:, None]
    distance = 1.0 - np.minimum(s, cap)
    logits = (1.0 - lam) * s / tau
    slope = np.broadcast_to((1.0 - lam) / tau, s.shape)
    if blend:
        logits = logits - lam * beta_w * np.log(distance)
        slope = slope + lam * beta_w * np.where(distance > 1.0 - cap, 1.0 / distance, 0.0)
    if excluded is not None:
        np.put_along_axis(logits, excluded, -np.inf, axis=1)
    peak = np.max(logits, axis=1, keepdims=True)
    lse = np.log(np.sum(np.exp(logits - peak), axis=1)) + peak[:, 0]
    return np.exp(logits - lse[:, None]) * slope / total_rows, lse
