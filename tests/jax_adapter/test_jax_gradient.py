"""JAX's gradient of ``weince_loss`` is the core's analytic gradient, float64
(docs/math.md section 6).

``lambda`` and ``beta_t`` are constants of the loss and the hard-negative selection is not
differentiated, so finite differences of the whole loss only equal the gradient where those do
not move: with ``kappa_rho = kappa_aic = 0`` (``lambda = 1/4`` for every anchor) and a fixed
``beta_t``, ``jax.test_util.check_grads`` applies directly. The general case is checked against
finite differences of the loss with the statistics frozen (``tests/reference.py``).
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
check_grads = pytest.importorskip("jax.test_util").check_grads

from reference import frozen_loss, numeric_gradient  # noqa: E402

import weince_core as wc  # noqa: E402
import weince_jax  # noqa: E402
from weince_jax import WEINCEConfig  # noqa: E402

# Small tails so that the selections matter at these sizes; constant gate and beta_t.
SMOOTH = {
    "infonce": WEINCEConfig.infonce(),
    "blend, constant lambda": WEINCEConfig.blend(kappa_rho=0.0, kappa_aic=0.0, min_tail=8),
    "paper, constant lambda and beta_t": WEINCEConfig.paper(
        kappa_rho=0.0, kappa_aic=0.0, min_tail=8, top_m=5, estimate_beta=False
    ),
}


def random_views(n: int, d: int, seed: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    z_i = rng.normal(size=(n, d))
    return jnp.asarray(z_i), jnp.asarray(z_i + 0.7 * rng.normal(size=(n, d)))


@pytest.mark.parametrize("name", list(SMOOTH))
def test_gradient_passes_jax_check_grads(name):
    config = SMOOTH[name]
    z_i, z_j = random_views(6, 3, seed=1)
    state = weince_jax.init_state(config)

    def loss(a, b):
        return weince_jax.weince_loss(a, b, state, config=config)[0]

    check_grads(loss, (z_i, z_j), order=1, modes=("rev",), eps=1e-6, rtol=1e-5)


@pytest.mark.parametrize("preset", ["paper", "blend"])
def test_gradient_equals_finite_differences_of_the_frozen_loss(preset):
    config = WEINCEConfig.preset(preset, min_tail=8, top_m=5, beta_min_tail=16)
    z_i, z_j = random_views(12, 4, seed=2)
    state = weince_jax.init_state(config)
    grad = jax.jit(jax.grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True))
    (grad_i, grad_j), _ = grad(z_i, z_j, state, config)
    # The frozen statistics: lambda and beta_t from the JAX run, the hard negatives from the core.
    _, (_, stats) = weince_jax.weince_loss(z_i, z_j, state, config)
    _, _, _, residuals = wc.nt_xent_forward(
        np.asarray(z_i), np.asarray(z_j), np.float64(4.0), config
    )
    top = residuals.rows.top_index
    args = (
        np.asarray(stats["lambda"]),
        float(stats["beta_t"]),
        None if top is None else np.asarray(top),
        config,
    )
    a, b = np.asarray(z_i), np.asarray(z_j)
    np.testing.assert_allclose(
        grad_i, numeric_gradient(lambda x: frozen_loss(x, b, *args), a), rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(
        grad_j, numeric_gradient(lambda x: frozen_loss(a, x, *args), b), rtol=1e-6, atol=1e-9
    )


def test_chain_rule_scales_by_the_upstream_gradient_and_reaches_parameters():
    config = WEINCEConfig.paper(min_tail=8, top_m=5)
    x_i, x_j = random_views(10, 6, seed=3)
    w = jnp.asarray(np.random.default_rng(4).normal(size=(6, 4)))
    state = weince_jax.init_state(config)

    def loss_of_w(w, scale):
        return scale * weince_jax.weince_loss(x_i @ w, x_j @ w, state, config)[0]

    grad_w = jax.grad(loss_of_w)(w, 1.0)
    np.testing.assert_allclose(jax.grad(loss_of_w)(w, 3.0), 3.0 * grad_w, rtol=1e-12)
    # The chain rule by hand: dL/dw = x_i^T dL/dz_i + x_j^T dL/dz_j.
    (g_i, g_j), _ = jax.grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True)(
        x_i @ w, x_j @ w, state, config
    )
    np.testing.assert_allclose(grad_w, x_i.T @ g_i + x_j.T @ g_j, rtol=1e-10, atol=1e-14)


def test_state_gets_a_zero_gradient_and_the_statistics_none():
    config = WEINCEConfig.paper(min_tail=8, top_m=5, beta_min_tail=16)
    z_i, z_j = random_views(8, 3, seed=5)
    state = weince_jax.init_state(config)

    def loss_plus_stats(a, state):
        loss, (new_state, stats) = weince_jax.weince_loss(a, z_j, state, config)
        # Terms that would change the gradient if statistics or state carried one:
        return loss + jnp.sum(stats["lambda"]) + new_state.beta_t

    grad_z, grad_state = jax.jit(jax.grad(loss_plus_stats, argnums=(0, 1)))(z_i, state)
    expected = jax.jit(jax.grad(lambda a: weince_jax.weince_loss(a, z_j, state, config)[0]))(z_i)
    np.testing.assert_array_equal(grad_z, expected)
    assert float(grad_state.beta_t) == 0.0
