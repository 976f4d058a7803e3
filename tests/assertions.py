"""Comparisons used across the test suite."""

from __future__ import annotations

import numpy as np

# Normwise relative tolerance against the float64 reference vectors (SPEC: "about 1e-10").
RTOL_FLOAT64 = 1e-10
# float32 keeps about 7 digits; the worst seen against the golden files is 5e-6 (gradients),
# from the tail fits' logs of shortfalls and the sums over 2N rows.
RTOL_FLOAT32 = 1e-5


def assert_close_normwise(
    actual: object, expected: object, rtol: float, what: str, *, equal_nan: bool = False
) -> None:
    """``max|actual - expected| <= rtol * max|expected|`` (a scale-aware check for whole arrays).

    ``equal_nan``: NaN is expected exactly where ``expected`` has it (a statistic a row does
    not have), and the other entries are compared.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if equal_nan:
        missing = np.isnan(expected)
        assert np.array_equal(np.isnan(actual), missing), f"{what}: NaN at other entries"
        actual, expected = actual[~missing], expected[~missing]
        if expected.size == 0:
            return
    scale = max(float(np.max(np.abs(expected))), np.finfo(np.float64).tiny)
    error = float(np.max(np.abs(actual - expected))) / scale
    assert error <= rtol, f"{what}: relative error {error:.3e} > {rtol:.1e}"


def assert_matches_golden_step(
    golden: object,
    t: int,
    rtol: float,
    *,
    loss: object,
    grads: tuple[object, object],
    stats: dict,
    carried_beta_t: object,
    to_numpy=np.asarray,
) -> None:
    """One step's loss, gradients, statistics and carried ``beta_t`` against the reference."""
    ref = golden.step(t)  # type: ignore[attr-defined]
    checks = {
        "loss": (loss, ref["loss"]),
        "grad_zi": (grads[0], ref["grad_zi"]),
        "grad_zj": (grads[1], ref["grad_zj"]),
        "lambda": (stats["lambda"], ref["lambda"]),
        "dAIC": (stats["d_aic"], ref["dAIC"]),
        "rho": (stats["rho"], ref["rho"]),
        "rho0": (stats["rho0"], ref["rho0"]),
        "beta_t used": (stats["beta_t"], ref["beta_t"]),
        "beta_t carried": (carried_beta_t, ref["beta_t"]),
    }
    for what, (actual, expected) in checks.items():
        message = f"{golden.name} step {t} {what}"  # type: ignore[attr-defined]
        assert_close_normwise(to_numpy(actual), expected, rtol, message)
