"""The WEINCE loss as a pure, differentiable JAX function (SPEC.md; gradient: section 6).

``weince_loss(z_i, z_j, state, config) -> (loss, (new_state, stats))``. The forward is the core's
``nt_xent_forward`` and the gradient its analytic ``nt_xent_backward``, joined by one
``jax.custom_vjp``, so JAX differentiates the same formula as every other backend and keeps only
the core's O(N d) residuals between the passes (``S`` is recomputed in the backward pass).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import weince_core as wc
from weince_core import WEINCEConfig

Stats = dict[str, jax.Array]

# A config is a pytree with no leaves and itself as static data: ``jax.jit(weince_loss)`` treats
# it as a compile-time constant (a new config compiles again) without ``static_argnames``.
try:
    jax.tree_util.register_static(WEINCEConfig)
except ValueError:  # registered already (this module imported twice, e.g. by importlib.reload)
    pass


class WEINCEState(NamedTuple):
    """What the loss carries from step to step: ``beta_t`` (SPEC.md section 4), a 0-d array.

    A NamedTuple, hence a pytree: it goes through ``jit``, ``scan`` and checkpoints with the
    rest of a train state, and can be donated.
    """

    beta_t: jax.Array


def init_state(
    config: WEINCEConfig | None = None,
    dtype: Any = None,
    *,
    device: jax.Device | None = None,
) -> WEINCEState:
    """``beta_t = config.beta_init`` (SPEC.md section 4), a 0-d array of ``dtype``.

    ``dtype`` defaults to float64 when ``jax_enable_x64`` is on, else float32 (half precisions
    are refused: the state is carried across steps and must not be rounded). ``device`` places
    it (default: JAX's default device; under ``jit`` it follows the inputs anyway).
    """
    config = _check_config(config)
    x64 = bool(jax.config.read("jax_enable_x64"))
    dtype = jnp.dtype(dtype if dtype is not None else jnp.float64 if x64 else jnp.float32)
    if dtype not in (jnp.float32, jnp.float64):
        raise TypeError(f"dtype must be float32 or float64 (or None); got {dtype}")
    if dtype == jnp.float64 and not x64:
        raise ValueError(
            "dtype float64 needs jax_enable_x64 (jax.config.update('jax_enable_x64', True))"
        )
    beta_t = jnp.full((), config.beta_init, dtype=dtype)
    return WEINCEState(beta_t if device is None else jax.device_put(beta_t, device))


def weince_loss(
    z_i: jax.Array,
    z_j: jax.Array,
    state: WEINCEState,
    config: WEINCEConfig | None = WEINCEConfig.paper(),  # noqa: B008 (frozen: a safe default)
) -> tuple[jax.Array, tuple[WEINCEState, Stats]]:
    """``(loss, (new_state, stats))`` of the two-view WEINCE loss, ``L = L_blend + w L_topM``.

    ``z_i``, ``z_j``: ``(N, d)`` arrays of one floating dtype, ``N >= 2``; ``state``: from
    ``init_state``; ``config``: the paper preset unless given (``None`` too). The result is
    shaped for ``jax.value_and_grad(..., has_aux=True)``: the gradient (SPEC.md section 6)
    reaches ``z_i`` and ``z_j``, in their dtype; ``new_state`` and ``stats`` carry none
    (``lambda`` and ``beta_t`` are constants of the loss, SPEC.md sections 1-4).

    ``config`` is static: a new config compiles again, nothing else does for equal shapes.
    The call is compiled (an inner ``jax.jit``) and runs on the inputs' device; inside a
    user's ``jax.jit``, ``jax.vmap`` (each batch its own statistics) or ``jax.grad`` it is
    traced like any JAX function. ``jax.jit(weince_loss, static_argnames="config")`` works too.
    float64 inputs compute in float64 (with ``jax_enable_x64``); float16 and bfloat16 in
    float32. Bad shapes or dtypes raise while tracing, before anything runs.
    """
    config = _check_config(config)
    z_i, z_j = _as_jax_array("z_i", z_i), _as_jax_array("z_j", z_j)
    if not isinstance(state, WEINCEState):
        raise TypeError(
            f"state must be a WEINCEState from weince_jax.init_state; got {type(state).__name__}"
        )
    return _compiled_loss(z_i, z_j, state, config)


@functools.partial(jax.jit, static_argnames="config")
def _compiled_loss(
    z_i: jax.Array, z_j: jax.Array, state: WEINCEState, config: WEINCEConfig
) -> tuple[jax.Array, tuple[WEINCEState, Stats]]:
    loss, beta_t, stats = _loss(config, z_i.dtype, z_i, z_j, state.beta_t)
    return loss, (WEINCEState(beta_t), stats)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _loss(
    config: WEINCEConfig, dtype: Any, z_i: jax.Array, z_j: jax.Array, beta_t: jax.Array
) -> tuple[jax.Array, jax.Array, Stats]:
    """``(loss, new_beta_t, stats)``; ``dtype`` (the inputs') is the gradient's dtype."""
    loss, new_beta_t, stats, _ = wc.nt_xent_forward(z_i, z_j, beta_t, config)
    return loss, new_beta_t, stats


def _loss_forward(
    config: WEINCEConfig, dtype: Any, z_i: jax.Array, z_j: jax.Array, beta_t: jax.Array
) -> tuple[tuple[jax.Array, jax.Array, Stats], wc.NTXentResiduals]:
    loss, new_beta_t, stats, residuals = wc.nt_xent_forward(z_i, z_j, beta_t, config)
    return (loss, new_beta_t, stats), residuals


def _loss_backward(
    config: WEINCEConfig,
    dtype: Any,
    residuals: wc.NTXentResiduals,
    cotangents: tuple[jax.Array, Any, Any],
) -> tuple[jax.Array, jax.Array, None]:
    grad_loss = cotangents[0]  # those of new_beta_t and stats are dropped: no gradient there
    grad_i, grad_j = wc.nt_xent_backward(residuals, config, dtype=dtype, grad_output=grad_loss)
    return grad_i, grad_j, None  # None: a zero cotangent for beta_t


_loss.defvjp(_loss_forward, _loss_backward)


def _as_jax_array(name: str, value: Any) -> jax.Array:
    if isinstance(value, (jax.Array, np.ndarray)):
        return jnp.asarray(value)
    raise TypeError(
        f"{name} must be a JAX (or NumPy) array of shape (N, d); got {type(value).__name__}"
    )


def _check_config(config: Any) -> WEINCEConfig:
    if config is None:
        return WEINCEConfig()
    if not isinstance(config, WEINCEConfig):
        hint = (
            " (for a preset by name use WEINCEConfig.preset(name))"
            if isinstance(config, str)
            else ""
        )
        raise TypeError(f"config must be a WEINCEConfig or None; got {type(config).__name__}{hint}")
    return config
