"""On a GPU: the reference vectors, equality with the CPU, placement, and the speed goal.

Run on a machine with a CUDA build of JAX: ``pytest -m gpu tests/jax_adapter``. Elsewhere every
test here is skipped with the reason. float32 comparisons use full-precision matmuls
(``jax.default_matmul_precision("highest")``): JAX may otherwise multiply float32 in TF32.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import weince_core as wc  # noqa: E402
import weince_jax  # noqa: E402
from weince_core.testing import RTOL_FLOAT32, RTOL_FLOAT64, assert_close_normwise  # noqa: E402
from weince_jax import WEINCEConfig  # noqa: E402


def _gpu():
    try:
        return jax.devices("gpu")[0]
    except RuntimeError:
        return None


GPU = _gpu()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(GPU is None, reason="no JAX GPU device (needs a CUDA build of jax)"),
]
GRAD = jax.jit(
    jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True), static_argnums=3
)


def on_gpu(a, dtype):
    return jax.device_put(jnp.asarray(a, dtype=dtype), GPU)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_reference_vectors_on_the_gpu(golden, dtype):
    rtol = RTOL_FLOAT64 if dtype == "float64" else RTOL_FLOAT32
    state = weince_jax.init_state(golden.config, like=on_gpu(np.zeros(()), "float32"))
    with jax.default_matmul_precision("highest"):
        for t in range(golden.steps):
            ref = golden.step(t)
            (loss, (state, stats)), (g_i, g_j) = GRAD(
                on_gpu(ref["zi"], dtype), on_gpu(ref["zj"], dtype), state, golden.config
            )
            assert loss.devices() == g_i.devices() == state.beta_t.devices() == {GPU}
            for what, actual, expected in [
                ("loss", loss, ref["loss"]),
                ("grad_zi", g_i, ref["grad_zi"]),
                ("grad_zj", g_j, ref["grad_zj"]),
                ("lambda", stats["lambda"], ref["lambda"]),
                ("beta_t", state.beta_t, ref["beta_t"]),
            ]:
                assert_close_normwise(
                    np.asarray(actual, np.float64), expected, rtol, f"{golden.name} {t} {what}"
                )


@pytest.mark.parametrize("preset", ["paper", "blend"])
def test_gpu_float32_equals_the_core_in_float64_on_the_cpu(preset):
    config = WEINCEConfig.preset(preset)
    rng = np.random.default_rng(0)
    a = rng.normal(size=(512, 64))
    b = a + 0.5 * rng.normal(size=a.shape)
    ref_loss, (ref_i, ref_j), ref_state, ref_stats = wc.nt_xent_value_and_grad(
        a, b, np.float64(4.0), config
    )
    with jax.default_matmul_precision("highest"):
        (loss, (state, stats)), (g_i, g_j) = GRAD(
            on_gpu(a, "float32"), on_gpu(b, "float32"), weince_jax.init_state(config), config
        )
    for what, actual, expected in [
        ("loss", loss, ref_loss),
        ("grad_i", g_i, ref_i),
        ("grad_j", g_j, ref_j),
        ("beta_t", state.beta_t, ref_state),
        ("lambda", stats["lambda"], ref_stats["lambda"]),
    ]:
        assert_close_normwise(np.asarray(actual, np.float64), expected, RTOL_FLOAT32, what)


def test_a_state_committed_to_another_device_is_refused_by_name():
    z = on_gpu(np.ones((4, 3)), "float32")
    state = weince_jax.init_state(like=jax.device_put(jnp.zeros(()), jax.devices("cpu")[0]))
    with pytest.raises(ValueError, match="incompatible devices"):
        weince_jax.weince_loss(z, z, state)


@pytest.mark.parametrize("spread", [1.0, 0.1])  # Gaussian rows, then tight clusters
def test_the_gpu_row_selection_equals_lax_top_k(spread):
    # On a GPU ops.top_k takes the thresholds-and-compaction path (lax.platform_dependent):
    # the same values and columns as lax.top_k, on the GPU.
    from weince_core import ops

    rng = np.random.default_rng(1)
    z = rng.normal(size=(16, 64))[rng.integers(0, 16, 2048)] * (spread < 1)
    z = z + spread * rng.normal(size=(2048, 64))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = on_gpu(z @ z.T, "float32")
    values, columns = jax.jit(lambda s: ops.top_k(s, 205, jnp))(sim)
    expected_values, expected_columns = jax.lax.top_k(sim, 205)
    assert values.devices() == {GPU}
    np.testing.assert_array_equal(np.asarray(values), np.asarray(expected_values))
    np.testing.assert_array_equal(np.asarray(columns), np.asarray(expected_columns))
