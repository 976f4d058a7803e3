"""The module docstring's optax training step: the loss inside ``jax.jit``, state carried."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
optax = pytest.importorskip("optax", reason="optax is not installed (pip install optax)")

import weince_jax  # noqa: E402
from weince_jax import WEINCEConfig  # noqa: E402


def test_optax_training_step_lowers_the_loss_compiles_once_and_carries_the_state():
    config = WEINCEConfig.paper(min_tail=8, top_m=10, beta_min_tail=64)
    optimizer = optax.adam(3e-2)
    traces = []

    def loss_fn(params, x_i, x_j, loss_state):
        return weince_jax.weince_loss(x_i @ params["w"], x_j @ params["w"], loss_state, config)

    @jax.jit
    def train_step(params, opt_state, loss_state, x_i, x_j):
        traces.append(1)
        (loss, (loss_state, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, x_i, x_j, loss_state
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss_state, loss, stats

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(32, 12)), dtype=jnp.float32)
    params = {"w": jnp.asarray(rng.normal(size=(12, 8)) / 12**0.5, dtype=jnp.float32)}
    opt_state, loss_state = optimizer.init(params), weince_jax.init_state(config)
    losses, betas = [], []
    for _ in range(25):
        noise_i, noise_j = (0.3 * rng.normal(size=x.shape) for _ in range(2))
        params, opt_state, loss_state, loss, stats = train_step(
            params,
            opt_state,
            loss_state,
            x + noise_i.astype(np.float32),
            x + noise_j.astype(np.float32),
        )
        losses.append(float(loss))
        betas.append(float(loss_state.beta_t))
    assert len(traces) == 1
    assert params["w"].dtype == jnp.float32
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, losses
    assert len(set(betas)) > 1, "beta_t is carried and updated from step to step"
    assert float(stats["beta_t"]) == betas[-1]


def test_the_module_docstring_example_runs():
    code = weince_jax.__doc__.split("the loss inside ``jax.jit``::")[1].split(
        "Keep ``loss_state``"
    )[0]
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 32)).astype(np.float32)
    batches = [
        (x + 0.3 * rng.normal(size=x.shape), x + 0.3 * rng.normal(size=x.shape)) for _ in range(3)
    ]
    namespace = {"batches": [tuple(b.astype(np.float32) for b in pair) for pair in batches]}
    exec(textwrap.dedent(code), namespace)
    assert np.isfinite(float(namespace["loss"]))
    assert float(namespace["loss_state"].beta_t) != 4.0  # three steps moved beta_t
