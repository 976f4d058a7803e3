"""The analytic gradient (docs/math.md section 6) against finite differences, every preset."""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import array_namespace
from reference import frozen_loss, numeric_gradient

import weince_core as wc

PRESETS = ["paper", "blend", "infonce"]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("n, d", [(6, 3), (24, 5)])
def test_analytic_gradient_matches_finite_differences(preset, n, d):
    rng = np.random.default_rng(n * 100 + d)
    # Small tails (min_tail, top_m) so that the hard-negative selection matters at this size.
    config = wc.WEINCEConfig.preset(preset, min_tail=8, top_m=5, beta_min_tail=16)
    z_i, z_j = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    state = wc.init_state(config, like=z_i)
    (
        _,
        (grad_i, grad_j),
        _,
        _,
    ) = wc.nt_xent_value_and_grad(z_i, z_j, state, config)
    _, _, stats, residuals = wc.nt_xent_forward(z_i, z_j, state, config)
    frozen = residuals.rows
    hard = None if frozen.top_index is None else np.asarray(frozen.top_index)
    args = (np.asarray(stats["lambda"]), float(frozen.beta_t), hard, config)
    numeric_i = numeric_gradient(lambda x: frozen_loss(x, z_j, *args), z_i)
    numeric_j = numeric_gradient(lambda x: frozen_loss(z_i, x, *args), z_j)
    np.testing.assert_allclose(grad_i, numeric_i, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(grad_j, numeric_j, rtol=1e-6, atol=1e-9)


def test_forward_value_equals_the_frozen_transcription_of_the_spec():
    rng = np.random.default_rng(3)
    config = wc.WEINCEConfig.paper(min_tail=8, top_m=5, beta_min_tail=16)
    z_i, z_j = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    loss, _, stats, residuals = wc.nt_xent_forward(
        z_i, z_j, wc.init_state(config, like=z_i), config
    )
    expected = frozen_loss(
        z_i,
        z_j,
        np.asarray(stats["lambda"]),
        float(residuals.rows.beta_t),
        np.asarray(residuals.rows.top_index),
        config,
    )
    assert abs(float(loss) - expected) <= 1e-12 * abs(expected)


def test_gradient_scales_with_the_upstream_gradient_and_keeps_the_input_dtype():
    rng = np.random.default_rng(4)
    z_i = rng.normal(size=(8, 3)).astype(np.float32)
    z_j = rng.normal(size=(8, 3)).astype(np.float32)
    config = wc.WEINCEConfig.paper()
    _, _, _, residuals = wc.nt_xent_forward(z_i, z_j, wc.init_state(config, like=z_i), config)
    once = wc.nt_xent_backward(residuals, config, dtype=np.float16)
    twice = wc.nt_xent_backward(residuals, config, grad_output=np.float32(2.0))
    assert once[0].dtype == np.float16
    np.testing.assert_allclose(twice[0], 2 * once[0].astype(np.float32), rtol=2e-3, atol=1e-6)


@pytest.mark.parametrize("preset", PRESETS)
def test_s_is_kept_only_while_small_and_the_gradient_is_the_same_either_way(preset):
    rng = np.random.default_rng(5)
    config = wc.WEINCEConfig.preset(preset, min_tail=8, top_m=5, beta_min_tail=16)
    for n, d, kept in [(8, 4, True), (8, 3, False)]:  # 2N = 16 against 4 d = 16, 12
        z_i, z_j = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        _, _, _, residuals = wc.nt_xent_forward(z_i, z_j, wc.init_state(config, like=z_i), config)
        assert (residuals.sim is not None) == kept
        if kept:
            assert residuals.sim.shape == (2 * n, 2 * n)
            recomputed = wc.nt_xent_backward(residuals._replace(sim=None), config)
            np.testing.assert_array_equal(wc.nt_xent_backward(residuals, config), recomputed)


@pytest.mark.parametrize("preset", PRESETS)
def test_the_core_reads_tensors_that_require_grad_as_values(preset):
    # Called directly on PyTorch tensors in a training loop (for a logged loss, say), the core
    # runs and gives the same numbers; its gradient is nt_xent_backward's, not autograd's.
    torch = pytest.importorskip("torch")
    config = wc.WEINCEConfig.preset(preset)
    rng = np.random.default_rng(6)
    z_i, z_j = (torch.asarray(rng.normal(size=(64, 16))) for _ in range(2))
    state = wc.init_state(config, like=z_i)
    plain = wc.nt_xent(z_i, z_j, state, config)
    tracked = wc.nt_xent(z_i.requires_grad_(), z_j.requires_grad_(), state, config)
    assert not tracked[0].requires_grad
    assert torch.equal(tracked[0], plain[0]) and torch.equal(tracked[1], plain[1])


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict", "torch", "jax.numpy"])
@pytest.mark.parametrize("preset", PRESETS)
def test_value_and_grad_in_one_pass_equals_forward_then_backward(xp_name, preset):
    # nt_xent_value_and_grad reuses the forward's S, softmax and distances; nt_xent_backward
    # recomputes them: the two must agree to rounding, on every namespace.
    xp = pytest.importorskip(xp_name)
    rng = np.random.default_rng(7)
    config = wc.WEINCEConfig.preset(preset, min_tail=8, top_m=5, beta_min_tail=16)
    z_i, z_j = rng.normal(size=(40, 6)), rng.normal(size=(40, 6))
    z_i[3, :] = z_j[3, :]  # a positive pair at the cap: its shortfall slope is 0
    z_i, z_j = xp.asarray(z_i), xp.asarray(z_j)
    state = wc.init_state(config, like=z_i)
    loss, grads, new_state, stats = wc.nt_xent_value_and_grad(z_i, z_j, state, config)
    loss_2, new_state_2, stats_2, residuals = wc.nt_xent_forward(z_i, z_j, state, config)
    grads_2 = wc.nt_xent_backward(residuals, config, dtype=z_i.dtype)
    pairs = [(loss, loss_2), (new_state, new_state_2), *zip(grads, grads_2, strict=True)]
    for one_pass, two_passes in pairs:
        np.testing.assert_allclose(
            np.asarray(one_pass), np.asarray(two_passes), rtol=1e-12, atol=1e-15
        )
    for key, value in stats.items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(stats_2[key]), err_msg=key)


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict", "torch", "jax.numpy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shortfall_slope_is_zero_exactly_where_the_similarity_is_clamped(xp_name, dtype):
    xp = pytest.importorskip(xp_name)
    config = wc.WEINCEConfig.paper()
    cap = np.asarray(1.0 - config.eps, dtype=dtype)
    sim = np.asarray(
        [
            np.nextafter(cap, 0, dtype=dtype),
            np.nextafter(np.nextafter(cap, 0, dtype=dtype), 0, dtype=dtype),
            cap,
            np.nextafter(cap, 2, dtype=dtype),
            1.0,
            1.0 + 1e-6,
            0.5,
            0.25,
            -1.0,
        ],
        dtype=dtype,
    )
    with np.errstate(divide="ignore"):  # at s = 1, in the branch that where() leaves out
        expected = np.where(sim >= cap, 0.0, 1.0 / (1.0 - sim)).astype(dtype)
    array = xp.asarray(sim)
    slope = wc.rows.shortfall_slope(array, config, array_namespace(array))
    np.testing.assert_array_equal(np.asarray(slope), expected)
