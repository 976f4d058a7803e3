"""The WEINCE loss as a pure, differentiable JAX function (docs/math.md; gradient: section 6).

``weince_loss(z_i, z_j, state, config) -> (loss, (new_state, stats))``. One ``jax.custom_vjp``:
its primal is the core's ``two_view_forward``; its forward pass under ``jax.grad`` is the core's
``two_view_value_and_grad`` (the loss and its analytic gradient together), keeping only the
gradient, O(N d), for the backward pass, which scales it by the cotangent. So JAX
differentiates the same formula as every other backend.

On several devices (``axis_name`` inside ``jax.shard_map``, or rows sharded over Explicit mesh
axes) the core gets ``Collectives`` built from ``jax.lax`` over the mesh axis: each device's
rows against every device's, the global statistics, and the gradient of the global loss.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import weince_core as wc
from weince_core import WEINCEConfig
from weince_core.ops import cast_gradient
from weince_core.validation import check_config

Stats = dict[str, jax.Array]
AxisName = Hashable | tuple[Hashable, ...]

# A config is a pytree with no leaves and itself as static data: ``jax.jit(weince_loss)`` treats
# it as a compile-time constant (a new config compiles again) without ``static_argnames``.
try:
    jax.tree_util.register_static(WEINCEConfig)
except ValueError:  # registered already (this module imported twice, e.g. by importlib.reload)
    pass


class WEINCEState(NamedTuple):
    """What the loss carries from step to step: ``beta_t`` (docs/math.md section 4), a 0-d array.

    A NamedTuple, hence a pytree: it goes through ``jit``, ``scan`` and checkpoints with the
    rest of a train state, and can be donated.
    """

    beta_t: jax.Array


def init_state(config: WEINCEConfig | None = None, *, like: Any = None) -> WEINCEState:
    """The loss's state, ``WEINCEState(beta_t = config.beta_init)`` (docs/math.md section 4).

    ``beta_t`` is float64 when ``jax_enable_x64`` is on, else float32, whatever the inputs'
    dtype: the state carried between steps is never rounded to a half precision.

    Args:
        config: the paper preset when ``None``.
        like: an array whose device the state goes on (e.g. ``z_i``): that device, or for rows
            sharded over a mesh, replicated over that mesh. ``None``, a NumPy array or a traced
            array (under ``jit`` the state follows the inputs anyway): JAX's default device.

    Returns:
        ``WEINCEState(beta_t)``, a pytree holding a 0-d array.

    Raises:
        TypeError: ``config`` is not a ``WEINCEConfig`` or ``like`` not an array.
    """
    config = check_config(config)
    if like is not None and not isinstance(like, (jax.Array, np.ndarray)):
        raise TypeError(
            f"like must be a jax.Array (the state goes on its device) or None; "
            f"got {type(like).__name__}"
        )
    dtype = jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32
    beta_t = jnp.full((), config.beta_init, dtype=dtype)
    if not isinstance(like, jax.Array) or isinstance(like, jax.core.Tracer):
        return WEINCEState(beta_t)
    sharding = like.sharding
    if len(sharding.device_set) == 1:
        return WEINCEState(jax.device_put(beta_t, next(iter(sharding.device_set))))
    if isinstance(sharding, NamedSharding):
        return WEINCEState(jax.device_put(beta_t, NamedSharding(sharding.mesh, P())))
    return WEINCEState(beta_t)


def weince_loss(
    z_i: jax.Array,
    z_j: jax.Array,
    state: WEINCEState,
    config: WEINCEConfig | None = None,
    *,
    axis_name: AxisName | None = None,
) -> tuple[jax.Array, tuple[WEINCEState, Stats]]:
    """``(loss, (new_state, stats))`` of the two-view WEINCE loss, ``L = L_blend + w L_topM``.

    ``z_i``, ``z_j``: ``(N, d)`` arrays of one floating dtype, ``N >= 2``; ``state``: from
    ``init_state``; ``config``: the paper preset unless given (``None`` too). The result is
    shaped for ``jax.value_and_grad(..., has_aux=True)``: the gradient (docs/math.md section 6)
    reaches ``z_i`` and ``z_j``, in their dtype; ``new_state`` and ``stats`` carry none
    (``lambda`` and ``beta_t`` are constants of the loss, docs/math.md sections 1-4).

    ``config`` is static: a new config compiles again, nothing else does for equal shapes.
    The call is compiled (an inner ``jax.jit``) and runs on the inputs' device; inside a
    user's ``jax.jit``, ``jax.vmap`` (each batch its own statistics) or ``jax.grad`` it is
    traced like any JAX function. ``jax.jit(weince_loss, static_argnames="config")`` works too.
    float64 inputs compute in float64 (with ``jax_enable_x64``); float16 and bfloat16 in
    float32. Bad shapes or dtypes raise while tracing, before anything runs.

    Several devices: the global batch is every device's rows in mesh order, and the loss, its
    gradients, ``new_state`` and the summary statistics are those of one device with the whole
    batch (the statistics span the global batch). Two ways:

    * Under ``jax.jit`` on arrays whose rows are split over Explicit mesh axes
      (``jax.make_mesh``'s default), e.g. ``NamedSharding(mesh, P("data", None))``: call it as
      above. It runs the ``shard_map`` form below by itself; everything it returns is
      replicated (per-anchor statistics in the single-device order) and the gradient is
      sharded like ``z_i``. Over Auto axes XLA's partitioner shards the one-device program
      (the same results, with more communication).
    * Inside ``jax.shard_map``, with ``axis_name`` (a mesh axis or a tuple of them; static,
      hence ``static_argnames=("config", "axis_name")`` if you ``jit`` this function itself):
      ``z_i`` and ``z_j`` are this device's ``n`` rows (``in_specs=P(axis_name)``, ``n`` equal
      on every device). The loss, ``new_state`` and the summary statistics are the global ones,
      typed as replicated (``out_specs=P()``); the per-anchor ``lambda``, ``rho`` and ``d_aic``
      are those of the local ``2n`` anchors, ``z_i``'s rows then ``z_j``'s. ``shard_map`` must
      keep ``check_vma=True`` (its default; otherwise this raises), and run under ``jax.jit``.

    The gradient rule (``shard_map``): as the loss is typed replicated, the gradient that JAX
    computes inside the ``shard_map`` is already that of the global loss: the local rows get
    ``dL/d(local rows)``, and replicated parameters (``in_specs=P()``) the full ``dL/dparams``,
    equal on every device (JAX sums the devices' contributions itself, as the transpose of the
    implicit ``pvary``). Do not ``psum`` parameter gradients: that multiplies them by the
    number of devices (``pmean`` is harmless: it leaves a replicated value as it is). A
    ``jax.grad`` taken outside the ``shard_map`` (loss ``out_specs=P()``) is exact as well.

    Args:
        z_i: ``(N, d)`` embeddings of the first view (JAX or NumPy), ``N >= 2``.
        z_j: ``(N, d)`` embeddings of the second view.
        state: a ``WEINCEState`` from ``init_state``.
        config: static; the paper preset when ``None``.
        axis_name: inside ``jax.shard_map``, the mesh axis (or axes) the rows are split over.

    Returns:
        ``(loss, (new_state, stats))``: the core's ``(loss, new_state, stats)`` with the state and
        the statistics nested as ``jax.value_and_grad(..., has_aux=True)`` requires.

    Raises:
        TypeError: an argument of a wrong type or dtype, or an ``axis_name`` that is not one.
        ValueError: a wrong shape or device; an ``axis_name`` not bound here, or over which the
            inputs do not vary.
    """
    config = check_config(config)
    z_i, z_j = _as_jax_array("z_i", z_i), _as_jax_array("z_j", z_j)
    if not isinstance(state, WEINCEState):
        raise TypeError(
            f"state must be a WEINCEState from weince_jax.init_state; got {type(state).__name__}"
        )
    if axis_name is not None:
        axis_name = _check_axis_name(axis_name, z_i, z_j)
        return _compiled_loss(z_i, z_j, state, config, axis_name)
    rows = _explicit_row_axes(z_i, z_j)
    if rows is not None:
        return _explicitly_sharded_loss(z_i, z_j, state, config, rows)
    return _compiled_loss(z_i, z_j, state, config)


@functools.partial(jax.jit, static_argnames=("config", "axis_name"))
def _compiled_loss(
    z_i: jax.Array,
    z_j: jax.Array,
    state: WEINCEState,
    config: WEINCEConfig,
    axis_name: AxisName | None = None,
) -> tuple[jax.Array, tuple[WEINCEState, Stats]]:
    loss, beta_t, stats = _loss(config, z_i.dtype, axis_name, z_i, z_j, state.beta_t)
    return loss, (WEINCEState(beta_t), stats)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _loss(
    config: WEINCEConfig,
    dtype: Any,
    axis_name: AxisName | None,
    z_i: jax.Array,
    z_j: jax.Array,
    beta_t: jax.Array,
) -> tuple[jax.Array, jax.Array, Stats]:
    """``(loss, new_beta_t, stats)``; ``dtype`` (the inputs') is the gradient's dtype."""
    loss, new_beta_t, stats, _ = wc.two_view_forward(
        z_i, z_j, beta_t, config, collectives=_collectives(axis_name)
    )
    return loss, new_beta_t, stats


def _loss_forward(
    config: WEINCEConfig,
    dtype: Any,
    axis_name: AxisName | None,
    z_i: jax.Array,
    z_j: jax.Array,
    beta_t: jax.Array,
) -> tuple[tuple[jax.Array, jax.Array, Stats], tuple[jax.Array, jax.Array]]:
    # The gradient is computed with the loss (S and the blended logits made once) and kept as
    # the residual, in the compute dtype: scaled by the cotangent before rounding to dtype.
    grad_dtype = jnp.promote_types(dtype, jnp.float32)
    loss, grads, new_beta_t, stats = wc.two_view_value_and_grad(
        z_i, z_j, beta_t, config, dtype=grad_dtype, collectives=_collectives(axis_name)
    )
    return (loss, new_beta_t, stats), grads


def _loss_backward(
    config: WEINCEConfig,
    dtype: Any,
    axis_name: AxisName | None,
    grads: tuple[jax.Array, jax.Array],
    cotangents: tuple[jax.Array, Any, Any],
) -> tuple[jax.Array, jax.Array, None]:
    grad_loss = cotangents[0]  # those of new_beta_t and stats are dropped: no gradient there
    grad_i, grad_j = (cast_gradient(grad * grad_loss, dtype, jnp) for grad in grads)
    return grad_i, grad_j, None  # None: a zero cotangent for beta_t


_loss.defvjp(_loss_forward, _loss_backward)


def _collectives(axis_name: AxisName | None) -> wc.Collectives | None:
    """The core's collectives over a ``shard_map`` axis (or axes), ``None`` for one device.

    ``gather`` returns an invariant (replicated) array, so ``beta_t`` and the summary statistics
    built from gathered rows are typed as equal on every device, like the ``psum``-ed loss.
    """
    if axis_name is None:
        return None
    return wc.Collectives(
        rank=lax.axis_index(axis_name),
        world_size=lax.axis_size(axis_name),
        gather=lambda x: lax.all_gather(x, axis_name, axis=0, tiled=True, to="invarying"),
        sum=lambda x: lax.psum(x, axis_name),
        sum_scatter=lambda x: lax.psum_scatter(x, axis_name, scatter_dimension=0, tiled=True),
    )


def _check_axis_name(axis_name: Any, *arrays: jax.Array) -> AxisName:
    """``axis_name`` as a hashable static argument, once it is known to be a manual axis (or
    axes) over which ``arrays`` vary: their rows are split over it, in ``shard_map``."""
    if isinstance(axis_name, list):
        axis_name = tuple(axis_name)
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    try:
        hash(axis_name)
        if not names:
            raise TypeError
        lax.axis_size(axis_name)
    except TypeError:
        raise TypeError(
            f"axis_name must be a mesh axis name or a tuple of them; got {axis_name!r}"
        ) from None
    except NameError:
        raise ValueError(
            f"axis_name={axis_name!r} is not bound here: weince_loss(..., axis_name=...) must "
            "be called inside jax.shard_map over a mesh with that axis"
        ) from None
    for array in arrays:
        if not set(names) <= _varying_axes(array):
            raise ValueError(
                f"with axis_name={axis_name!r}, z_i and z_j must be this device's rows, varying "
                f"over {axis_name!r} (shard_map's in_specs=P({axis_name!r}) and check_vma=True, "
                "its default: without these types JAX cannot tell that the loss is the same on "
                "every device, and the gradients through shard_map come out wrong); got "
                f"{jax.typeof(array)}"
            )
    return axis_name


def _varying_axes(x: jax.Array) -> frozenset:
    """The manual axes over which ``x`` varies (its type's ``{V:...}``; empty without checks)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.9; before, aval.vma
    return frozenset(manual.varying if manual is not None else getattr(aval, "vma", ()))


def _explicit_row_axes(z_i: jax.Array, z_j: jax.Array) -> AxisName | None:
    """The Explicit mesh axes over which ``z_i``'s (else ``z_j``'s) rows are split, or None.

    Only Explicit axes (``jax.sharding.AxisType.Explicit``, ``jax.make_mesh``'s default) are
    part of an array's type while tracing; rows over Auto axes are left to XLA's partitioner.
    """
    for z in (z_i, z_j):
        sharding = getattr(jax.typeof(z), "sharding", None)
        spec = getattr(sharding, "spec", None)
        if z.ndim == 2 and spec is not None and len(spec) and spec[0] is not None:
            return spec[0]
    return None


@functools.partial(jax.jit, static_argnames=("config", "rows"))
def _explicitly_sharded_loss(
    z_i: jax.Array, z_j: jax.Array, state: WEINCEState, config: WEINCEConfig, rows: AxisName
) -> tuple[jax.Array, tuple[WEINCEState, Stats]]:
    """The ``shard_map`` form over the mesh axes ``rows``, with the single device's results:
    the per-anchor statistics come back in the global order (``z_i``'s rows, then ``z_j``'s).
    """
    mesh = jax.typeof(z_i).sharding.mesh

    def reshard(x: jax.Array, *spec: Any) -> jax.Array:
        return jax.sharding.reshard(x, NamedSharding(mesh, P(*spec)))

    z_i, z_j = reshard(z_i, rows, None), reshard(z_j, rows, None)

    def local(z_i: jax.Array, z_j: jax.Array, beta_t: jax.Array) -> Any:
        loss, (state, stats) = _compiled_loss(z_i, z_j, WEINCEState(beta_t), config, rows)
        per_anchor = {k: jnp.reshape(v, (2, -1)) for k, v in stats.items() if v.ndim}
        return loss, state.beta_t, {k: v for k, v in stats.items() if not v.ndim}, per_anchor

    out_specs = (P(), P(), P(), P(None, rows))
    loss, beta_t, stats, per_anchor = jax.shard_map(
        local, mesh=mesh, in_specs=(P(rows), P(rows), P()), out_specs=out_specs
    )(z_i, z_j, reshard(state.beta_t))
    for key, value in per_anchor.items():
        stats[key] = jnp.reshape(reshard(value, None, None), (-1,))
    return loss, (WEINCEState(beta_t), stats)


def _as_jax_array(name: str, value: Any) -> jax.Array:
    if isinstance(value, (jax.Array, np.ndarray)):
        return jnp.asarray(value)
    raise TypeError(
        f"{name} must be a JAX (or NumPy) array of shape (N, d); got {type(value).__name__}"
    )
