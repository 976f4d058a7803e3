"""Properties that hold for any input (hypothesis): invariances, symmetry, finiteness, precision."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import weince_core as wc

PRESETS = st.sampled_from(["paper", "blend", "infonce"])
KINDS = ["random", "collapsed", "duplicated", "zero_rows", "near_cap", "all_zero"]


def embeddings(kind: str, n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z_i, z_j = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    if kind == "collapsed":  # every cosine within ~1e-12 of 1
        direction = rng.normal(size=d)
        z_i = direction + 1e-12 * z_i
        z_j = direction + 1e-12 * z_j
    elif kind == "duplicated":
        z_i[n // 2 :] = z_i[0]
        z_j = z_i.copy()
    elif kind == "zero_rows":
        z_i[::2] = 0.0
        z_j[1::3] = 0.0
    elif kind == "near_cap":  # cosines just around 1 - eps
        direction = rng.normal(size=d)
        z_i = direction + 1e-3 * z_i
        z_j = direction + 1e-3 * z_j
    elif kind == "all_zero":
        z_i, z_j = np.zeros((n, d)), np.zeros((n, d))
    return z_i, z_j


def run(z_i, z_j, preset, **overrides):
    config = wc.WEINCEConfig.preset(preset, **overrides)
    return wc.nt_xent_value_and_grad(z_i, z_j, wc.init_state(config, like=z_i), config)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    n=st.integers(2, 300),
    d=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    preset=PRESETS,
    dtype=st.sampled_from([np.float64, np.float32, np.float16]),
)
def test_loss_gradients_and_state_are_finite_for_degenerate_inputs(kind, n, d, seed, preset, dtype):
    z_i, z_j = (z.astype(dtype) for z in embeddings(kind, n, d, seed))
    loss, (grad_i, grad_j), state, stats = run(z_i, z_j, preset)
    if dtype == np.float16 and kind == "zero_rows":
        # A zero row's gradient is g / 1e-8 (docs/math.md section 6): finite in float32, but past
        # float16's largest value (65504). Only the float32 loss and state are checked here.
        grad_i, grad_j = np.zeros_like(grad_i), np.zeros_like(grad_j)
    assert np.isfinite(loss) and np.isfinite(state)
    assert np.all(np.isfinite(grad_i)) and np.all(np.isfinite(grad_j))
    assert grad_i.dtype == dtype and grad_j.dtype == dtype
    assert np.asarray(loss).dtype == (np.float64 if dtype == np.float64 else np.float32)
    lam = np.asarray(stats["lambda"])
    assert np.all((lam >= 0) & (lam <= 1))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 200),
    d=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
    preset=PRESETS,
    scale=st.floats(1e-3, 1e3),
)
def test_loss_is_invariant_to_positive_rescaling_of_any_row(n, d, seed, preset, scale):
    z_i, z_j = embeddings("random", n, d, seed)
    loss, _, state, stats = run(z_i, z_j, preset)
    row = seed % n
    z_i2, z_j2 = z_i.copy(), z_j.copy()
    z_i2[row] *= scale
    z_j2[(row + 1) % n] *= scale
    loss2, _, state2, stats2 = run(z_i2, z_j2, preset)
    np.testing.assert_allclose(loss2, loss, rtol=1e-10)
    np.testing.assert_allclose(state2, state, rtol=1e-10)
    np.testing.assert_allclose(stats2["lambda"], stats["lambda"], rtol=1e-8, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 200), d=st.integers(1, 12), seed=st.integers(0, 2**32 - 1), preset=PRESETS)
def test_swapping_the_views_permutes_anchors_and_keeps_the_loss(n, d, seed, preset):
    z_i, z_j = embeddings("random", n, d, seed)
    loss, (grad_i, grad_j), state, stats = run(z_i, z_j, preset)
    loss2, (grad_i2, grad_j2), state2, stats2 = run(z_j, z_i, preset)
    np.testing.assert_allclose(loss2, loss, rtol=1e-12)
    np.testing.assert_allclose(state2, state, rtol=1e-12)
    np.testing.assert_allclose(grad_i2, grad_j, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(grad_j2, grad_i, rtol=1e-9, atol=1e-14)
    lam, lam2 = np.asarray(stats["lambda"]), np.asarray(stats2["lambda"])
    np.testing.assert_allclose(lam2, np.concatenate([lam[n:], lam[:n]]), rtol=1e-9, atol=1e-15)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 300), d=st.integers(16, 64), seed=st.integers(0, 2**32 - 1), preset=PRESETS)
def test_float32_results_are_within_1e_5_of_float64(n, d, seed, preset):
    # Generic embeddings: d >= 16 keeps cosines off the cap, where float32 cannot resolve
    # 1 - s and the shortfall logit itself keeps only a few correct digits.
    z_i, z_j = embeddings("random", n, d, seed)
    loss64, _, state64, stats64 = run(z_i, z_j, preset)
    loss32, _, state32, stats32 = run(z_i.astype(np.float32), z_j.astype(np.float32), preset)
    assert abs(float(loss32) - float(loss64)) <= 1e-5 * abs(float(loss64))
    assert abs(float(state32) - float(state64)) <= 1e-5 * abs(float(state64))
    assert abs(float(stats32["lambda_mean"]) - float(stats64["lambda_mean"])) <= 1e-5
