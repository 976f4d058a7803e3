"""The reference vectors (tests/data/golden) through ``weince_jax.weince_loss`` under ``jax.jit``.

Loss, gradients from ``jax.value_and_grad``, statistics, and the state carried from step to step:
float64 (x64 is on in the test session) to the reference tolerance, float32 within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import weince_jax  # noqa: E402
from weince_core.testing import (  # noqa: E402
    RTOL_FLOAT32,
    RTOL_FLOAT64,
    assert_close_normwise,
    assert_matches_golden_step,
)


def to_numpy(x):
    return np.asarray(x, dtype=np.float64)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reference_vectors_are_reproduced_under_jit_step_by_step(golden, dtype):
    rtol = RTOL_FLOAT64 if dtype == "float64" else RTOL_FLOAT32
    step = jax.jit(
        jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True),
        static_argnames="config",
    )
    state = weince_jax.init_state(golden.config)
    assert state.beta_t.dtype == jnp.float64
    for t in range(golden.steps):
        ref = golden.step(t)
        z_i, z_j = jnp.asarray(ref["zi"], dtype=dtype), jnp.asarray(ref["zj"], dtype=dtype)
        (loss, (state, stats)), (grad_i, grad_j) = step(z_i, z_j, state, config=golden.config)
        assert loss.dtype == grad_i.dtype == grad_j.dtype == jnp.dtype(dtype)
        assert state.beta_t.dtype == jnp.float64  # the carried state keeps its own dtype
        assert_matches_golden_step(
            golden,
            t,
            rtol,
            loss=loss,
            grads=(grad_i, grad_j),
            stats=stats,
            carried_beta_t=state.beta_t,
            to_numpy=to_numpy,
        )


def test_reference_beta_t_sequence_through_lax_scan(golden):
    """All steps in one compiled ``lax.scan``: the state is a pytree carry like any other."""
    steps = range(golden.steps)
    z_i = jnp.stack([jnp.asarray(golden.step(t)["zi"]) for t in steps])
    z_j = jnp.stack([jnp.asarray(golden.step(t)["zj"]) for t in steps])

    def body(state, views):
        loss, (state, _) = weince_jax.weince_loss(*views, state, config=golden.config)
        return state, (loss, state.beta_t)

    _, (losses, betas) = jax.jit(lambda s, a, b: jax.lax.scan(body, s, (a, b)))(
        weince_jax.init_state(golden.config), z_i, z_j
    )
    expected_losses = np.array([golden.step(t)["loss"] for t in steps])
    expected_betas = np.array([golden.step(t)["beta_t"] for t in steps])
    assert_close_normwise(to_numpy(losses), expected_losses, RTOL_FLOAT64, "losses")
    assert_close_normwise(to_numpy(betas), expected_betas, RTOL_FLOAT64, "beta_t")
