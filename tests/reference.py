"""Reference helpers for the tests.

``frozen_loss`` is a plain NumPy float64 transcription of docs/math.md sections 2 and 3 with the
statistics frozen.

``lambda``, ``beta_t`` and the hard-negative columns are inputs here, so the result is a smooth
function of the embeddings whose true derivative is what the core's analytic gradient claims to
be (docs/math.md section 6). Finite differences of it check that gradient.
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


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def form_rows(form: str, inputs: dict, in_batch_negatives: bool = False):
    """A pairing form's rows in the core's column layout (docs/math.md section 9): ``(sim, positive,
    candidates)``, the last two boolean masks ``(R, C)``."""
    if form == "two_tower":
        u_x, u_y = _unit(inputs["x"]), _unit(inputs["y"])
        sim = np.concatenate([u_x @ u_y.T, u_y @ u_x.T])
        n = u_x.shape[0]
        positive = np.concatenate([np.eye(n, dtype=bool)] * 2)
        return sim, positive, np.ones_like(positive)
    if form == "explicit_negatives":
        u_q, u_k, u_n = (_unit(inputs[name]) for name in "qkn")
        rows = u_q.shape[0]
        against_n = np.einsum("ad,apd->ap", u_q, u_n) if u_n.ndim == 3 else u_q @ u_n.T
        if in_batch_negatives:  # [n..., k_0..k_{N-1}], the positive among the keys
            sim = np.concatenate([against_n, u_q @ u_k.T], axis=1)
            positive = np.zeros(sim.shape, dtype=bool)
            positive[np.arange(rows), against_n.shape[1] + np.arange(rows)] = True
        else:  # [k_a, n...]
            sim = np.concatenate([np.sum(u_q * u_k, axis=1)[:, None], against_n], axis=1)
            positive = np.zeros(sim.shape, dtype=bool)
            positive[:, 0] = True
        return sim, positive, np.ones_like(positive)
    if form == "multi_positive":
        u, labels = _unit(inputs["z"]), inputs["labels"]
        sim = u @ u.T
        own = np.eye(u.shape[0], dtype=bool)
        return sim, (labels[:, None] == labels[None, :]) & ~own, ~own
    raise ValueError(form)


def frozen_rows_loss(
    sim: np.ndarray,
    positive: np.ndarray,
    candidates: np.ndarray,
    lam: np.ndarray,
    beta_t: float,
    hard: np.ndarray | None,
    config: WEINCEConfig,
    scale: float | None = None,
) -> float:
    """docs/math.md sections 2, 3 and 9 on rows, with ``lambda``, ``beta_t`` and the hard negatives
    frozen: the mean over rows with a positive of the mean over their positives ``p`` of the
    cross-entropies (blend over the candidates; top-M over ``{p} ∪ H_a``). ``hard``: each
    row's hard-negative columns, ``-1`` for none."""
    inverse_tau = 1 / config.temperature if scale is None else scale
    shortfall = -np.log(1 - np.minimum(sim, 1 - config.eps))
    g = (1 - lam)[:, None] * sim * inverse_tau + lam[:, None] * config.beta_w * shortfall
    lse = _lse(np.where(candidates, g, -np.inf))
    terms = []
    for a in np.flatnonzero(positive.any(axis=1)):
        term = 0.0
        for p in np.flatnonzero(positive[a]):
            term += lse[a] - g[a, p]
            if hard is not None:
                columns = np.concatenate([[p], hard[a][hard[a] >= 0]])
                for weight, logits in (
                    (config.weibit_weight, beta_t * shortfall[a, columns]),
                    (config.softmax_weight, sim[a, columns] * inverse_tau),
                ):
                    if weight > 0:
                        term += weight * (_lse(logits[None, :])[0] - logits[0])
        terms.append(term / positive[a].sum())
    return float(np.mean(terms)) if terms else 0.0
