"""Bad input raises a clear error naming the argument, before any tensor operation runs.

"Before any operation" is checked by recording every ATen operation dispatched during the call
(views excepted: they only make metadata, no kernel).
"""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from weince_torch import WEINCEConfig, WEINCELoss, init_state, weince_loss  # noqa: E402


class RecordOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def good(n=4, d=3):
    return torch.randn(n, d), torch.randn(n, d)


def raises_before_any_op(error, match, call):
    recorder = RecordOps()
    with recorder, pytest.raises(error, match=match):
        call()
    assert recorder.ops == [], f"operations ran before the error: {recorder.ops}"


BAD_PAIRS = {
    "z_i not a tensor": (
        lambda: (np.zeros((4, 3)), torch.zeros(4, 3)),
        TypeError,
        "z_i must be a torch.Tensor",
    ),
    "z_j not a tensor": (
        lambda: (torch.zeros(4, 3), [[0.0] * 3] * 4),
        TypeError,
        "z_j must be a torch.Tensor",
    ),
    "1-D": (
        lambda: (torch.zeros(4), torch.zeros(4)),
        ValueError,
        r"z_i must be a 2-D array of shape \(N, d\)",
    ),
    "shapes differ": (
        lambda: (torch.zeros(4, 3), torch.zeros(5, 3)),
        ValueError,
        "z_j must have the shape of z_i",
    ),
    "one pair": (lambda: (torch.zeros(1, 3), torch.zeros(1, 3)), ValueError, "N >= 2"),
    "integer": (
        lambda: (torch.zeros(4, 3, dtype=torch.int64),) * 2,
        TypeError,
        "z_i must have a real floating dtype",
    ),
    "dtypes differ": (
        lambda: (torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.float64)),
        TypeError,
        "z_j must have the dtype of z_i",
    ),
}


@pytest.mark.parametrize("case", list(BAD_PAIRS))
def test_module_rejects_bad_views_before_any_operation(case):
    make, error, match = BAD_PAIRS[case]
    criterion = WEINCELoss()
    z_i, z_j = make()
    raises_before_any_op(error, match, lambda: criterion(z_i, z_j))


@pytest.mark.parametrize("case", list(BAD_PAIRS))
def test_functional_form_rejects_bad_views_before_any_operation(case):
    make, error, match = BAD_PAIRS[case]
    z_i, z_j = make()
    state = init_state()
    raises_before_any_op(error, match, lambda: weince_loss(z_i, z_j, state))


def test_functional_form_rejects_a_bad_state():
    z_i, z_j = good()
    vector, integer = torch.ones(1), torch.tensor(4)
    raises_before_any_op(
        TypeError, "state must be a torch.Tensor", lambda: weince_loss(z_i, z_j, 4.0)
    )
    raises_before_any_op(
        ValueError, "state must be a 0-d array", lambda: weince_loss(z_i, z_j, vector)
    )
    raises_before_any_op(
        TypeError, "state must have a real floating dtype", lambda: weince_loss(z_i, z_j, integer)
    )


def test_inputs_on_another_device_than_the_state_name_the_fix():
    criterion = WEINCELoss().to("meta")
    z_i, z_j = good()
    message = re.escape("move the criterion with criterion.to('cpu')")
    raises_before_any_op(ValueError, message, lambda: criterion(z_i, z_j))


def test_config_must_be_a_weince_config():
    with pytest.raises(TypeError, match=r"config must be a WEINCEConfig or None; got str.*preset"):
        WEINCELoss("blend")
    with pytest.raises(TypeError, match="config must be a WEINCEConfig or None; got dict"):
        weince_loss(*good(), init_state(), {"temperature": 0.5})
    with pytest.raises(TypeError, match=r"WEINCEConfig\.temperature must be a finite number"):
        WEINCELoss(temperature="hot")
    with pytest.raises(TypeError, match="unexpected keyword argument 'temprature'"):
        WEINCELoss(temprature=0.2)


def test_keyword_overrides_apply_to_the_given_config():
    criterion = WEINCELoss(WEINCEConfig.blend(), temperature=0.2)
    assert criterion.config == WEINCEConfig.blend(temperature=0.2)
    assert WEINCELoss().config == WEINCEConfig.paper()


def test_the_recorder_sees_the_operations_of_a_good_call():
    # The control for the checks above: an empty record there means nothing ran.
    recorder = RecordOps()
    z_i, z_j = good()
    with recorder:
        WEINCELoss()(z_i, z_j)
    assert "aten.mm.default" in recorder.ops
