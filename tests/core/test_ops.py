"""The operations the standard lacks: every native fast path agrees with the generic one."""

from __future__ import annotations

import math

import array_api_strict as xps
import numpy as np
import pytest
from array_api_compat import array_namespace

from weince_core import _fast_jax, ops


def values(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape)


def test_top_k_is_descending_and_matches_a_full_sort(backend):
    dtype = "float64" if backend.float64 else "float32"
    x = values((7, 40)).astype(dtype)
    x[2, 5] = -math.inf  # masked entries (as for excluded columns) sort last
    array = backend.asarray(x, dtype)
    top, index = ops.top_k(array, 6, array_namespace(array))
    expected = -np.sort(-x, axis=1)[:, :6]
    np.testing.assert_array_equal(backend.to_numpy(top), expected)
    picked = np.take_along_axis(x, np.asarray(backend.to_numpy(index), dtype=np.int64), 1)
    np.testing.assert_array_equal(picked, expected)


def test_top_k_of_the_whole_row_works_on_numpy():
    x = np.asarray([[1.0, 3.0, 2.0]])
    top, index = ops.top_k(x, 3, array_namespace(x))
    np.testing.assert_array_equal(top, [[3.0, 2.0, 1.0]])
    np.testing.assert_array_equal(index, [[1, 2, 0]])


def test_logsumexp_leaves_out_minus_infinity_and_is_stable():
    x = np.asarray([[0.0, -math.inf, 1000.0], [-math.inf, 2.0, 2.0]])
    expected = [1000.0, 2.0 + math.log(2.0)]
    np.testing.assert_allclose(ops.logsumexp(x, np), expected, rtol=1e-15)
    np.testing.assert_allclose(
        np.from_dlpack(ops.logsumexp(xps.asarray(x), xps)), expected, rtol=1e-15
    )


