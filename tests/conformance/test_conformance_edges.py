"""Edge cases on every backend, device and dtype: N = 2, zero rows, the cap, a large batch.

N = 2, zero rows and a large batch are held to NumPy float64 like any input. At the cap float32
cannot resolve the shortfall 1 - s, so there (float32 and half precision) the checks are:

- collapsed embeddings (every cosine rounds to 1, in float64 too): every logit of a row is the
  same, so the loss is the uniform one, log(2N - 1) + log(M + 1) whatever lambda is, and the
  gradient vanishes up to rounding. lambda and dAIC come from tail fits through points that are
  all equal, so rounding decides them: only their range is checked;
- near-cap embeddings (1 - cosine around eps = 1e-6): finite results, and the loss and beta_t of
  NumPy of the same compute dtype within NEAR_CAP_AGREEMENT. Float32 backends that sum U U^T in
  different orders disagree there by up to 0.5 in lambda and by the gradient's own size
  (measured), so those are not compared; float64 is held to float64 as everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest
from conformance_cases import (
    Case,
    Outcome,
    assert_agree,
    backend_dtypes,
    numpy_outcome,
    outcome,
)

from weince_core import WEINCEConfig
from weince_core.testing import QUANTITIES, TOLERANCES

TWO_PAIRS = Case("random", n=2, d=8)
# The shape of the matrix's inputs (N = 40, d = 16): JAX compiles nothing new for these.
ZERO_ROWS = Case("zero_rows", n=40, d=16)
COLLAPSED = Case("collapsed", n=40, d=16)
NEAR_CAP = Case("near_cap", n=40, d=16)
LARGE = Case("random", n=512, d=32, steps=2)  # 2N = 1024 rows

# Float32 backends against NumPy float32 near the cap, measured over 4 seeds: loss 7e-3,
# beta_t 3e-3 (relative). An error of eps32 = 1.2e-7 in s is a 10% error in 1 - s ~ 1e-6.
NEAR_CAP_AGREEMENT = {"loss": 5e-2, "beta_t": 2e-2}
# Collapsed embeddings: the gradient, relative to a typical gradient 1 / (2N tau |z|), measured
# 2e-6 (float32) and 1e-11 (float64); it vanishes exactly in half precision.
ZERO_GRADIENT = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 1e-4, "float16": 1e-4}


@backend_dtypes("float64", "float32")
def test_two_pairs_match_numpy_float64(backend, dtype):
    result = outcome(backend, dtype, "paper", TWO_PAIRS)
    assert_agree(result, QUANTITIES, f"{backend.id} {dtype} N=2")
    # With K = 2 negatives the tail fits have one point: dAIC = 0 for every anchor
    # (docs/math.md section 1, step 8).
    assert np.all(result.reference[0].stats["d_aic"] == 0)


@backend_dtypes()
@pytest.mark.parametrize("preset", ["paper", "blend"])
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # float16
def test_zero_rows_match_numpy_float64(backend, dtype, preset):
    result = outcome(backend, dtype, preset, ZERO_ROWS)
    if dtype == "float16":
        # A zero row's gradient is g / 1e-8 (the norm's floor): beyond float16's range, it is
        # saturated there, while the float64 reference keeps it. The other rows are compared.
        result = _without_zero_rows(result)
    assert_agree(result, QUANTITIES, f"{backend.id} {dtype} {preset} zero rows")


@backend_dtypes()
@pytest.mark.parametrize("case", [COLLAPSED, NEAR_CAP], ids=lambda c: c.kind)
def test_outputs_at_the_cap_are_finite(backend, dtype, case):
    result = outcome(backend, dtype, "paper", case)
    for t, (got, ref) in enumerate(zip(result.results, result.reference, strict=True)):
        where = f"{backend.id} {dtype} {case.kind} step {t}"
        assert np.isfinite(got.loss) and np.isfinite(got.state), where
        assert np.all(np.isfinite(got.grad_i)) and np.all(np.isfinite(got.grad_j)), where
        for key, value in got.stats.items():  # NaN only where the reference has NaN
            np.testing.assert_array_equal(np.isnan(value), np.isnan(ref.stats[key]), where)
        assert np.all((got.stats["lambda"] >= 0) & (got.stats["lambda"] <= 1)), where


@backend_dtypes()
def test_collapsed_embeddings_give_the_uniform_loss_and_no_gradient(backend, dtype):
    result = outcome(backend, dtype, "paper", COLLAPSED)
    config = WEINCEConfig.paper()
    n = COLLAPSED.n
    top_m = min(config.top_m, 2 * n - 2)
    uniform = np.log(2 * n - 1) + (config.weibit_weight + config.softmax_weight) * np.log(top_m + 1)
    z = np.concatenate(result.inputs[0])
    typical = 1.0 / (2 * n * config.temperature * float(np.median(np.linalg.norm(z, axis=1))))
    bound = ZERO_GRADIENT[dtype] * typical
    for t, got in enumerate(result.results):
        where = f"{backend.id} {dtype} collapsed step {t}"
        assert abs(float(got.loss) - uniform) <= TOLERANCES[dtype].value * uniform, where
        largest = max(np.max(np.abs(got.grad_i)), np.max(np.abs(got.grad_j)))
        assert largest <= bound, f"{where}: gradient {largest:.1e} > {bound:.1e}"


@backend_dtypes()
def test_near_cap_results_agree_with_numpy_of_the_same_compute_dtype(backend, dtype):
    result = outcome(backend, dtype, "paper", NEAR_CAP)
    if dtype == "float64":  # float64 resolves 1 - s down to eps
        assert_agree(result, QUANTITIES, f"{backend.id} {dtype} near the cap")
        return
    numpy = numpy_outcome(dtype, "paper", NEAR_CAP).results
    for t, (got, ref) in enumerate(zip(result.results, numpy, strict=True)):
        where = f"{backend.id} {dtype} near the cap, step {t}, against NumPy float32"
        loss_error = abs(float(got.loss) - float(ref.loss)) / abs(float(ref.loss))
        assert loss_error <= NEAR_CAP_AGREEMENT["loss"], f"{where}: loss off by {loss_error:.1e}"
        for name, value, expected in (
            ("beta_t used", got.stats["beta_t"], ref.stats["beta_t"]),
            ("beta_t carried", got.state, ref.state),
        ):
            error = abs(float(value) - float(expected)) / abs(float(expected))
            assert error <= NEAR_CAP_AGREEMENT["beta_t"], f"{where}: {name} off by {error:.1e}"


def test_a_large_batch_matches_numpy_float64(backend):
    dtype = "float64" if backend.float64 else "float32"  # one large run per backend
    result = outcome(backend, dtype, "paper", LARGE)
    assert_agree(result, QUANTITIES, f"{backend.id} {dtype} 2N = {2 * LARGE.n}")


def _without_zero_rows(result: Outcome) -> Outcome:
    """``result`` with the gradient rows of zero embeddings set to 0 in results and reference."""

    def strip(steps):
        out = []
        for (z_i, z_j), step in zip(result.inputs, steps, strict=True):
            out.append(
                step._replace(
                    grad_i=np.where(np.all(z_i == 0, axis=1)[:, None], 0.0, step.grad_i),
                    grad_j=np.where(np.all(z_j == 0, axis=1)[:, None], 0.0, step.grad_j),
                )
            )
        return out

    return Outcome(
        result.path, result.inputs, strip(result.results), strip(result.reference), result.tolerance
    )
