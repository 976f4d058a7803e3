"""Bad inputs to the pairing forms: a clear error naming the argument, before any work."""

from __future__ import annotations

import numpy as np
import pytest

import weince_core as wc

RNG = np.random.default_rng(0)
STATE = np.asarray(4.0)


def _rows(*shape: int) -> np.ndarray:
    return RNG.normal(size=shape)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"y": _rows(7, 4)}, ValueError, r"y must have the shape of x \(6, 4\)"),
        ({"y": _rows(6, 5)}, ValueError, r"y must have the shape of x"),
        ({"x": _rows(6), "y": _rows(6)}, ValueError, r"x must be a 2-D array"),
        ({"x": _rows(1, 4), "y": _rows(1, 4)}, ValueError, r"N >= 2"),
        ({"y": _rows(6, 4).astype(np.float32)}, TypeError, r"y must have the dtype of x"),
        ({"scale": -1.0}, ValueError, r"scale must be positive"),
        ({"scale": 0}, ValueError, r"scale must be positive"),
        ({"scale": np.asarray(0.0)}, ValueError, r"scale must be positive"),
        ({"scale": np.ones(2)}, ValueError, r"scale must be a 0-d array"),
        ({"scale": True}, TypeError, r"scale must be"),
        ({"scale": np.asarray(2)}, TypeError, r"scale must have a real floating dtype"),
        ({"state": np.ones(1)}, ValueError, r"state must be a 0-d array"),
    ],
)
def test_two_tower_rejects(kwargs, error, match):
    args = {"x": _rows(6, 4), "y": _rows(6, 4), "state": STATE, "scale": None, **kwargs}
    scale = args.pop("scale")
    for function in (wc.two_tower_value_and_grad, wc.two_tower_forward, wc.two_tower):
        with pytest.raises(error, match=match):
            function(args["x"], args["y"], args["state"], None, scale=scale)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"k": _rows(5, 4)}, ValueError, r"k must have the shape of q \(6, 4\)"),
        ({"n": _rows(20)}, ValueError, r"n must be \(L, d\) negatives shared .* or \(N, P, d\)"),
        ({"n": _rows(6, 2, 3, 4)}, ValueError, r"n must be \(L, d\)"),
        ({"n": _rows(20, 3)}, ValueError, r"n must have d = 4 columns like q"),
        ({"n": _rows(5, 3, 4)}, ValueError, r"paired n must have shape \(N, P, d\) with N = 6"),
        ({"n": _rows(0, 4)}, ValueError, r"n needs at least one negative"),
        ({"n": _rows(20, 4).astype(np.float32)}, TypeError, r"n must have the dtype of q"),
        ({"in_batch_negatives": 1}, TypeError, r"in_batch_negatives must be True or False"),
    ],
)
def test_explicit_negatives_rejects(kwargs, error, match):
    args = {"q": _rows(6, 4), "k": _rows(6, 4), "n": _rows(20, 4), "in_batch_negatives": False}
    args.update(kwargs)
    option = args.pop("in_batch_negatives")
    for function in (
        wc.explicit_negatives_value_and_grad,
        wc.explicit_negatives_forward,
        wc.explicit_negatives,
    ):
        with pytest.raises(error, match=match):
            function(*args.values(), STATE, None, in_batch_negatives=option)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"labels": np.arange(5)}, ValueError, r"labels must have shape \(R,\) = \(6,\)"),
        ({"labels": np.zeros((6, 1), dtype=int)}, ValueError, r"labels must have shape"),
        ({"labels": np.arange(6.0)}, TypeError, r"labels must have an integer dtype"),
        ({"labels": [0, 0, 1, 1, 2, 2]}, TypeError, r"labels must be an array"),
        ({"z": _rows(1, 4), "labels": np.zeros(1, dtype=int)}, ValueError, r"z needs R >= 2"),
        ({"z": np.zeros((6, 4), dtype=int)}, TypeError, r"z must have a real floating dtype"),
    ],
)
def test_multi_positive_rejects(kwargs, error, match):
    args = {"z": _rows(6, 4), "labels": np.arange(6) % 3, **kwargs}
    for function in (
        wc.multi_positive_value_and_grad,
        wc.multi_positive_forward,
        wc.multi_positive,
    ):
        with pytest.raises(error, match=match):
            function(args["z"], args["labels"], STATE, None)


def test_labels_on_another_library_are_rejected_by_name():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="z, labels, state must come from the same array library"):
        wc.multi_positive(_rows(6, 4), torch.arange(6), STATE)


def test_a_config_that_is_not_one_is_rejected():
    with pytest.raises(TypeError, match="config must be a WEINCEConfig"):
        wc.two_tower(_rows(6, 4), _rows(6, 4), STATE, "paper")
