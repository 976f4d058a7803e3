"""Every pairing form on every installed backend (docs/math.md section 9), through the framework's
adapter where there is one: the reference vectors of ``tests/data/golden_forms`` to 1e-10 in
float64, and seeded inputs against the NumPy float64 core (the crosscheck's tolerances) in
float64 and float32."""

from __future__ import annotations

import numpy as np
import pytest
from forms_cases import GOLDEN_NAMES, golden_inputs

from weince.testing import run_case, run_form
from weince_core.testing import FORMS, FormCase, all_backends, differentiable, form_cases

BACKENDS = all_backends()
GOLDEN = 1e-10  # normwise relative, every quantity: the reference vectors' own precision


def assert_matches(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Normwise within ``GOLDEN`` (``d_aic`` relative to ``max(max|dAIC|, 1)``), NaNs alike."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{what}: NaNs differ"
    gap = float(np.max(np.nan_to_num(np.abs(actual - expected)), initial=0.0))
    scale = float(np.max(np.abs(np.nan_to_num(expected)), initial=0.0))
    if what.endswith("d_aic"):
        scale = max(scale, 1.0)
    assert gap <= GOLDEN * scale, f"{what}: {gap:.2e} off (scale {scale:.2e})"


# Backends without an adapter run the core, whose reproduction of the reference vectors on every
# backend (these quantities, d_aic relative to its own size, to 1e-10) is
# tests/core/test_forms_golden.py.
@pytest.mark.parametrize(
    "backend", [b for b in BACKENDS if b.adapter], ids=lambda b: b.id, indirect=True
)
def test_golden_forms_on_every_backend(backend, golden_form):
    if not backend.supports("float64"):
        pytest.skip(f"{backend.id} has no float64")
    steps = [golden_inputs(golden_form, t) for t in range(golden_form.steps)]
    form = golden_form.meta["form"]
    case = FormCase(form, golden_form.name, tuple(steps[0][1].items()), tuple(s[0] for s in steps))
    path, results = run_form(backend, case, golden_form.config, "float64")
    assert path == ("adapter" if backend.adapter else "core")
    for t, result in enumerate(results):
        expected = golden_form.step(t)
        assert_matches(result.loss, expected["loss"], f"step {t} loss")
        assert_matches(result.state, expected["beta_t"], f"step {t} beta_t carried")
        for name in differentiable(form):
            grad = expected[f"grad_{GOLDEN_NAMES.get(name, name)}"]
            assert_matches(result.grads[name], grad, f"step {t} grad_{name}")
        for key in ("lambda", "beta_t", "rho", "d_aic", "rho0"):
            assert_matches(result.stats[key], expected[key], f"step {t} {key}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("form", [f for f in FORMS if f != "two_view"])
def test_every_form_matches_the_numpy_float64_core(backend, form, dtype):
    if not backend.supports(dtype) or (backend.id == "numpy" and dtype == "float64"):
        pytest.skip(f"{backend.id} {dtype}: not a comparison")
    for case in form_cases(form, n=6, d=5, steps=2, seed=3):
        row = run_case(backend, case, "paper", dtype, "adapter")
        assert row.passed, (case.name, row.error, row.wrong_dtype, row.failed, row.differences)
        assert set(row.differences) >= {f"grad_{k}" for k in differentiable(form)}
