"""Edge cases of the pairing forms: multi-positive labels with one member, one label for all,
no label shared, labels not contiguous; the same statistics keys in every form."""

from __future__ import annotations

import numpy as np
import pytest
from forms_cases import call_form
from reference import form_rows, frozen_rows_loss

import weince_core as wc

CONFIG = wc.WEINCEConfig.paper(min_tail=8, top_m=5, beta_min_tail=16)


def _run(z, labels, config=CONFIG, xp=np):
    z, labels = xp.asarray(z), xp.asarray(labels)
    state = wc.init_state(config, like=z)
    return wc.multi_positive_value_and_grad(z, labels, state, config)


def test_a_label_with_one_member_is_an_anchor_without_positive():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(13, 4))
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6])  # row 12 alone
    state = wc.init_state(CONFIG, like=z)
    loss, _, stats, residuals = wc.multi_positive_forward(z, labels, state, CONFIG)
    lam, rho = np.asarray(stats["lambda"]), np.asarray(stats["rho"])
    # It has negatives: its gate is computed and its rho enters rho0 ...
    assert np.isfinite(rho[12]) and 0 < lam[12] < 1
    assert float(stats["rho0"]) == np.sort(rho)[round(CONFIG.quantile * 12)]
    # ... but it adds nothing to the loss: the mean over the 12 rows with a positive.
    sim, positive, candidates = form_rows("multi_positive", {"z": z, "labels": labels})
    hard = np.asarray(residuals.rows.top_index)
    beta_t = float(residuals.rows.beta_t)
    expected = frozen_rows_loss(sim, positive, candidates, lam, beta_t, hard, CONFIG)
    assert abs(float(loss) - expected) <= 1e-12 * expected
    with_row_12 = np.mean(
        [frozen_rows_loss(sim[a : a + 1], positive[a : a + 1], candidates[a : a + 1],
                          lam[a : a + 1], beta_t, hard[a : a + 1], CONFIG) for a in range(12)]
    )  # fmt: skip
    assert abs(float(loss) - with_row_12) <= 1e-12 * expected


def test_one_label_for_all_rows_means_no_negatives():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(6, 4))
    loss, (g_z,), state, stats = _run(z, np.full(6, 5))
    assert np.all(np.asarray(stats["lambda"]) == 0)
    assert np.all(np.isnan(np.asarray(stats["rho"]))) and np.isnan(float(stats["rho0"]))
    assert float(state) == CONFIG.beta_init and not bool(stats["beta_updated"])
    assert float(stats["loss_weibit"]) == 0 and float(stats["loss_softmax"]) == 0
    # The main term over positives only: lse over the other rows minus their mean logit.
    u = z / np.linalg.norm(z, axis=1, keepdims=True)
    logits = u @ u.T / CONFIG.temperature
    np.fill_diagonal(logits, -np.inf)
    lse = np.log(np.sum(np.exp(logits), axis=1))
    mean_positive = (np.sum(np.where(np.isinf(logits), 0, logits), axis=1)) / 5
    assert abs(float(loss) - float(np.mean(lse - mean_positive))) <= 1e-12 * abs(float(loss))
    assert np.all(np.isfinite(g_z))


def test_no_shared_label_means_no_positives_and_a_zero_loss():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(40, 4))
    config = CONFIG.replace(beta_min_tail=64)
    loss, (g_z,), _, stats = _run(z, np.arange(40), config)
    assert float(loss) == 0 and np.all(np.asarray(g_z) == 0)
    # Every anchor still has negatives: gates and the beta_t pool are computed.
    assert np.all(np.isfinite(np.asarray(stats["lambda"])))
    assert np.isfinite(float(stats["beta_hat"]))


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict", "torch", "jax.numpy"])
def test_labels_are_compared_for_equality_only(xp_name):
    xp = pytest.importorskip(xp_name)
    rng = np.random.default_rng(4)
    z = rng.normal(size=(24, 5))
    labels = rng.integers(0, 6, size=24)
    relabelled = 37 * labels - 250  # not contiguous, some negative
    first = _run(z, labels, xp=xp)
    second = _run(z, relabelled, xp=xp)
    np.testing.assert_array_equal(np.asarray(first[0]), np.asarray(second[0]))
    np.testing.assert_array_equal(np.asarray(first[1][0]), np.asarray(second[1][0]))
    for key, value in first[3].items():
        np.testing.assert_array_equal(np.asarray(value), np.asarray(second[3][key]), key)


def test_every_form_reports_the_same_statistics():
    rng = np.random.default_rng(5)
    inputs = {
        "two_view": {"z_i": rng.normal(size=(6, 3)), "z_j": rng.normal(size=(6, 3))},
        "two_tower": {"x": rng.normal(size=(6, 3)), "y": rng.normal(size=(6, 3))},
        "explicit_negatives": {
            "q": rng.normal(size=(6, 3)),
            "k": rng.normal(size=(6, 3)),
            "n": rng.normal(size=(20, 3)),
        },
        "multi_positive": {"z": rng.normal(size=(12, 3)), "labels": np.arange(12) % 4},
    }
    keys = None
    for form, arrays in inputs.items():
        state = wc.init_state(CONFIG, like=arrays[next(iter(arrays))])
        _, _, _, stats = call_form(form, arrays, state, CONFIG)
        rows = {"two_tower": 12}.get(form, next(iter(arrays.values())).shape[0])
        rows = 12 if form == "two_view" else rows
        assert stats["lambda"].shape == (rows,), form
        keys = keys or set(stats)
        assert set(stats) == keys, form


def test_two_view_names_are_the_nt_xent_functions():
    assert wc.two_view_value_and_grad is wc.nt_xent_value_and_grad
    assert wc.two_view_forward is wc.nt_xent_forward
    assert wc.two_view_backward is wc.nt_xent_backward
    assert wc.two_view is wc.nt_xent
