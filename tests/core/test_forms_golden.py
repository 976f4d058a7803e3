"""The pairing forms' reference vectors (tests/data/golden_forms), reproduced by the core on
every backend in float64, step by step with the state carried (docs/math.md section 9)."""

from __future__ import annotations

import numpy as np
import pytest
from forms_cases import GOLDEN_NAMES, GRADIENTS, call_form, form_function, golden_inputs

import weince_core as wc
from weince_core.testing import RTOL_FLOAT64, assert_close_normwise

STATS = ("lambda", "rho", "d_aic", "rho0", "beta_t")


def _check_step(golden, t, loss, grads, stats, carried, to_numpy):
    ref = golden.step(t)
    form = golden.meta["form"]
    what = f"{golden.name} step {t}"
    assert_close_normwise(to_numpy(loss), ref["loss"], RTOL_FLOAT64, f"{what} loss")
    for name, grad in zip(GRADIENTS[form], grads, strict=True):
        expected = ref["grad_" + GOLDEN_NAMES.get(name, name)]
        assert_close_normwise(to_numpy(grad), expected, RTOL_FLOAT64, f"{what} grad {name}")
    for key in STATS:
        assert_close_normwise(
            to_numpy(stats[key]), ref[key], RTOL_FLOAT64, f"{what} {key}", equal_nan=True
        )
    assert_close_normwise(to_numpy(carried), ref["beta_t"], RTOL_FLOAT64, f"{what} carried")


def test_reference_vectors_are_reproduced_step_by_step(golden_form, backend):
    if not backend.float64:
        pytest.skip(f"{backend.id} has no float64")
    config = golden_form.config
    form = golden_form.meta["form"]
    first, options = golden_inputs(golden_form, 0)
    names = tuple(first)

    def step(state, *arrays):
        return call_form(form, dict(zip(names, arrays, strict=True)), state, config, **options)

    value_and_grad = backend.jit(step)
    state = wc.init_state(config, like=backend.asarray(first[names[0]]))
    for t in range(golden_form.steps):
        inputs, _ = golden_inputs(golden_form, t)
        arrays = [
            backend.asarray(a, "int64" if name == "labels" else "float64")
            for name, a in inputs.items()
        ]
        loss, grads, state, stats = value_and_grad(state, *arrays)
        assert len(grads) == len(GRADIENTS[form])
        _check_step(golden_form, t, loss, grads, stats, state, backend.to_numpy)


def test_forward_then_backward_reproduces_the_reference_vectors(golden_form):
    # The forward-only form and the backward from residuals (the autograd adapters' pair),
    # in NumPy.
    config = golden_form.config
    form = golden_form.meta["form"]
    state = wc.init_state(config, like=np.zeros(1))
    for t in range(golden_form.steps):
        inputs, options = golden_inputs(golden_form, t)
        loss, new_state, stats, residuals = call_form(
            form, inputs, state, config, suffix="_forward", **options
        )
        grads = form_function(form, "_backward")(residuals, config)
        plain = call_form(form, inputs, state, config, suffix="", **options)
        assert float(plain[0]) == float(loss) and float(plain[1]) == float(new_state)
        _check_step(golden_form, t, loss, grads, stats, new_state, np.asarray)
        state = new_state
