"""Dtypes: float32 by default (x64 off, in a subprocess), float64 with x64, halves in float32."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import weince_jax  # noqa: E402
from weince_jax import WEINCEConfig  # noqa: E402

CONFIG = WEINCEConfig.paper(min_tail=8, top_m=5, beta_min_tail=16)
GRAD = jax.jit(
    jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True), static_argnums=3
)

# Run with JAX's defaults (the test session turns x64 on): float32 state, loss and gradient,
# close to the core's float64 result on NumPy; ``like`` does not change the state's dtype.
X64_OFF = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import weince_core as wc, weince_jax
    assert not jax.config.jax_enable_x64
    config = wc.WEINCEConfig.paper(min_tail=8, top_m=5, beta_min_tail=16)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 6)); b = a + 0.5 * rng.normal(size=(16, 6))
    state = weince_jax.init_state(config)
    assert state.beta_t.dtype == jnp.float32, state.beta_t.dtype
    grad = jax.jit(jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True),
                   static_argnums=3)
    (loss, (state, stats)), (g_i, g_j) = grad(jnp.asarray(a), jnp.asarray(b), state, config)
    assert loss.dtype == g_i.dtype == g_j.dtype == state.beta_t.dtype == jnp.float32
    ref = wc.nt_xent_value_and_grad(a, b, np.float64(4.0), config)
    ref_loss, (ref_i, ref_j), ref_state, _ = ref
    def err(x, y):
        return float(np.max(np.abs(np.asarray(x, np.float64) - y)) / np.max(np.abs(y)))
    errors = [err(loss, ref_loss), err(g_i, ref_i), err(g_j, ref_j), err(state.beta_t, ref_state)]
    assert max(errors) < 1e-5, errors
    like = weince_jax.init_state(config, like=jnp.zeros(3)).beta_t
    assert like.dtype == jnp.float32, like.dtype  # like gives the device, never the dtype
    print("ok", errors)
    """
)


def test_float32_by_default_when_x64_is_off():
    result = subprocess.run(
        [sys.executable, "-c", X64_OFF], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_inputs_compute_in_float32(dtype):
    rng = np.random.default_rng(1)
    z_i = jnp.asarray(rng.normal(size=(12, 4)), dtype=dtype)
    z_j = jnp.asarray(rng.normal(size=(12, 4)), dtype=dtype)
    state = weince_jax.WEINCEState(jnp.full((), CONFIG.beta_init, jnp.float32))
    (loss, (new_state, stats)), (g_i, g_j) = GRAD(z_i, z_j, state, CONFIG)
    assert loss.dtype == jnp.float32 and stats["lambda"].dtype == jnp.float32
    assert g_i.dtype == g_j.dtype == jnp.dtype(dtype)
    assert new_state.beta_t.dtype == jnp.float32
    # Exactly the float32 computation on the same (upcast) values, gradients rounded at the end.
    up_i, up_j = z_i.astype(jnp.float32), z_j.astype(jnp.float32)
    (loss32, (state32, _)), (g32_i, g32_j) = GRAD(up_i, up_j, state, CONFIG)
    np.testing.assert_allclose(loss, loss32, rtol=1e-6)
    np.testing.assert_allclose(new_state.beta_t, state32.beta_t, rtol=1e-6)
    np.testing.assert_array_equal(g_i, g32_i.astype(dtype))
    np.testing.assert_array_equal(g_j, g32_j.astype(dtype))


def test_float32_inputs_with_x64_on_compute_in_float32_and_keep_a_float64_state():
    rng = np.random.default_rng(2)
    z_i = jnp.asarray(rng.normal(size=(12, 4)), dtype=jnp.float32)
    z_j = jnp.asarray(rng.normal(size=(12, 4)), dtype=jnp.float32)
    state = weince_jax.init_state(CONFIG)
    (loss, (new_state, stats)), (g_i, _) = GRAD(z_i, z_j, state, CONFIG)
    assert loss.dtype == g_i.dtype == stats["rho"].dtype == jnp.float32
    assert new_state.beta_t.dtype == jnp.float64
