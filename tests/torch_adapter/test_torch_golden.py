"""The reference vectors (tests/data/golden), reproduced through ``WEINCELoss`` step by step.

Loss, gradients from ``.backward()``, ``last_stats`` and the ``beta_t`` buffer carried across
steps: float64 to the reference tolerance, float32 within 1e-5 (normwise).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from weince_core.testing import RTOL_FLOAT32, RTOL_FLOAT64, assert_matches_golden_step  # noqa: E402
from weince_torch import WEINCELoss  # noqa: E402


def numpy_of(tensor):
    return tensor.detach().to("cpu", torch.float64).numpy()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_module_reproduces_the_reference_vectors_step_by_step(golden, dtype):
    rtol = RTOL_FLOAT64 if dtype == torch.float64 else RTOL_FLOAT32
    criterion = WEINCELoss(golden.config)
    for t in range(golden.steps):
        ref = golden.step(t)
        z_i = torch.tensor(ref["zi"], dtype=dtype, requires_grad=True)
        z_j = torch.tensor(ref["zj"], dtype=dtype, requires_grad=True)
        loss = criterion(z_i, z_j)
        loss.backward()
        assert loss.dtype == dtype and z_i.grad.dtype == dtype and z_j.grad.dtype == dtype
        assert_matches_golden_step(
            golden,
            t,
            rtol,
            loss=loss,
            grads=(z_i.grad, z_j.grad),
            stats=criterion.last_stats,
            carried_beta_t=criterion.beta_t[0],
            to_numpy=numpy_of,
        )
