"""With ``lambda = 0`` WEINCE is NT-Xent: the ``infonce`` preset and every zero-gate path."""

from __future__ import annotations

import numpy as np
import pytest
from reference import numeric_gradient, plain_nt_xent

import weince_core as wc


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 6)), rng.normal(size=(16, 6))


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_infonce_preset_is_the_textbook_nt_xent(pair, temperature):
    z_i, z_j = pair
    config = wc.WEINCEConfig.infonce(temperature=temperature)
    state = wc.init_state(config, like=z_i)
    loss, (grad_i, _), new_state, stats = wc.nt_xent_value_and_grad(z_i, z_j, state, config)
    expected = plain_nt_xent(z_i, z_j, temperature)
    assert abs(float(loss) - expected) <= 1e-13 * expected
    numeric = numeric_gradient(lambda x: plain_nt_xent(x, z_j, temperature), z_i)
    np.testing.assert_allclose(grad_i, numeric, rtol=1e-6, atol=1e-10)
    assert float(new_state) == config.beta_init
    assert np.all(np.asarray(stats["lambda"]) == 0)


def test_a_gate_that_underflows_to_zero_gives_infonce_exactly(pair):
    z_i, z_j = pair
    # sigma(-1e4) is exactly 0 in float64, so lambda = 0 through the blend formulas.
    closed = wc.WEINCEConfig.blend(aic_margin=1e4)
    baseline = wc.WEINCEConfig.infonce()
    state = wc.init_state(closed, like=z_i)
    loss, grads, _, stats = wc.nt_xent_value_and_grad(z_i, z_j, state, closed)
    loss0, grads0, _, _ = wc.nt_xent_value_and_grad(z_i, z_j, state, baseline)
    assert np.all(np.asarray(stats["lambda"]) == 0)
    assert float(loss) == float(loss0)
    np.testing.assert_array_equal(grads[0], grads0[0])
    np.testing.assert_array_equal(grads[1], grads0[1])


def test_blended_logits_with_zero_lambda_are_the_softmax_logits():
    rng = np.random.default_rng(1)
    sim = np.clip(rng.normal(size=(5, 7)) / 3, -1, 1)
    logits, _ = wc.rows._blend(sim, np.zeros(5), wc.WEINCEConfig.blend(), np)
    np.testing.assert_array_equal(logits, sim / 0.5)
