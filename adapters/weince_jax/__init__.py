"""WEINCE for JAX: a pure loss function with explicit state, for ``jit``, ``grad`` and ``vmap``.

    import weince_jax
    from weince_jax import WEINCEConfig

    state = weince_jax.init_state(like=z_i)     # WEINCEState(beta_t), a pytree, on z_i's device
    loss, (state, stats) = weince_jax.weince_loss(z_i, z_j, state, config=WEINCEConfig.paper())

The pairing forms of docs/math.md section 9 take the core's arguments and return the same::

    loss, (state, stats) = weince_jax.two_tower(x, y, state, config, scale=jnp.exp(logit_scale))
    loss, (state, stats) = weince_jax.explicit_negatives(q, k, queue, state, config)
    loss, (state, stats) = weince_jax.multi_positive(z, labels, state, config)

The calling convention is the core's forward form, ``(loss, new_state, stats)``, with the state
and the statistics nested as ``(loss, (new_state, stats))``: ``jax.value_and_grad(...,
has_aux=True)`` requires a function to return ``(value, aux)``. The gradient comes from
``jax.grad`` rather than in the result. Every function takes ``config=None`` for the paper
preset, and ``init_state(config=None, *, like=None)`` places the state on ``like``'s device.

``z_i``, ``z_j`` are ``(N, d)`` views. The gradient is the core's analytic one (docs/math.md
section 6) through a ``jax.custom_vjp``. ``config`` (a frozen ``WEINCEConfig``) is static: a new
config compiles again, nothing else does for equal shapes. ``weince_loss`` is compiled already
and may be called eagerly; ``jax.jit(weince_loss, static_argnames="config")`` works as well.
float64 with ``jax_enable_x64`` on, else float32; float16 and bfloat16 inputs compute in float32.

A training step with optax, the loss inside ``jax.jit``::

    import jax, optax
    import weince_jax
    from weince_jax import WEINCEConfig

    config = WEINCEConfig.paper()
    optimizer = optax.adamw(1e-3)

    def loss_fn(params, x_i, x_j, loss_state):
        z_i, z_j = x_i @ params["w"], x_j @ params["w"]        # any encoder
        return weince_jax.weince_loss(z_i, z_j, loss_state, config=config)

    @jax.jit
    def train_step(params, opt_state, loss_state, x_i, x_j):
        (loss, (loss_state, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, x_i, x_j, loss_state
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss_state, loss, stats

    params = {"w": jax.random.normal(jax.random.key(0), (32, 16)) / 32**0.5}
    opt_state, loss_state = optimizer.init(params), weince_jax.init_state(config)
    for x_i, x_j in batches:                                    # (N, 32) arrays each
        params, opt_state, loss_state, loss, stats = train_step(
            params, opt_state, loss_state, x_i, x_j
        )

Keep ``loss_state`` with the parameters (checkpoint it with them; ``donate_argnums`` may donate
it). ``stats`` (``lambda_mean``, ``beta_t``, per-anchor ``lambda``, ...) are device arrays:
reading one with ``float()`` waits for the step, so collect them and read them back rarely.

On several devices the loss, gradients and state are those of one device with the whole batch.
The step above runs as it is on a batch whose rows are sharded over an Explicit mesh axis
(``jax.make_mesh``'s default) with ``params`` and ``loss_state`` replicated::

    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    rows, replicated = NamedSharding(mesh, P("data", None)), NamedSharding(mesh, P())
    x_i, x_j = jax.device_put(x_i, rows), jax.device_put(x_j, rows)

or, written per device, inside ``jax.shard_map`` with ``axis_name``::

    def local_step(params, opt_state, loss_state, x_i, x_j):     # this device's rows
        def loss_fn(params):
            z_i, z_j = x_i @ params["w"], x_j @ params["w"]
            return weince_jax.weince_loss(z_i, z_j, loss_state, config=config, axis_name="data")

        (loss, (loss_state, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)  # no psum, no pmean
        return optax.apply_updates(params, updates), opt_state, loss_state, loss

    train_step = jax.jit(jax.shard_map(
        local_step, mesh=mesh,
        in_specs=(P(), P(), P(), P("data"), P("data")), out_specs=(P(), P(), P(), P()),
    ))

The gradient JAX computes inside the ``shard_map`` is already that of the global loss, the same
on every device: ``psum`` would multiply it by the number of devices (``weince_loss`` explains).
"""

from weince_core import WEINCEConfig

from .forms import explicit_negatives, multi_positive, two_tower
from .loss import WEINCEState, init_state, weince_loss

two_view = weince_loss  # the two-view form under the name the other forms follow

__all__ = [
    "WEINCEConfig",
    "WEINCEState",
    "explicit_negatives",
    "init_state",
    "multi_positive",
    "two_tower",
    "two_view",
    "weince_loss",
]
