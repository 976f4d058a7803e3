"""The pairing forms on CuPy arrays, on a GPU: every form's value and gradients equal the NumPy
float64 core, stay on the inputs' device, and bad input names the argument.

The reference vectors and the float32 comparison run for the ``cupy`` backend in
tests/conformance/test_forms_conformance.py. Without CuPy or a GPU every test skips.
"""

from __future__ import annotations

import numpy as np
import pytest

from weince_core import WEINCEConfig
from weince_core.testing import (
    RTOL_FLOAT64,
    assert_close_normwise,
    differentiable,
    form_cases,
    form_reference,
)

cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
try:
    GPUS = cupy.cuda.runtime.getDeviceCount()
except cupy.cuda.runtime.CUDARuntimeError:
    GPUS = 0
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(GPUS == 0, reason="no CUDA device for CuPy"),
]
weince_cupy = pytest.importorskip("weince_cupy")

FORMS = ["two_tower", "explicit_negatives", "multi_positive"]


@pytest.mark.parametrize("form", FORMS)
def test_every_form_equals_the_numpy_core_and_stays_on_the_device(form):
    config = WEINCEConfig.paper(min_tail=8, top_m=6, beta_min_tail=64)
    for case in form_cases(form, n=24, d=8, steps=2, seed=1):
        expected = form_reference(case, config)
        function = getattr(weince_cupy, f"{form}_value_and_grad")
        state = weince_cupy.init_state(config)
        for batch, want in zip(case.batches, expected, strict=True):
            arrays = {k: cupy.asarray(v) for k, v in batch.items()}
            keywords = {"scale": arrays.pop("scale")} if form == "two_tower" else {}
            loss, grads, state, stats = function(
                *arrays.values(), state, config, **keywords, **dict(case.options)
            )
            assert all(isinstance(g, cupy.ndarray) for g in grads)
            assert isinstance(state, cupy.ndarray)
            assert_close_normwise(loss.get(), want.loss, RTOL_FLOAT64, f"{case.name} loss")
            assert_close_normwise(state.get(), want.state, RTOL_FLOAT64, f"{case.name} beta_t")
            names = differentiable(form)
            for name, grad in zip(names, grads, strict=True):
                assert_close_normwise(
                    grad.get(), want.grads[name], RTOL_FLOAT64, f"{case.name} grad_{name}"
                )
            lam = np.nan_to_num(stats["lambda"].get())
            assert_close_normwise(lam, np.nan_to_num(want.stats["lambda"]), 1e-10, "lambda")


def test_numpy_arrays_are_refused_naming_the_argument():
    x = cupy.ones((4, 3))
    state = weince_cupy.init_state()
    with pytest.raises(TypeError, match=r"\by\b"):
        weince_cupy.two_tower_value_and_grad(x, np.ones((4, 3)), state)
    with pytest.raises(TypeError, match=r"\bn\b"):
        weince_cupy.explicit_negatives_value_and_grad(x, x, np.ones((8, 3)), state)
    with pytest.raises(TypeError, match="labels"):
        weince_cupy.multi_positive_value_and_grad(x, np.zeros(4, dtype=np.int64), state)
