"""The per-row selection kernel against the rule of docs/math.md section 8, written plainly: a
stable descending sort of the keys ``min(S, 1 - eps)`` (``-0.0`` as ``0.0``, excluded columns
out)."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_cases import CAP, degenerate_rows, excluded_columns, stable_top_k


def run(kernels, x: np.ndarray, excluded: np.ndarray | None, k: int):
    import torch

    sim = torch.tensor(x, device=kernels.device)
    excl = None if excluded is None else torch.tensor(excluded, device=kernels.device)
    values, columns = kernels.select.select_top_k(sim, excl, k, CAP)
    return values.cpu().numpy(), columns.cpu().numpy()


@pytest.mark.parametrize(("columns", "k"), [(40, 1), (40, 38), (300, 30), (16, 14)])
def test_selection_follows_the_tie_rule_on_degenerate_rows(kernels, columns, k):
    x = degenerate_rows(columns, seed=columns + k)
    excluded = excluded_columns(x.shape[0], columns)
    values, chosen = run(kernels, x, excluded, k)
    expected = stable_top_k(x, k, excluded)
    np.testing.assert_array_equal(chosen, expected)
    np.testing.assert_array_equal(values, np.take_along_axis(x, expected, axis=1))  # not clipped


def test_selection_without_exclusions_and_a_ragged_width(kernels):
    x = degenerate_rows(23, seed=1)  # 23 columns in a tile of 32: masked padding
    _, chosen = run(kernels, x, None, 23)  # every column, in the rule's order
    np.testing.assert_array_equal(chosen, stable_top_k(x, 23, None))


def test_nan_rows_finish_with_distinct_candidates_and_leave_other_rows_exact(kernels):
    x = degenerate_rows(40, seed=3)
    x[1, 5] = np.nan  # one NaN among ties
    x[3] = np.nan  # a whole row of NaN
    x[4, ::7] = -np.nan
    excluded = excluded_columns(x.shape[0], 40)
    _, chosen = run(kernels, x, excluded, 12)
    for row in range(x.shape[0]):
        assert len(set(chosen[row])) == 12, f"row {row}: repeated columns"
        assert not set(chosen[row]) & set(excluded[row]), f"row {row}: an excluded column"
    finite = [r for r in range(x.shape[0]) if not np.isnan(x[r]).any()]
    np.testing.assert_array_equal(chosen[finite], stable_top_k(x[finite], 12, excluded[finite]))


def test_selection_equals_the_core_torch_path_also_on_nan_rows(kernels):
    import torch

    from weince_core._fast_torch import top_k_columns

    x = degenerate_rows(40, seed=4)
    x[2, :9] = np.nan
    excluded = torch.tensor(excluded_columns(x.shape[0], 40))
    _, chosen = run(kernels, x, excluded.numpy(), 9)
    expected = top_k_columns(torch.tensor(x), 9, excluded, CAP)
    np.testing.assert_array_equal(chosen, expected.numpy())


def test_custom_op_schema_and_fake_implementation(kernels):
    import torch

    sim = torch.tensor(degenerate_rows(16, seed=5)[:2], device=kernels.device)
    excluded = torch.tensor(excluded_columns(2, 16), device=kernels.device)
    torch.library.opcheck(
        torch.ops.weince.select_top_k.default,
        (sim, excluded, 5, CAP),
        test_utils=("test_schema", "test_faketensor"),
    )
