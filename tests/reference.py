"""Reference helpers for the tests.

``frozen_loss`` is a plain NumPy float64 transcription of SPEC.md sections 2 and 3 with the
statistics frozen.

``lambda``, ``beta_t`` and the hard-negative columns are inputs here, so the result is a smooth
function of the embeddings whose true derivative is what the core's analytic gradient claims to
be (SPEC section 6). Finite differences of it check that gradient.
"""

from __future__ import annotations

import numpy as np

from weince_core import WEINCEConfig


def _lse(x: np.ndarray) -> np.ndarray:
    peak = np.max(x, axis=1, keepdims=True)
    return np.log(np.sum(np.exp(x - peak), axis=1)) + peak[:, 0]


def frozen_loss(
    z_i: np.ndarray,
    z_j: np.ndarray,
    lam: np.ndarray,
    beta_t: float,
    hard: np.ndarray | None,
    config: WEINCEConfig,
) -> float:
    n = z_i.shape[0]
    z = np.concatenate([z_i, z_j])
    u = z / np.maximum(np.linalg.norm(z, axis=1), 1e-8)[:, None]
    s = u @ u.T
    rows = np.arange(2 * n)
    positive = (rows + n) % (2 * n)
    clip = np.minimum(s, 1 - config.eps)
    g = (1 - lam)[:, None] * s / config.temperature - lam[:, None] * config.beta_w * np.log(
        1 - clip
    )
    g[rows, rows] = -np.inf
    loss = np.mean(_lse(g) - g[rows, positive])
    if hard is not None:
        candidates = np.concatenate([s[rows, positive][:, None], np.take_along_axis(s, hard, 1)], 1)
        weibit = -beta_t * np.log(1 - np.minimum(candidates, 1 - config.eps))
        softmax = candidates / config.temperature
        loss += config.weibit_weight * np.mean(_lse(weibit) - weibit[:, 0])
        loss += config.softmax_weight * np.mean(_lse(softmax) - softmax[:, 0])
    return float(loss)


def numeric_gradient(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar function ``f`` at ``x``."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = h
        grad[index] = (f(x + step) - f(x - step)) / (2 * h)
    return grad


def plain_nt_xent(z_i: np.ndarray, z_j: np.ndarray, temperature: float) -> float:
    """The textbook NT-Xent (SimCLR) loss."""
    return frozen_loss(
        z_i, z_j, np.zeros(2 * z_i.shape[0]), 0.0, None, WEINCEConfig(temperature=temperature)
    )
