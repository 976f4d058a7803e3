"""The exact-arithmetic rules of the math page, one at a time, on every backend: ties by the
lower column under the key ``clip_s(S)``, copies canonicalised, degenerate tails decided by
all-equal shortfalls, non-finite negatives leaving ``beta_t``, products at float32 accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_api_compat import array_namespace

import weince_core as wc
from weince_core import WEINCEConfig, _fast_torch, ops, stats

CAP = 1.0 - 1e-6


def stable_top_k_columns(x: np.ndarray, k: int, excluded: np.ndarray | None) -> np.ndarray:
    """The rule, written plainly: a stable descending sort of ``min(x, cap)`` (``-0.0 == 0.0``),
    the cap rounded to ``x``'s dtype."""
    keys = np.minimum(x, x.dtype.type(CAP)) + 0.0
    if excluded is not None:
        np.put_along_axis(keys, excluded, -np.inf, axis=1)
    return np.argsort(-keys, axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("k", [1, 5, 17, 39])
def test_top_k_takes_tied_columns_in_column_order(backend, k):
    dtype = "float64" if backend.float64 else "float32"
    rng = np.random.default_rng(k)
    x = rng.integers(-3, 4, size=(9, 40)) / 4.0  # many ties at every cut
    x[0] = 0.0
    x[0, ::3] = -0.0  # equal keys, other bits
    x[1, 10:30] = 1.0  # above the cap: ties with the cap itself
    x[1, 5] = CAP
    x[2] = 1.0
    excluded = np.stack([np.arange(9), (np.arange(9) + 7) % 40], axis=1)
    array = backend.asarray(x, dtype)
    xp = array_namespace(array)
    excluded_array = xp.asarray(excluded, device=wc.ops.device(array))
    top, columns = ops.top_k(array, k, xp, excluded=excluded_array, cap=CAP)
    held = backend.to_numpy(array).astype(dtype)  # x as the backend holds it
    expected = stable_top_k_columns(held, k, excluded)
    np.testing.assert_array_equal(backend.to_numpy(columns), expected)
    np.testing.assert_array_equal(backend.to_numpy(top), np.take_along_axis(held, expected, 1))


def test_torch_exact_selection_orders_ties_by_column_on_any_device():
    torch = pytest.importorskip("torch")
    from weince_core._fast_torch import exact_top_k_columns

    x = np.random.default_rng(0).integers(-2, 3, size=(6, 50)) / 2.0
    x[0, ::2] = -0.0
    for dtype in (torch.float32, torch.float64):  # the 64-bit key of a GPU; a stable sort
        columns = exact_top_k_columns(torch.tensor(x, dtype=dtype), 20)
        np.testing.assert_array_equal(columns.numpy(), stable_top_k_columns(x, 20, None))


def test_copies_get_bitwise_equal_similarity_columns(backend):
    dtype = "float64" if backend.float64 else "float32"
    rng = np.random.default_rng(3)
    u = rng.standard_normal((96, 24))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    copies = [5, 17, 40, 63, 95]
    u[copies] = u[2]
    u[70] = u[71]
    array = backend.asarray(u, dtype)
    xp = array_namespace(array)
    twin, has_copies = ops.first_copies(array, xp)
    expected = np.arange(96)
    expected[copies] = 2
    expected[71] = 70
    np.testing.assert_array_equal(backend.to_numpy(twin), expected)
    assert bool(backend.to_numpy(has_copies))
    sim = backend.to_numpy(
        ops.canonical_columns(ops.similarity(array, array, xp), twin, has_copies, xp)
    )
    for c in copies:
        assert np.array_equal(sim[:, c], sim[:, 2])
    assert np.array_equal(sim[:, 71], sim[:, 70])
    no_copies = backend.asarray(rng.standard_normal((50, 24)), dtype)
    assert not bool(backend.to_numpy(ops.first_copies(no_copies, xp)[1]))


def _levels(k: int) -> tuple[np.ndarray, np.ndarray, int]:
    first = stats.burn_in(k)
    r = np.arange(first + 1, k + 1)
    log_f = np.log(r / (k + 1))
    return log_f, np.log(-log_f), k - first


def test_a_constant_tail_gets_both_penalties_and_a_varying_one_none(backend):
    config = WEINCEConfig()
    k = 32
    top = np.full((3, k), 0.8)  # row 0: constant below the cap
    top[1] = 1.0  # row 1: every shortfall clamps to eps
    top[2] = 0.8 - np.arange(k) * 1e-15  # row 2: distinct by a few ulps: no penalty at all
    array = backend.asarray(top, "float64" if backend.float64 else "float32")
    if not backend.float64:
        pytest.skip(f"{backend.id}: the ulp-spaced row needs float64")
    _, d_aic = stats.tail_fit(array, config, array_namespace(array))
    d_aic = backend.to_numpy(d_aic)
    log_w, log_g, n = _levels(k)
    sst_w = np.sum((log_w - log_w.mean()) ** 2)
    sst_g = np.sum((log_g - log_g.mean()) ** 2)
    both = n * (np.log((sst_g + 1e6) / n) - np.log((sst_w + 1e6) / n))
    np.testing.assert_allclose(d_aic[:2], both, rtol=1e-12)
    assert d_aic[2] > 10, "a varying tail is fitted without penalties"


def test_beta_t_stays_for_a_constant_pool_and_for_non_finite_negatives(backend):
    config = WEINCEConfig()
    dtype = "float64" if backend.float64 else "float32"
    xp = array_namespace(backend.asarray(np.zeros(1), dtype))
    beta_t = backend.asarray(np.asarray(4.0), dtype)
    constant = backend.asarray(np.full(1024, 0.7), dtype)
    out = stats.update_beta(constant, beta_t, config, xp)
    assert float(backend.to_numpy(out["beta_t"])) == 4.0
    assert float(backend.to_numpy(out["beta_hat"])) == 0.0
    pool = -np.sort(np.random.default_rng(0).weibull(2.0, 1024) * 0.1 - 1.0)  # descending
    good = backend.asarray(pool, dtype)
    moved = stats.update_beta(good, beta_t, config, xp)
    assert bool(backend.to_numpy(moved["beta_updated"])), "the pool must be a good fit"
    finite = xp.zeros((), dtype=xp.bool, device=wc.ops.device(good))
    kept = stats.update_beta(good, beta_t, config, xp, finite=finite)
    assert float(backend.to_numpy(kept["beta_t"])) == 4.0


def test_a_nan_row_leaves_beta_t_and_makes_the_loss_nan(backend):
    dtype = "float64" if backend.float64 else "float32"
    rng = np.random.default_rng(0)
    z_i = rng.standard_normal((40, 8))
    z_j = z_i + 0.3 * rng.standard_normal((40, 8))
    z_i[3, 0] = math.nan
    config = WEINCEConfig.paper(beta_min_tail=64)
    a, b = backend.asarray(z_i, dtype), backend.asarray(z_j, dtype)
    state = wc.init_state(config, like=a)
    loss, _, new_state, out = wc.nt_xent_value_and_grad(a, b, state, config)
    assert np.isnan(backend.to_numpy(loss))
    assert float(backend.to_numpy(new_state)) == config.beta_init
    assert not bool(backend.to_numpy(out["beta_updated"]))


def test_rows_whose_squares_overflow_float32_are_normalised_like_any_other(backend):
    rng = np.random.default_rng(1)
    z_i = rng.standard_normal((16, 4))
    z_j = z_i + 0.3 * rng.standard_normal((16, 4))
    config = WEINCEConfig.blend()
    a, b = backend.asarray(z_i, "float32"), backend.asarray(z_j, "float32")
    big_a, big_b = backend.asarray(z_i * 1e20, "float32"), backend.asarray(z_j * 1e20, "float32")
    state = wc.init_state(config, like=a)
    loss, *_ = wc.nt_xent_value_and_grad(a, b, state, config)
    big_loss, *_ = wc.nt_xent_value_and_grad(big_a, big_b, state, config)
    np.testing.assert_allclose(backend.to_numpy(big_loss), backend.to_numpy(loss), rtol=1e-5)


def test_half_precision_zero_rows_give_finite_gradients():
    torch = pytest.importorskip("torch")
    from weince_torch import WEINCELoss

    rng = np.random.default_rng(0)
    z_i = torch.tensor(rng.standard_normal((16, 8)), dtype=torch.float16, requires_grad=True)
    z_j = torch.tensor(rng.standard_normal((16, 8)), dtype=torch.float16)
    with torch.no_grad():
        z_j[3] = 0.0
    z_j.requires_grad_(True)
    WEINCELoss()(z_i, z_j).backward()
    assert torch.isfinite(z_i.grad).all() and torch.isfinite(z_j.grad).all()
    assert z_j.grad[3].abs().max() == torch.finfo(torch.float16).max  # saturated, not inf


def _tf32(x):
    """float32 rounded to TF32's 10-bit mantissa (to nearest), as a TF32 product reads it."""
    torch = pytest.importorskip("torch")
    bits = x.contiguous().view(torch.int32)
    return ((bits + (1 << 12)) & -(1 << 13)).view(torch.float32)


def test_similarities_keep_float32_accuracy_when_products_are_tf32(monkeypatch):
    """TF32 emulated on the CPU: the product's inputs rounded to a 10-bit mantissa."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(_fast_torch, "product", lambda a, b: _tf32(a) @ _tf32(b).T)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((64, 32))
    u = torch.tensor(z / np.linalg.norm(z, axis=1, keepdims=True), dtype=torch.float32)
    exact = u.double() @ u.double().T
    xp = array_namespace(u)
    tf32_error = (_fast_torch.product(u, u).double() - exact).abs().max()
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # "may use TF32"
    try:
        split_error = (ops.similarity(u, u, xp).double() - exact).abs().max()
    finally:
        torch.set_float32_matmul_precision(previous)
    assert tf32_error > 1e-4, "the emulation must bite"
    assert split_error < 1e-6, f"{split_error:.1e}: no better than TF32 ({tf32_error:.1e})"


def test_identical_views_lose_nothing_to_tf32_products(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(_fast_torch, "product", lambda a, b: _tf32(a) @ _tf32(b).T)
    z = np.random.default_rng(2).standard_normal((64, 32))
    config = WEINCEConfig.paper()
    state64 = wc.init_state(config, like=z)
    reference = float(wc.nt_xent_value_and_grad(z, z, state64, config)[0])
    t = torch.tensor(z, dtype=torch.float32)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        loss = wc.nt_xent_value_and_grad(t, t, wc.init_state(config, like=t), config)[0]
    finally:
        torch.set_float32_matmul_precision(previous)
    assert abs(float(loss) - reference) <= 1e-3 * abs(reference)
