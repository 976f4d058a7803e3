"""Each pairing form equals the two-view form (or CLIP's cross-entropy) where docs/math.md section 9
says it does, to 1e-12 in float64."""

from __future__ import annotations

import numpy as np
import pytest

import weince_core as wc
from weince_core.testing import assert_close_normwise

PRESETS = ["paper", "blend", "infonce"]
RTOL = 1e-12
STATS = ("lambda", "rho", "d_aic", "rho0", "beta_t", "beta_updated", "loss_weibit")


def _config(preset: str) -> wc.WEINCEConfig:
    # Small tails and pools so that the selections and the beta_t fit matter at this size.
    return wc.WEINCEConfig.preset(preset, min_tail=8, top_m=5, beta_min_tail=64)


def _views(seed: int, n: int = 20, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z_i = rng.normal(size=(n, d))
    return z_i, z_i + 0.3 * rng.normal(size=(n, d))  # close pairs: lambda and beta_t move


def _assert_same(actual, expected, what: str) -> None:
    assert_close_normwise(actual, expected, RTOL, what, equal_nan=True)


def _two_view(z_i, z_j, config, steps: int = 2):
    """Per step ``(loss, (g_i, g_j), state, stats)`` of the two-view form, the state carried."""
    state = wc.init_state(config, like=z_i)
    results = []
    for t in range(steps):
        a, b = (z_i, z_j) if t == 0 else (z_j, z_i)
        loss, grads, state, stats = wc.two_view_value_and_grad(a, b, state, config)
        results.append((loss, grads, state, stats))
    return results


@pytest.mark.parametrize("preset", PRESETS)
def test_multi_positive_with_the_pairs_as_labels_is_the_two_view_form(preset):
    config = _config(preset)
    z_i, z_j = _views(1)
    n = z_i.shape[0]
    labels = np.concatenate([np.arange(n), np.arange(n)])
    state = wc.init_state(config, like=z_i)
    for t, (loss, (g_i, g_j), carried, stats) in enumerate(_two_view(z_i, z_j, config)):
        z = np.concatenate([z_i, z_j]) if t == 0 else np.concatenate([z_j, z_i])
        m_loss, (g_z,), state, m_stats = wc.multi_positive_value_and_grad(z, labels, state, config)
        _assert_same(m_loss, loss, f"step {t} loss")
        _assert_same(g_z, np.concatenate([g_i, g_j]), f"step {t} gradient")
        _assert_same(state, carried, f"step {t} state")
        for key in STATS:
            _assert_same(m_stats[key], stats[key], f"step {t} {key}")
    if preset == "paper":
        assert bool(stats["beta_updated"]), "the case should move beta_t"


def _paired_rows(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The two-view rows of ``z = [z_i; z_j]`` as explicit paired negatives: query ``a`` is
    row ``a``, its key the positive ``(a + N) mod 2N``, its ``2N - 2`` negatives the other rows
    in ascending order (the two-view columns' order); and those rows' indices."""
    total = z.shape[0]
    positive = (np.arange(total) + total // 2) % total
    others = np.array(
        [[b for b in range(total) if b not in (a, positive[a])] for a in range(total)]
    )
    return z, z[positive], z[others], others


@pytest.mark.parametrize("preset", PRESETS)
def test_explicit_paired_negatives_holding_the_other_rows_are_the_two_view_form(preset):
    config = _config(preset)
    z_i, z_j = _views(2)
    n = z_i.shape[0]
    state = wc.init_state(config, like=z_i)
    for t, (loss, (g_i, g_j), carried, stats) in enumerate(_two_view(z_i, z_j, config)):
        z = np.concatenate([z_i, z_j]) if t == 0 else np.concatenate([z_j, z_i])
        q, k, negatives, others = _paired_rows(z)
        e_loss, (g_q, g_k, g_n), state, e_stats = wc.explicit_negatives_value_and_grad(
            q, k, negatives, state, config
        )
        # Every row of z appears as a query, as a key and as negatives: its gradient is the sum.
        g_z = g_q.copy()
        np.add.at(g_z, (np.arange(2 * n) + n) % (2 * n), g_k)
        np.add.at(g_z, others.reshape(-1), g_n.reshape(-1, z.shape[1]))
        _assert_same(e_loss, loss, f"step {t} loss")
        _assert_same(g_z, np.concatenate([g_i, g_j]), f"step {t} gradient")
        _assert_same(state, carried, f"step {t} state")
        for key in STATS:
            _assert_same(e_stats[key], stats[key], f"step {t} {key}")


def _clip_loss(x: np.ndarray, y: np.ndarray, scale: float) -> float:
    """CLIP's symmetric cross-entropy, directly: ``(CE(s U_x U_y^T, diag) + CE(s U_y U_x^T,
    diag)) / 2``."""
    u_x = x / np.linalg.norm(x, axis=1, keepdims=True)
    u_y = y / np.linalg.norm(y, axis=1, keepdims=True)
    logits = scale * u_x @ u_y.T

    def cross_entropy(z: np.ndarray) -> float:
        peak = z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z - peak).sum(axis=1)) + peak[:, 0]
        return float(np.mean(lse - np.diag(z)))

    return (cross_entropy(logits) + cross_entropy(logits.T)) / 2


@pytest.mark.parametrize("scale", [1 / 0.07, 2.0, 100.0])
def test_two_tower_at_lambda_zero_is_clips_cross_entropy(scale):
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(16, 8)), rng.normal(size=(16, 8))
    config = wc.WEINCEConfig.infonce()
    state = wc.init_state(config, like=x)
    loss, grads, _, stats = wc.two_tower_value_and_grad(
        x, y, state, config, scale=np.asarray(scale)
    )
    assert np.all(np.asarray(stats["lambda"]) == 0)
    _assert_same(loss, _clip_loss(x, y, scale), "loss")
    torch = pytest.importorskip("torch")
    tx, ty = torch.asarray(x, requires_grad=True), torch.asarray(y, requires_grad=True)
    ts = torch.asarray(scale, dtype=torch.float64, requires_grad=True)
    logits = ts * torch.nn.functional.normalize(tx) @ torch.nn.functional.normalize(ty).T
    target = torch.arange(16)
    ce = torch.nn.functional.cross_entropy
    clip = (ce(logits, target) + ce(logits.T, target)) / 2
    clip.backward()
    for name, ours, theirs in zip("xy", grads[:2], (tx.grad, ty.grad), strict=True):
        _assert_same(ours, theirs.numpy(), f"d/d{name}")
    _assert_same(grads[2], ts.grad.numpy(), "d/dscale")


def test_two_tower_without_a_scale_uses_one_over_tau():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5))
    config = wc.WEINCEConfig.paper(min_tail=8, top_m=5, beta_min_tail=64)
    state = wc.init_state(config, like=x)
    implicit = wc.two_tower_value_and_grad(x, y, state, config)
    explicit = wc.two_tower_value_and_grad(
        x, y, state, config, scale=np.asarray(1 / config.temperature)
    )
    _assert_same(implicit[0], explicit[0], "loss")
    for ours, theirs in zip(implicit[1], explicit[1], strict=True):
        _assert_same(ours, theirs, "gradient")
    assert implicit[1][2].shape == ()  # dL/dscale at 1 / tau, an array as for a given scale
