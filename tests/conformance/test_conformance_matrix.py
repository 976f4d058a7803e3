"""Every backend, device and dtype gives the numbers of NumPy float64: one property per test.

Three steps of each preset (half precision: ``paper``, which holds every term) on seeded
two-view inputs (N = 40, d = 16), the state carried, run through each framework's adapter
(``weince_torch``, ``weince_jax``, ``weince_cupy``) or the core where there is none.
Tolerances: ``weince_core.testing`` (a table per dtype, with the reasons). The reference vectors
of the published implementation are reproduced through the same path.
"""

from __future__ import annotations

import numpy as np
from conformance_cases import (
    Case,
    assert_agree,
    backend_dtype_presets,
    backend_dtypes,
    expected_loss_dtype,
    outcome,
)

from weince_core.testing import RTOL_FLOAT64, assert_close_normwise

RANDOM = Case("random", n=40, d=16)


@backend_dtype_presets()
def test_loss_matches_numpy_float64(backend, dtype, preset):
    result = outcome(backend, dtype, preset, RANDOM)
    assert_agree(result, ("loss",), f"{backend.id} {dtype} {preset}")
    assert {r.loss_dtype for r in result.results} == {expected_loss_dtype(dtype)}


@backend_dtype_presets()
def test_gradients_match_numpy_float64_in_the_inputs_dtype(backend, dtype, preset):
    result = outcome(backend, dtype, preset, RANDOM)
    assert_agree(result, ("grad",), f"{backend.id} {dtype} {preset}")
    assert {r.grad_dtype for r in result.results} == {dtype}


@backend_dtype_presets()
def test_lambda_and_tail_statistics_match_numpy_float64(backend, dtype, preset):
    result = outcome(backend, dtype, preset, RANDOM)
    assert_agree(result, ("lambda", "d_aic", "rho", "rho0"), f"{backend.id} {dtype} {preset}")
    if preset != "infonce":  # the gate is open somewhere and shut elsewhere: lambda is tested
        lam = np.concatenate([r.stats["lambda"] for r in result.reference])
        assert lam.min() < 0.1 < 0.5 < lam.max()


@backend_dtype_presets()
def test_beta_t_used_and_carried_matches_numpy_float64(backend, dtype, preset):
    result = outcome(backend, dtype, preset, RANDOM)
    assert_agree(result, ("beta_t",), f"{backend.id} {dtype} {preset}")
    used = [float(r.stats["beta_t"]) for r in result.reference]
    if preset == "paper":  # estimated online: it moves every step, so the carry is tested
        assert len(set(used)) == len(used)
    else:
        assert used == [4.0] * len(used)


# Backends without an adapter run the core, whose reproduction of the reference vectors on every
# backend (these quantities and more, to the same tolerance) is tests/core/test_golden.py.
@backend_dtypes("float64", adapters_only=True)
def test_reference_vectors_are_reproduced_through_the_adapters(golden, backend, dtype):
    steps = [golden.step(t) for t in range(golden.steps)]
    path, results = backend.run_steps([(s["zi"], s["zj"]) for s in steps], golden.config, dtype)
    for t, (ref, got) in enumerate(zip(steps, results, strict=True)):
        checks = {
            "loss": (got.loss, ref["loss"]),
            "grad_zi": (got.grad_i, ref["grad_zi"]),
            "grad_zj": (got.grad_j, ref["grad_zj"]),
            "lambda": (got.stats["lambda"], ref["lambda"]),
            "dAIC": (got.stats["d_aic"], ref["dAIC"]),
            "rho0": (got.stats["rho0"], ref["rho0"]),
            "beta_t used": (got.stats["beta_t"], ref["beta_t"]),
        }
        for what, (actual, expected) in checks.items():
            where = f"{backend.id} {dtype} ({path}) {golden.name} step {t} {what}"
            assert_close_normwise(actual, expected, RTOL_FLOAT64, where)
