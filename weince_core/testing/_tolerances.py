"""Tolerances per dtype against the NumPy float64 reference, and the normwise assertions.

These bounds depend on the inputs (they widen near the cap) and serve the test suite's
conformance matrix, which knows its inputs. ``weince crosscheck`` does not use them for its
verdict: it holds every row to a fixed tolerance per dtype, whatever the inputs.

The reference is the core on NumPy float64 arrays holding the *same* inputs, that is the inputs
after rounding to the dtype under test: what is measured is the computation, not the rounding of
the inputs (which for bfloat16 alone moves the loss by about 1e-3). Errors are normwise,
``max|x - x_ref| / max|x_ref|`` over a whole array and every step, except ``lambda``, a weight in
[0, 1], whose error is absolute, and ``dAIC``, taken relative to ``max(max|dAIC_ref|, 1)`` (it
is often near 0). ``value`` bounds the loss, ``beta_t`` (used and carried), ``rho`` and ``rho0``;
``lam`` bounds ``lambda``; ``grad`` both gradients; ``d_aic`` the ``dAIC``.

A bound is ``max(floor, C * u / delta)``. ``u`` is the unit roundoff of the dtype the loss is
computed in (2^-53 for float64; 2^-24 otherwise, since half precision computes in float32,
docs/math.md section 7) and ``delta`` the inputs' smallest shortfall ``1 - s`` over all pairs of
rows (``smallest_shortfall``). The shortfall coordinate ``-log(1 - s)`` and its derivative
``1 / (1 - s)`` turn an error ``u`` in ``s`` into a relative error ``u / (1 - s)``, so ``1/delta``
is the inputs' condition number: random inputs in high dimension have ``delta`` around 0.1,
embeddings with near-duplicate rows approach the floor ``eps = 1e-6``.

Measured (every CPU backend; presets paper, blend, infonce; N from 2 to 2048, d from 2 to 256;
two seeds; the largest error of each kind):

=========  ======================================  ===========================================
dtype      floor: value / lam / grad / d_aic       why
=========  ======================================  ===========================================
float64    1e-12 / 1e-12 / 1e-12 / 1e-12           measured 1e-14 at most off the cap (loss
                                                   8e-16, gradients 9e-15, dAIC 6e-15);
                                                   docs/math.md promises 1e-10 against
                                                   published implementation
float32    1e-5 / 2e-5 / 3e-5 / 5e-5               measured off the cap (delta > 0.05): loss
                                                   5e-7, rho and beta_t 3e-7, lambda 4e-6,
                                                   gradients 6e-6, dAIC 9e-6; the tail fits
                                                   sum logs of shortfalls over 2N rows
bfloat16   1e-5 / 2e-5 / 8e-3 / 5e-5               computed in float32, so as float32, except
                                                   the gradient, returned in bfloat16: rounding
                                                   alone is up to 2^-8 = 3.9e-3 (measured 3.5e-3)
float16    1e-5 / 2e-5 / 1e-3 / 5e-5 (+ 2^-24      as bfloat16 with float16's 2^-11 = 4.9e-4;
           absolute on gradients)                  gradients below 6e-5 are subnormal, spaced
                                                   2^-24 apart (measured 9e-4 at N = 512)
=========  ======================================  ===========================================

=========  ======================================  ===========================================
compute    C: value / lam / grad / d_aic           why
=========  ======================================  ===========================================
float64    12 / 500 / 100 / 250                    4 x the largest measured error * delta / u
                                                   (3, 126, 19, 62; near-cap inputs, delta =
                                                   1e-6)
float32    4 / 25 / 250 / 25                       4 x the largest measured (0.8, 5.6, 62, 5.2;
                                                   gradients at delta = 8e-3, d = 8, N = 512;
                                                   below 1e-4 float32 saturates, erring less)
=========  ======================================  ===========================================

On a further seed with N up to 2048 (NumPy, PyTorch) every error stayed below half its bound.
At the cap (delta near eps) the float32 bounds reach O(1): float32 cannot resolve ``1 - s``
there, and the test suite checks such inputs for finiteness and for agreement of the loss and
``beta_t`` with NumPy of the same dtype instead (tests/conformance/test_conformance_edges.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._golden import Golden

DTYPES = ("float64", "float32", "bfloat16", "float16")

# -- tolerances --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """How closely results must agree with the float64 reference (see the module docstring).

    ``value`` bounds the loss, ``beta_t``, ``rho`` and ``rho0`` (normwise relative); ``lam``
    bounds ``lambda`` (absolute); ``grad`` both gradients (normwise relative, plus ``grad_abs``
    absolute: float16's subnormal spacing); ``d_aic`` the ``dAIC`` (relative to
    ``max(max|dAIC|, 1)``).
    """

    value: float
    lam: float
    grad: float
    d_aic: float
    grad_abs: float = 0.0

    def of(self, quantity: str, scale: float = 1.0) -> float:
        """The bound of one quantity.

        Args:
            quantity: ``"loss"``, ``"grad"``, ``"lambda"``, ``"d_aic"``, ``"rho"``, ...
            scale: the size of the reference values (the absolute part of ``grad`` is
                divided by it).

        Returns:
            The bound on the quantity's error, as the module docstring defines it.
        """
        if quantity == "grad":
            return self.grad + (self.grad_abs / scale if scale > 0 else 0.0)
        return {"d_aic": self.d_aic, "lambda": self.lam}.get(quantity, self.value)


# Floors: the bounds off the cap (measured errors times 5 to 20; the module docstring says why).
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(value=1e-12, lam=1e-12, grad=1e-12, d_aic=1e-12),
    "float32": Tolerance(value=1e-5, lam=2e-5, grad=3e-5, d_aic=5e-5),
    "bfloat16": Tolerance(value=1e-5, lam=2e-5, grad=8e-3, d_aic=5e-5),
    "float16": Tolerance(value=1e-5, lam=2e-5, grad=1e-3, d_aic=5e-5, grad_abs=2.0**-24),
}
# Near the cap a bound grows to C * u / delta: u is the unit roundoff of the compute dtype and
# delta the inputs' smallest shortfall 1 - s; 1/delta is the condition number of the shortfall
# coordinate -log(1 - s) and of its derivative 1/(1 - s). C: the largest measured
# error * delta / u, times 4, per compute dtype (half precision computes in float32).
CONDITION: dict[str, Tolerance] = {
    "float64": Tolerance(value=12.0, lam=500.0, grad=100.0, d_aic=250.0),
    "float32": Tolerance(value=4.0, lam=25.0, grad=250.0, d_aic=25.0),
}

# The verdict of ``weince crosscheck`` and ``weince.testing.run_case``: a fixed tolerance per
# dtype, the same whatever the inputs. float64: the agreement docs/math.md section 8 promises
# (1e-9; measured below 4e-10 even with rows 1e-3 apart). The other dtypes compute in float32,
# whose cap 1 - eps is not 1 - 1e-6 but 1 - 1.0133e-6: on batches with copies the clamped
# logits differ from float64's by design, moving the loss by up to 6e-4 (measured), hence 1e-3;
# bfloat16 and float16 return gradients rounded to 2^-8 and 2^-11.
# Pairs just short of the cap (1 - cosine from ~1e-6 to ~1e-4, held by float32 to few digits)
# can fail float32 rows (measured: gradients 0.3 off at 1 - cosine ~ 1e-6): float32 cannot
# compute them to 1e-3, and the verdict says so rather than widening.
VERDICT: dict[str, Tolerance] = {
    "float64": Tolerance(value=1e-9, lam=1e-9, grad=1e-9, d_aic=1e-9),
    "float32": Tolerance(value=1e-3, lam=1e-3, grad=1e-3, d_aic=1e-3),
    "bfloat16": Tolerance(value=1e-3, lam=1e-3, grad=8e-3, d_aic=1e-3),
    "float16": Tolerance(value=1e-3, lam=1e-3, grad=2e-3, d_aic=1e-3, grad_abs=2.0**-24),
}

# Normwise relative tolerance against the float64 reference vectors (docs/math.md promises
# about 1e-10).
RTOL_FLOAT64 = 1e-10
# float32 keeps about 7 digits; the worst seen against the reference vectors is 5e-6
# (gradients), from the tail fits' logs of shortfalls and the sums over 2N rows.
RTOL_FLOAT32 = 1e-5


def tolerance(dtype: str, delta: float) -> Tolerance:
    """The bounds for one dtype on given inputs: ``max(floor, C * u / delta)`` each.

    Args:
        dtype: the dtype under test, one of :data:`DTYPES`.
        delta: the inputs' smallest shortfall ``1 - s`` (:func:`smallest_shortfall`).

    Returns:
        The bounds on every quantity.
    """
    compute = "float64" if dtype == "float64" else "float32"
    unit = float(np.finfo(compute).eps) / 2
    floor, condition = astuple(TOLERANCES[dtype]), astuple(CONDITION[compute])
    return Tolerance(*(max(f, c * unit / delta) for f, c in zip(floor, condition, strict=True)))


def smallest_shortfall(
    batches: Sequence[tuple[np.ndarray, np.ndarray]], eps: float = 1e-6
) -> float:
    """The inputs' condition: ``delta = max(min over a, b != a of 1 - S_ab, eps)``.

    Args:
        batches: pairs of views ``(z_i, z_j)``; the rows of each pair are compared with each
            other.
        eps: the floor of ``delta`` (the loss's cap ``1 - eps``).

    Returns:
        ``delta`` over every batch.
    """
    delta = 1.0
    for z_i, z_j in batches:
        z = np.concatenate([z_i, z_j]).astype(np.float64)
        u = z / np.maximum(np.linalg.norm(z, axis=1), 1e-8)[:, None]
        s = u @ u.T
        np.fill_diagonal(s, -np.inf)
        delta = min(delta, 1.0 - float(np.max(s)))
    return max(delta, eps)


# -- assertions --------------------------------------------------------------------------------


def assert_close_normwise(
    actual: object, expected: object, rtol: float, what: str, *, equal_nan: bool = False
) -> None:
    """Assert ``max|actual - expected| <= rtol * max|expected|``, over whole arrays.

    Args:
        actual: the values under test (anything NumPy converts; read as float64).
        expected: the reference values, of the same shape.
        rtol: the normwise relative tolerance.
        what: names the values in the failure message.
        equal_nan: NaN is expected exactly where ``expected`` has it (a statistic a row does
            not have), and the other entries are compared.

    Raises:
        AssertionError: the shapes differ, NaNs sit elsewhere, or the error exceeds ``rtol``.
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
    golden: Golden,
    t: int,
    rtol: float,
    *,
    loss: object,
    grads: tuple[object, object],
    stats: Mapping[str, object],
    carried_beta_t: object,
    to_numpy: Callable[[Any], Any] = np.asarray,
) -> None:
    """Assert one step's loss, gradients, statistics and carried ``beta_t`` match a reference.

    Args:
        golden: the reference file (:func:`load_golden`).
        t: the step.
        rtol: the normwise relative tolerance of every quantity.
        loss: the loss of step ``t``.
        grads: the gradients with respect to ``z_i`` and ``z_j``.
        stats: the step's statistics (``lambda``, ``d_aic``, ``rho``, ``rho0``, ``beta_t``).
        carried_beta_t: ``beta_t`` carried to the next step.
        to_numpy: reads a backend's array as NumPy (e.g. :meth:`Backend.to_numpy`).

    Raises:
        AssertionError: a quantity is off; the message names the file, step and quantity.
    """
    ref = golden.step(t)
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
        message = f"{golden.name} step {t} {what}"
        assert_close_normwise(to_numpy(actual), expected, rtol, message)
