"""The reference vectors of the published implementation, reproduced on every backend."""

from __future__ import annotations

import pytest
from assertions import RTOL_FLOAT32, RTOL_FLOAT64, assert_close_normwise

import weince_core as wc


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
        checks = {
            "loss": (loss, ref["loss"]),
            "grad_zi": (grad_i, ref["grad_zi"]),
            "grad_zj": (grad_j, ref["grad_zj"]),
            "lambda": (stats["lambda"], ref["lambda"]),
            "dAIC": (stats["d_aic"], ref["dAIC"]),
            "rho": (stats["rho"], ref["rho"]),
            "rho0": (stats["rho0"], ref["rho0"]),
            "beta_t used": (stats["beta_t"], ref["beta_t"]),
            "beta_t carried": (state, ref["beta_t"]),
        }
        for what, (actual, expected) in checks.items():
            assert_close_normwise(
                backend.to_numpy(actual), expected, rtol, f"{golden.name} step {t} {what}"
            )