@pytest.mark.parametrize("xp_name", ["numpy", "torch", "jax.numpy"])
def test_sigmoid_is_exact_at_the_extremes_and_symmetric(xp_name):
    xp = pytest.importorskip(xp_name)
    x = np.asarray([-1e4, -30.0, -1e-3, 0.0, 1e-3, 30.0, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = np.from_dlpack(ops.sigmoid(xp.asarray(x), array_namespace(xp.asarray(x))))
    assert y[0] == 0.0 and y[-1] == 1.0 and y[3] == 0.5
    np.testing.assert_allclose(y + y[::-1], 1.0, rtol=1e-15)
    np.testing.assert_allclose(y[1:-1], 1.0 / (1.0 + np.exp(-x[1:-1])), rtol=1e-15)


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict", "torch", "jax.numpy"])
def test_add_at_columns_adds_exactly_at_the_given_columns(xp_name):
    xp = pytest.importorskip(xp_name)
    columns = np.asarray([[0, 3], [4, 1], [2, 0]])
    values = np.asarray([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    base = np.arange(15.0).reshape(3, 5)
    expected = base.copy()
    for r in range(3):
        expected[r, columns[r]] += values[r]
    out = ops.add_at_columns(
        xp.asarray(base), xp.asarray(columns), xp.asarray(values), array_namespace(xp.asarray(base))
    )
    np.testing.assert_array_equal(np.from_dlpack(out), expected)


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict", "torch", "jax.numpy"])
def test_mask_columns_sets_minus_infinity_exactly_at_the_given_columns(xp_name):
    xp = pytest.importorskip(xp_name)
    columns = np.asarray([[0, 3], [4, 1], [2, 0]])
    base = np.arange(15.0).reshape(3, 5)
    expected = base.copy()
    for r in range(3):
        expected[r, columns[r]] = -math.inf
    out = ops.mask_columns(xp.asarray(base), xp.asarray(columns), array_namespace(xp.asarray(base)))
    np.testing.assert_array_equal(np.from_dlpack(out), expected)


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict", "torch", "jax.numpy"])
@pytest.mark.parametrize("rows", ["alike", "one_row_holds_the_tail"])
def test_largest_from_row_tops_is_exact_whether_or_not_the_rows_hold_the_answer(xp_name, rows):
    # Each row keeps its 8 largest; the 100 largest overall are among them only when the rows
    # are alike. When one row holds most of them, the shortcut must see it and select again.
    xp = pytest.importorskip(xp_name)
    x = np.random.default_rng(0).normal(size=(40, 300))
    if rows == "one_row_holds_the_tail":
        x[7] += 10.0
    k, kept = 100, 8
    expected = np.sort(x, axis=None)[::-1][:k]
    row_top = np.sort(x, axis=1)[:, ::-1][:, :kept].copy()
    array = xp.asarray(x)
    out = ops.largest(array, k, array_namespace(array), row_top=xp.asarray(row_top))
    np.testing.assert_array_equal(np.from_dlpack(out), expected)


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict", "torch", "jax.numpy"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_top_k_leaves_out_the_excluded_columns_and_orders_signs_and_infinities(xp_name, dtype):
    # Negative values, -0.0 and infinities: the integer keys of the PyTorch CPU path must
    # order them as the floats are ordered.
    xp = pytest.importorskip(xp_name)
    x = values((6, 30), seed=3).astype(dtype)
    x[0, :4] = [-math.inf, math.inf, -0.0, 0.5]
    x[1] = -np.abs(x[1])  # a row of negatives only
    excluded = np.asarray([[1, 7], [0, 2], [5, 6], [9, 8], [3, 4], [29, 28]])
    masked = x.copy()
    np.put_along_axis(masked, excluded, -math.inf, axis=1)
    expected = -np.sort(-masked, axis=1)[:, :9]
    array = xp.asarray(x)
    top, index = ops.top_k(array, 9, array_namespace(array), excluded=xp.asarray(excluded))
    np.testing.assert_array_equal(np.from_dlpack(top), expected)
    picked = np.take_along_axis(masked, np.asarray(np.from_dlpack(index), dtype=np.int64), 1)
    np.testing.assert_array_equal(picked, expected)
    np.testing.assert_array_equal(np.from_dlpack(array), x)  # the input is left as it was


@pytest.mark.parametrize("xp_name", ["numpy", "array_api_strict", "torch", "jax.numpy"])
def test_in_place_operations_equal_their_plain_forms(xp_name):
    xp = pytest.importorskip(xp_name)
    x = np.abs(values((4, 5), seed=1)) + 0.1
    a, b = values((4, 5), seed=2), values((4, 1), seed=3)
    namespace = array_namespace(xp.asarray(x))

    def fresh(value):
        return xp.asarray(np.array(value))

    cases = {
        "log_": (ops.log_(fresh(x), namespace), np.log(x)),
        "exp_": (ops.exp_(fresh(x), namespace), np.exp(x)),
        "reciprocal_": (ops.reciprocal_(fresh(x), namespace), 1.0 / x),
        "one_minus_": (ops.one_minus_(fresh(x), namespace), 1.0 - x),
        "add_product_": (
            ops.add_product_(fresh(x), fresh(a), fresh(b), namespace),
            x + a * b,
        ),
        "fill_at_most_": (
            ops.fill_at_most_(fresh(x), 0.8, math.inf, namespace),
            np.where(x <= 0.8, math.inf, x),
        ),
        "softmax_": (
            ops.softmax_(fresh(a), namespace)[0],
            np.exp(a) / np.sum(np.exp(a), axis=1, keepdims=True),
        ),
        "softmax_ logsumexp": (
            ops.softmax_(fresh(a), namespace)[1],
            np.log(np.sum(np.exp(a), axis=1)),
        ),
        "logsumexp overwrite": (
            ops.logsumexp(fresh(a), namespace, overwrite=True),
            np.log(np.sum(np.exp(a), axis=1)),
        ),
    }
    for name, (out, expected) in cases.items():
        np.testing.assert_allclose(np.from_dlpack(out), expected, rtol=1e-15, err_msg=name)


def test_largest_calls_the_function_that_makes_the_array_only_when_the_rows_do_not_settle_it():
    # PyTorch on a CPU branches eagerly (JAX traces both branches of its lax.cond).
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).normal(size=(40, 300))
    calls = []

    def make():
        calls.append(1)
        return torch.asarray(x)

    for expected_calls in ([], [1]):  # first the rows are alike, then one holds the tail
        row_top = torch.asarray(np.sort(x, axis=1)[:, ::-1][:, :8].copy())
        out = ops.largest(make, 20, array_namespace(row_top), row_top=row_top)
        np.testing.assert_array_equal(out.numpy(), np.sort(x, axis=None)[::-1][:20])
        assert calls == expected_calls
        x[7] += 10.0


def _rows_for_selection(kind, size, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "all equal":
        return np.ones((size, size))
    centres = rng.normal(size=(8, 64))
    spread = 1.0 if kind == "random" else 0.1
    z = centres[rng.integers(0, 8, size)] * (kind != "random") + spread * rng.normal(
        size=(size, 64)
    )
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T
    np.fill_diagonal(sim, -math.inf)
    if kind == "ties":
        sim = np.round(sim * 10) / 10
    if kind == "masked half":
        sim[:, : size // 2] = -math.inf
    return sim


@pytest.mark.parametrize(
    "kind, size",
    [(kind, 1200) for kind in ("random", "clustered", "ties", "masked half", "all equal")]
    + [("random", 2048), ("clustered", 2048)],  # the proportions of the loss: k = 10 % of a row
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_row_top_k_by_threshold_equals_lax_top_k_values_and_columns(kind, size, dtype):
    # The JAX selection used on GPUs, checked here on the CPU: the same values and the same
    # columns (equal values in column order) as lax.top_k, through the compaction or, where
    # ties defeat the thresholds (values rounded to 0.1, all equal), through its fallback.
    jax = pytest.importorskip("jax")
    if dtype == "float64" and not jax.config.jax_enable_x64:
        pytest.skip("float64 needs jax_enable_x64 (the JAX tests turn it on)")
    x = jax.numpy.asarray(_rows_for_selection(kind, size).astype(dtype))
    k = round(0.1 * size)
    values, columns = jax.jit(lambda a: _fast_jax.top_k_rows_by_threshold(a, k))(x)
    expected_values, expected_columns = jax.lax.top_k(x, k)
    np.testing.assert_array_equal(np.asarray(values), np.asarray(expected_values))
    np.testing.assert_array_equal(np.asarray(columns), np.asarray(expected_columns))
    cap = _fast_jax.compaction_slots(k)
    _, kept, exact = _fast_jax.row_thresholds(_fast_jax.ordered_key(x), k, cap, 8)
    served = kind in ("random", "clustered", "masked half")
    assert bool(exact) == served
    if served:
        assert int(kept.min()) >= k and int(kept.max()) <= cap


def test_row_top_k_by_threshold_is_differentiable_like_lax_top_k():
    jax = pytest.importorskip("jax")
    x = jax.numpy.asarray(_rows_for_selection("random", 1200).astype("float32"))
    x = jax.numpy.where(jax.numpy.isfinite(x), x, 0.0)

    def gradient(select):
        return jax.grad(lambda a: (select(a)[0] ** 2).sum())(x)

    by_threshold = gradient(lambda a: _fast_jax.top_k_rows_by_threshold(a, 120))
    np.testing.assert_array_equal(by_threshold, gradient(lambda a: jax.lax.top_k(a, 120)))
