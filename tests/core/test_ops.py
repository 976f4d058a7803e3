"""The operations the standard lacks: every native fast path agrees with the generic one."""

from __future__ import annotations

import math

import array_api_strict as xps
import numpy as np
import pytest
from array_api_compat import array_namespace

from weince_core import ops


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


def test_sigmoid_is_exact_at_the_extremes_and_symmetric():
    x = np.asarray([-1e4, -30.0, 0.0, 30.0, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = ops.sigmoid(x, np)
    assert y[0] == 0.0 and y[-1] == 1.0 and y[2] == 0.5
    np.testing.assert_allclose(y + y[::-1], 1.0, rtol=1e-15)


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
