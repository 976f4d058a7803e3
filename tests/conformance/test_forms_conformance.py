"""Every pairing form on every installed backend (SPEC.md section 9), through the framework's
adapter where there is one: the reference vectors of ``../shared/golden_forms`` to 1e-10 in
float64, and seeded inputs against the NumPy float64 core (the crosscheck's tolerances) in
float64 and float32."""

from __future__ import annotations

import numpy as np
import pytest
from golden_forms import load, names

from weince import forms_check

GOLDEN = 1e-10  # normwise relative, every quantity (SPEC.md: "about 1e-10 relative")


def assert_matches(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{what}: NaNs differ"
    gap = np.nan_to_num(np.abs(actual - expected))
    scale = max(float(np.max(np.abs(np.nan_to_num(expected)), initial=0.0)), 1e-300)
    assert float(np.max(gap, initial=0.0)) <= GOLDEN * max(scale, 1.0 if what == "d_aic" else 0), (
        f"{what}: {float(np.max(gap)) / scale:.2e} relative"
    )


@pytest.mark.parametrize("name", names())
def test_golden_forms_on_every_backend(backend, name):
    if not backend.supports("float64"):
        pytest.skip(f"{backend.id} has no float64")
    golden = load(name)
    path, results = forms_check.run_form(backend, golden.case, golden.config, "float64")
    assert path == ("adapter" if backend.adapter else "core")
    for t, (result, expected) in enumerate(zip(results, golden.expected, strict=True)):
        assert_matches(result.loss, expected.loss, f"step {t} loss")
        assert_matches(result.state, expected.state, f"step {t} beta_t carried")
        for key, value in expected.grads.items():
            assert_matches(result.grads[key], value, f"step {t} grad_{key}")
        for key, value in expected.stats.items():
            assert_matches(result.stats[key], value, f"step {t} {key}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("form", [f for f in forms_check.FORMS if f != "two_view"])
def test_every_form_matches_the_numpy_float64_core(backend, form, dtype):
    if not backend.supports(dtype) or (backend.id == "numpy" and dtype == "float64"):
        pytest.skip(f"{backend.id} {dtype}: not a comparison")
    for case in forms_check.form_cases(form, n=6, d=5, steps=2, seed=3):
        row = forms_check.run_case(backend, case, "paper", dtype, "adapter")
        assert row.passed, (case.name, row.error, row.wrong_dtype, row.failed, row.differences)
        assert set(row.differences) >= {f"grad_{k}" for k in forms_check.differentiable(form)}
