"""Bad input: a clear error naming the argument, raised while tracing (before anything runs)."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import weince_jax  # noqa: E402
from weince_jax import WEINCEConfig, WEINCEState  # noqa: E402

STATE = WEINCEState(jax.ShapeDtypeStruct((), jnp.float64))


def spec(shape, dtype="float64"):
    return jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))


# (arguments as shapes only, error, message): jax.eval_shape traces without computing anything.
CASES = {
    "1-D z_i": ((spec((8,)), spec((8,))), ValueError, r"z_i must be a 2-D array of shape \(N, d\)"),
    "shapes differ": ((spec((8, 3)), spec((8, 4))), ValueError, r"z_j must have the shape of z_i"),
    "N = 1": ((spec((1, 3)), spec((1, 3))), ValueError, r"N >= 2"),
    "no columns": ((spec((4, 0)), spec((4, 0))), ValueError, r"at least one column"),
    "integer views": (
        (spec((4, 3), "int32"), spec((4, 3), "int32")),
        TypeError,
        r"z_i must have a real floating dtype",
    ),
    "dtypes differ": (
        (spec((4, 3)), spec((4, 3), "float32")),
        TypeError,
        r"z_j must have the dtype of z_i",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_views_fail_at_trace_time(case):
    (z_i, z_j), error, match = CASES[case]
    with pytest.raises(error, match=match):
        jax.eval_shape(weince_jax.weince_loss, z_i, z_j, STATE)
    with pytest.raises(error, match=match):  # under a user's jit: while lowering, before running
        jax.jit(weince_jax.weince_loss).lower(z_i, z_j, STATE)


def test_bad_state_fails_at_trace_time():
    z = spec((4, 3))
    with pytest.raises(ValueError, match=r"state must be a 0-d array \(beta_t\)"):
        jax.eval_shape(weince_jax.weince_loss, z, z, WEINCEState(spec((3,))))
    with pytest.raises(TypeError, match=r"state must have a real floating dtype"):
        jax.eval_shape(weince_jax.weince_loss, z, z, WEINCEState(spec((), "int32")))
    with pytest.raises(TypeError, match=r"state must be a WEINCEState from weince_jax.init_state"):
        jax.eval_shape(weince_jax.weince_loss, z, z, spec(()))


def test_non_arrays_and_bad_configs_are_named():
    z = jnp.ones((4, 3))
    state = weince_jax.init_state()
    with pytest.raises(TypeError, match=r"z_i must be a JAX \(or NumPy\) array.*list"):
        weince_jax.weince_loss([[1.0, 2.0], [3.0, 4.0]], z, state)
    with pytest.raises(TypeError, match=r"z_j must be a JAX \(or NumPy\) array"):
        weince_jax.weince_loss(z, "z", state)
    with pytest.raises(TypeError, match=r"config must be a WEINCEConfig.*WEINCEConfig.preset"):
        weince_jax.weince_loss(z, z, state, config="paper")


def test_numpy_views_are_accepted_like_jax_arrays():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    state = weince_jax.init_state(WEINCEConfig.blend())
    expected = weince_jax.weince_loss(jnp.asarray(a), jnp.asarray(b), state, WEINCEConfig.blend())
    actual = weince_jax.weince_loss(a, b, state, WEINCEConfig.blend())
    assert float(actual[0]) == float(expected[0])
