"""``weince_loss`` under JAX's transformations: ``jit`` (compiled once), ``vmap``, pytree state.

Compilations are counted two ways: traces of the jitted function (a Python counter that runs only
while tracing) and, where this JAX version has it, the size of the jitted function's cache.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import weince_core as wc  # noqa: E402
import weince_jax  # noqa: E402
from weince_jax import WEINCEConfig, WEINCEState  # noqa: E402

CONFIG = WEINCEConfig.paper(min_tail=8, top_m=5, beta_min_tail=16)


def views(seed: int, n: int = 12, d: int = 5, batch: tuple[int, ...] = ()) -> tuple[jax.Array, ...]:
    rng = np.random.default_rng(seed)
    z_i = rng.normal(size=(*batch, n, d))
    return jnp.asarray(z_i), jnp.asarray(z_i + 0.5 * rng.normal(size=z_i.shape))


def cache_size(jitted) -> int | None:
    size = getattr(jitted, "_cache_size", None)
    return size() if callable(size) else None


def test_training_steps_of_equal_shapes_compile_once():
    traces = []

    def step(z_i, z_j, state, config):
        traces.append(1)  # runs only when JAX traces (and then compiles) the step
        (loss, (state, stats)), grads = jax.value_and_grad(
            weince_jax.weince_loss, argnums=(0, 1), has_aux=True
        )(z_i, z_j, state, config)
        return loss, grads, state, stats["beta_updated"]

    jitted = jax.jit(step, static_argnames="config")
    state, betas = weince_jax.init_state(CONFIG), []
    for seed in range(5):
        _, _, state, updated = jitted(*views(seed), state, config=CONFIG)
        betas.append(float(state.beta_t))
    assert bool(updated), "these inputs should move beta_t, so the state really changes"
    assert len(set(betas)) == len(betas)
    assert len(traces) == 1
    assert cache_size(jitted) in (1, None)

    # A new config is a new static argument: one more compilation, then none.
    other = CONFIG.replace(temperature=0.2)
    for seed in range(2):
        jitted(*views(seed), state, config=other)
    assert len(traces) == 2
    assert cache_size(jitted) in (2, None)


@pytest.mark.slow
def test_eager_calls_compile_once_per_shape(monkeypatch):
    traces = []
    forward = wc.two_view_forward

    def counting_forward(*args, **kwargs):
        traces.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(wc, "two_view_forward", counting_forward)
    jax.clear_caches()
    state = weince_jax.init_state(CONFIG)
    for seed in range(3):
        _, (state, _) = weince_jax.weince_loss(*views(seed, n=9), state, CONFIG)
    assert len(traces) == 1
    weince_jax.weince_loss(*views(0, n=10), state, CONFIG)  # a new shape compiles again
    assert len(traces) == 2


def test_jit_with_config_static_or_as_a_leafless_pytree():
    z_i, z_j = views(1)
    state = weince_jax.init_state(CONFIG)
    static = jax.jit(weince_jax.weince_loss, static_argnames="config")
    expected = static(z_i, z_j, state, config=CONFIG)[0]
    assert weince_jax.weince_loss(z_i, z_j, state, config=CONFIG)[0] == expected  # eager
    # The config registers as a pytree with no leaves, so plain jit treats it as static too.
    assert jax.tree_util.tree_leaves(CONFIG) == []
    plain = jax.jit(weince_jax.weince_loss)
    assert plain(z_i, z_j, state, CONFIG)[0] == expected
    blend = WEINCEConfig.blend()
    assert plain(z_i, z_j, state, blend)[0] == static(z_i, z_j, state, config=blend)[0] != expected


def test_no_host_callbacks_in_the_compiled_step():
    z_i, z_j = views(2)
    grad = jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True)
    args = (z_i, z_j, weince_jax.init_state(CONFIG), CONFIG)
    forward = str(jax.make_jaxpr(weince_jax.weince_loss, static_argnums=3)(*args))
    assert "custom_vjp_call" in forward  # JAX differentiates the core's analytic gradient
    jaxpr = str(jax.make_jaxpr(grad, static_argnums=3)(*args))
    hlo = jax.jit(grad, static_argnums=3).lower(*args).as_text()
    for text in (forward, jaxpr, hlo):
        assert "callback" not in text.lower()


def test_vmap_over_independent_batches_equals_a_python_loop():
    z_i, z_j = views(3, batch=(3,))
    grad = jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True)
    # Each batch its own state as well: a batched pytree.
    states = WEINCEState(jnp.asarray([4.0, 5.0, 3.0]))
    (loss, (new_states, stats)), (g_i, g_j) = jax.jit(
        jax.vmap(grad, in_axes=(0, 0, 0, None)), static_argnums=3
    )(z_i, z_j, states, CONFIG)
    one_batch = jax.jit(grad, static_argnums=3)
    for b in range(3):
        state = WEINCEState(states.beta_t[b])
        (loss_b, (state_b, stats_b)), (g_i_b, g_j_b) = one_batch(z_i[b], z_j[b], state, CONFIG)
        np.testing.assert_allclose(loss[b], loss_b, rtol=1e-13)
        np.testing.assert_allclose(g_i[b], g_i_b, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(g_j[b], g_j_b, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(new_states.beta_t[b], state_b.beta_t, rtol=1e-13)
        assert stats.keys() == stats_b.keys()
        for key, value in stats_b.items():
            np.testing.assert_allclose(stats[key][b], value, rtol=1e-12, err_msg=key)
    # Each batch has its own statistics: no two batches share rho0 or beta_t.
    assert len(set(np.asarray(stats["rho0"]).tolist())) == 3
    assert len(set(np.asarray(new_states.beta_t).tolist())) == 3


def test_state_is_a_pytree_that_can_be_donated_and_rebuilt():
    state = weince_jax.init_state(CONFIG)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    assert len(leaves) == 1 and leaves[0] is state.beta_t
    assert jax.tree_util.tree_unflatten(treedef, leaves) == state
    step = jax.jit(lambda s, a, b: weince_jax.weince_loss(a, b, s, CONFIG)[1][0], donate_argnums=0)
    expected = weince_jax.weince_loss(*views(4), state, CONFIG)[1][0]
    new_state = step(weince_jax.init_state(CONFIG), *views(4))
    assert isinstance(new_state, WEINCEState)
    assert new_state.beta_t.dtype == state.beta_t.dtype and new_state.beta_t.shape == ()
    assert float(new_state.beta_t) == float(expected.beta_t) != CONFIG.beta_init


def test_init_state_dtype_device_and_value():
    config = WEINCEConfig(beta_init=2.5)
    assert float(weince_jax.init_state(config).beta_t) == 2.5
    assert weince_jax.init_state().beta_t.dtype == jnp.float64  # x64 is on in the test session
    like = jnp.zeros(3, dtype=jnp.float32)  # gives the device, not the dtype
    assert weince_jax.init_state(like=like).beta_t.dtype == jnp.float64
    cpu = jax.devices("cpu")[0]
    assert weince_jax.init_state(like=jax.device_put(like, cpu)).beta_t.devices() == {cpu}
    with pytest.raises(TypeError, match=r"^like must be a jax\.Array"):
        weince_jax.init_state(like=[1.0])
    with pytest.raises(TypeError, match="config must be a WEINCEConfig"):
        weince_jax.init_state("paper")


def test_results_live_on_the_inputs_device():
    cpu = jax.devices("cpu")[-1]
    z_i, z_j = (jax.device_put(z, cpu) for z in views(5))
    loss, (state, stats) = weince_jax.weince_loss(z_i, z_j, weince_jax.init_state(CONFIG), CONFIG)
    for leaf in jax.tree_util.tree_leaves((loss, state, stats)):
        assert leaf.devices() == {cpu}
