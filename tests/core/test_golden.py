"""The reference vectors of the published implementation, reproduced on every backend."""

from __future__ import annotations

import pytest

import weince_core as wc
from weince_core.testing import RTOL_FLOAT32, RTOL_FLOAT64, assert_matches_golden_step


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reference_vectors_are_reproduced_step_by_step(golden, backend, dtype):
    if dtype == "float64" and not backend.float64:
        pytest.skip(f"{backend.id} has no float64")
    rtol = RTOL_FLOAT64 if dtype == "float64" else RTOL_FLOAT32
    config = golden.config
    state = wc.init_state(config, like=backend.asarray(golden.step(0)["zi"], dtype))
    value_and_grad = backend.jit(lambda z_i, z_j, s: wc.nt_xent_value_and_grad(z_i, z_j, s, config))
    for t in range(golden.steps):
        ref = golden.step(t)
        z_i, z_j = backend.asarray(ref["zi"], dtype), backend.asarray(ref["zj"], dtype)
        loss, (grad_i, grad_j), state, stats = value_and_grad(z_i, z_j, state)
        assert grad_i.dtype == z_i.dtype and loss.dtype == z_i.dtype
        assert_matches_golden_step(
            golden,
            t,
            rtol,
            loss=loss,
            grads=(grad_i, grad_j),
            stats=stats,
            carried_beta_t=state,
            to_numpy=backend.to_numpy,
        )
