"""Bad input is refused before any computation, with the argument and the expectation named."""

from __future__ import annotations

import importlib

import array_api_strict as xps
import numpy as np
import pytest

import weince_core as wc


def good(n: int = 4, d: int = 3, dtype=np.float64):
    return np.ones((n, d), dtype=dtype), np.ones((n, d), dtype=dtype)


STATE = np.asarray(4.0)


@pytest.mark.parametrize(
    "z_i, z_j, error, message",
    [
        (np.ones((4, 3)), np.ones((4, 2)), ValueError, r"z_j must have the shape of z_i \(4, 3\)"),
        (np.ones((4, 3, 1)), np.ones((4, 3, 1)), ValueError, "z_i must be a 2-D array"),
        (np.ones(4), np.ones(4), ValueError, "z_i must be a 2-D array"),
        (np.ones((1, 3)), np.ones((1, 3)), ValueError, "N >= 2"),
        (np.ones((4, 0)), np.ones((4, 0)), ValueError, "at least one column"),
        (np.ones((4, 3), dtype=int), np.ones((4, 3), dtype=int), TypeError, "z_i must have a real"),
        (np.ones((4, 3)), np.ones((4, 3), dtype=np.float32), TypeError, "z_j must have the dtype"),
        (np.ones((4, 3)), [[1.0] * 3] * 4, TypeError, "z_j must be an array"),
    ],
)
def test_bad_embeddings_raise_a_clear_error(z_i, z_j, error, message):
    with pytest.raises(error, match=message):
        wc.nt_xent(z_i, z_j, STATE)


def test_arrays_from_two_libraries_are_refused():
    z_i, _ = good()
    with pytest.raises(TypeError, match="same array library"):
        wc.nt_xent(z_i, xps.asarray(z_i), STATE)


def test_arrays_on_two_devices_are_refused():
    z_i = xps.asarray(np.ones((4, 3)))
    z_j = xps.asarray(np.ones((4, 3)), device=xps.Device("device1"))
    with pytest.raises(ValueError, match="z_i and z_j must be on the same device"):
        wc.nt_xent(z_i, z_j, xps.asarray(4.0))


def test_state_on_another_device_is_refused():
    z = xps.asarray(np.ones((4, 3)))
    state = xps.asarray(4.0, device=xps.Device("device1"))
    with pytest.raises(ValueError, match="state and z_i must be on the same device"):
        wc.nt_xent(z, z, state)


@pytest.mark.parametrize(
    "state, error, message",
    [
        (np.ones((1,)), ValueError, "state must be a 0-d array"),
        (np.asarray(4), TypeError, "state must have a real floating dtype"),
        (4.0, TypeError, "state must be an array"),
    ],
)
def test_bad_state_is_refused(state, error, message):
    with pytest.raises(error, match=message):
        wc.nt_xent(*good(), state)


def test_validation_happens_before_any_computation(monkeypatch):
    calls = []
    two_view = importlib.import_module("weince_core.forms")
    monkeypatch.setattr(two_view, "rows_forward", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError):
        wc.nt_xent(np.ones((1, 3)), np.ones((1, 3)), STATE)
    assert calls == []


@pytest.mark.parametrize(
    "config, message",
    [
        ("paper", r"config must be a WEINCEConfig or None; got str \(for a preset by name"),
        ({"temperature": 0.5}, "config must be a WEINCEConfig or None; got dict"),
    ],
)
def test_a_config_that_is_not_a_weince_config_is_refused(config, message):
    with pytest.raises(TypeError, match=message):
        wc.nt_xent(*good(), STATE, config)
    with pytest.raises(TypeError, match=message):
        wc.init_state(config, like=STATE)


def test_a_list_to_value_and_grad_names_the_argument_and_asks_for_an_array():
    with pytest.raises(TypeError, match=r"^z_i must be an array .*; got list$"):
        wc.nt_xent_value_and_grad([[1.0] * 3] * 4, np.ones((4, 3)), STATE)
    with pytest.raises(TypeError, match=r"^state must be an array .*; got float$"):
        wc.nt_xent_value_and_grad(*good(), 4.0)
    with pytest.raises(TypeError, match=r"^like must be an array .*; got list$"):
        wc.init_state(like=[1.0])


def test_residuals_that_are_not_the_forwards_are_refused():
    with pytest.raises(TypeError, match="residuals must be the TwoViewResiduals that two_view_fo"):
        wc.nt_xent_backward((np.ones((8, 3)),))
    with pytest.raises(TypeError, match="residuals must be the RowsResiduals that rows_forward"):
        wc.rows_backward(np.eye(4), np.array([1, 0, 3, 2]), None, (1, 2), wc.WEINCEConfig())


SIM, POSITIVE = np.full((4, 4), 0.5), np.array([1, 0, 3, 2])


@pytest.mark.parametrize(
    "sim, positive, excluded, beta_t, error, message",
    [
        (SIM.tolist(), POSITIVE, None, STATE, TypeError, "^sim must be an array"),
        (SIM, POSITIVE.tolist(), None, STATE, TypeError, "^positive must be an array"),
        (SIM, POSITIVE, None, 4.0, TypeError, "^beta_t must be an array"),
        (SIM[0], POSITIVE, None, STATE, ValueError, "^sim must be a 2-D array"),
        (SIM.astype(int), POSITIVE, None, STATE, TypeError, "^sim must have a real floating"),
        (SIM, POSITIVE[:3], None, STATE, ValueError, r"^positive must be a 1-D array .* \(4,\)"),
        (SIM, POSITIVE * 1.0, None, STATE, TypeError, "^positive must have an integer dtype"),
        (SIM, POSITIVE, POSITIVE, STATE, ValueError, "^excluded must be None or a 2-D array"),
        (SIM, POSITIVE, SIM, STATE, TypeError, "^excluded must have an integer dtype"),
        (SIM, POSITIVE, None, np.ones(1), ValueError, "^beta_t must be a 0-d array"),
    ],
)
def test_bad_rows_arguments_are_named(sim, positive, excluded, beta_t, error, message):
    config = wc.WEINCEConfig()
    for entry in (wc.rows_forward, wc.rows_value_and_grad):
        with pytest.raises(error, match=message):
            entry(sim, positive, excluded, beta_t, config, num_negatives=2)


def test_meta_tensors_are_refused_naming_the_argument():
    torch = pytest.importorskip("torch")
    meta = torch.ones((4, 3), device="meta")
    real = torch.ones((4, 3))
    expected = r"is a meta tensor: it has a shape \(4, 3\) but no values"
    with pytest.raises(ValueError, match=f"^z_i {expected}"):
        wc.nt_xent_value_and_grad(meta, meta, torch.tensor(4.0, device="meta"))
    with pytest.raises(ValueError, match=f"^sim {expected.replace('3', '4')}"):
        sim = torch.ones((4, 4), device="meta")
        wc.rows_forward(
            sim, torch.tensor([1, 0, 3, 2], device="meta"), None,
            torch.tensor(4.0, device="meta"), wc.WEINCEConfig(), num_negatives=2,
        )  # fmt: skip
    weince_torch = pytest.importorskip("weince_torch")
    with pytest.raises(ValueError, match=f"^z_j {expected}"):
        weince_torch.weince_loss(real, meta, weince_torch.init_state())
    with pytest.raises(ValueError, match=f"^z_i {expected}"):
        weince_torch.WEINCELoss().to("meta")(meta, meta)
