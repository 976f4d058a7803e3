"""The fused row pass against its formulas (docs/math.md sections 2 and 6) computed in float64."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_cases import EPS, row_pass_expected


@pytest.mark.parametrize(
    ("dtype", "columns", "blend", "rtol"),
    [("float32", 300, True, 2e-6), ("float64", 40, True, 1e-13), ("float32", 2500, False, 2e-6)],
)
def test_row_pass_equals_the_formulas_in_float64(kernels, dtype, columns, blend, rtol):
    import torch

    rng = np.random.default_rng(columns)
    rows = 6
    x = rng.uniform(-1, 1, size=(rows, columns)).astype(dtype)
    x[0, :7] = 1.0  # above the cap: the shortfall's slope is 0 there
    x[1, :5] = np.asarray(1.0, dtype) - np.asarray(EPS, dtype)  # at the cap exactly
    x[2] = 0.5  # all equal
    x[3, ::2] = -0.0
    lam = rng.uniform(0, 1, size=rows).astype(dtype)
    lam[4] = 0.0
    excluded = np.stack([np.arange(rows), np.arange(rows) + 10], axis=1)
    as_tensor = lambda a: torch.tensor(a, device=kernels.device)  # noqa: E731
    grad, lse = kernels.rowpass.row_pass(
        as_tensor(x), as_tensor(lam), as_tensor(excluded), 0.2, 0.5, EPS, 2 * rows, blend
    )
    want_grad, want_lse = row_pass_expected(x, lam, excluded, 0.2, 0.5, 2 * rows, blend)
    np.testing.assert_allclose(lse.cpu().numpy(), want_lse, rtol=rtol)
    np.testing.assert_allclose(grad.cpu().numpy(), want_grad, rtol=rtol, atol=1e-30)
    assert not np.any(np.take_along_axis(grad.cpu().numpy(), excluded, 1))


def test_row_pass_nan_rows_stay_local_and_finish(kernels):
    import torch

    x = np.random.default_rng(0).uniform(-1, 1, size=(3, 50)).astype(np.float32)
    x[1, 4] = np.nan
    lam = np.full(3, 0.5, dtype=np.float32)
    _, lse = kernels.rowpass.row_pass(
        torch.tensor(x, device=kernels.device),
        torch.tensor(lam, device=kernels.device),
        None,
        0.2,
        0.5,
        EPS,
        3,
        True,
    )
    lse = lse.cpu().numpy()
    assert np.isnan(lse[1]) and np.all(np.isfinite(lse[[0, 2]]))
    np.testing.assert_allclose(
        lse[[0, 2]], row_pass_expected(x, lam, None, 0.2, 0.5, 3, True)[1][[0, 2]], rtol=2e-6
    )


def test_row_pass_custom_op_schema_and_fake_implementation(kernels):
    import torch

    sim = torch.rand((2, 16), device=kernels.device)
    lam = torch.rand((2,), device=kernels.device)
    torch.library.opcheck(
        torch.ops.weince.row_pass.default,
        (sim, lam, None, 0.2, 0.5, EPS, 2, True),
        test_utils=("test_schema", "test_faketensor"),
    )
