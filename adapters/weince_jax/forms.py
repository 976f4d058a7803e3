"""The pairing forms of docs/math.md section 9 as pure, differentiable JAX functions.

``two_tower`` (CLIP), ``explicit_negatives`` (queue, memory bank, mined negatives) and
``multi_positive`` (SupCon) follow ``weince_loss`` (the two-view form): the core form's arguments,
``config`` static, a ``WEINCEState`` in and out, ``(loss, (new_state, stats))`` back, shaped for
``jax.value_and_grad(..., has_aux=True)``. One ``jax.custom_vjp``, ``_form_loss``, serves every
form: its primal is the core's ``<form>_forward``, its forward pass under ``jax.grad`` the core's
``<form>_value_and_grad`` (the loss and the analytic gradient of every differentiable input
together), keeping only the gradients for the backward pass, which scales them by the cotangent.

Two-tower on several devices: ``axis_name`` inside ``jax.shard_map`` (each device its rows of
both towers), or ``x`` and ``y`` sharded by rows over Explicit mesh axes under ``jax.jit``, as
for ``weince_loss``: each device computes its rows against every device's columns, with the
statistics of the global batch, and the results are those of one device with the whole batch.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import weince_core as wc
from weince_core import WEINCEConfig
from weince_core.validation import check_config

from .loss import AxisName, Stats, WEINCEState, _as_jax_array, _check_axis_name, _collectives

Options = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Form:
    """How a pairing form is called in the core: its name (the core's function name), its
    positional arrays before ``state``, keyword arrays (``scale``, may be ``None``), and the
    arrays whose gradients the core returns, in its order."""

    name: str
    arrays: tuple[str, ...]
    keywords: tuple[str, ...] = ()
    differentiable: tuple[str, ...] = ()

    @property
    def inputs(self) -> tuple[str, ...]:
        """The form's array arguments in call order.

        Returns:
            ``arrays`` then ``keywords``.
        """
        return self.arrays + self.keywords

    def call(
        self, suffix: str, inputs: tuple[Any, ...], beta_t: Any, config: Any, **kw: Any
    ) -> Any:
        """The core's ``<name><suffix>`` on ``inputs``.

        Args:
            suffix: ``"_forward"`` or ``"_value_and_grad"``.
            inputs: the array arguments in ``inputs``'s order; keyword arrays that are ``None`` are
                left out (the core's default).
            beta_t: the state.
            config: the configuration.
            **kw: further keyword arguments of the core's function.

        Returns:
            What the core's function returns.
        """
        count = len(self.arrays)
        keywords = dict(zip(self.keywords, inputs[count:], strict=True))
        keywords = {k: v for k, v in keywords.items() if v is not None}
        function = getattr(wc, self.name + suffix)
        return function(*inputs[:count], beta_t, config, **keywords, **kw)


FORMS = {
    "two_tower": Form("two_tower", ("x", "y"), ("scale",), ("x", "y", "scale")),
    "explicit_negatives": Form("explicit_negatives", ("q", "k", "n"), (), ("q", "k", "n")),
    "multi_positive": Form("multi_positive", ("z", "labels"), (), ("z",)),
}


def two_tower(
    x: jax.Array,
    y: jax.Array,
    state: WEINCEState,
    config: WEINCEConfig | None = None,
    *,
    scale: jax.Array | float | None = None,
    axis_name: AxisName | None = None,
) -> tuple[jax.Array, tuple[WEINCEState, Stats]]:
    """``(loss, (new_state, stats))`` of the two-tower (CLIP) form (docs/math.md section 9).

    Args:
        x: ``(N, d)`` rows of one tower (images), ``N >= 2``.
        y: ``(N, d)`` rows of the other (texts), row ``a`` matched with ``x``'s row ``a``.
        state: from ``init_state``.
        config: static; the paper preset unless given.
        scale: a positive 0-d array, CLIP's ``exp(logit_scale)`` (differentiable), or a
            float; ``None`` means ``1 / config.temperature``.
        axis_name: inside ``jax.shard_map``, the mesh axis (or axes) over which the rows of
            ``x`` and ``y`` are split, as in ``weince_loss``; ``scale`` replicated.

    Returns:
        ``(loss, (new_state, stats))``; the gradient reaches ``x``, ``y`` and ``scale``.
        ``stats["lambda"]`` per row: the rows of ``x``, then those of ``y`` (with
        ``axis_name``, this device's; sharded under ``jit``, the global order).
    """
    config = check_config(config)
    x, y = _as_jax_array("x", x), _as_jax_array("y", y)
    state = _check_state(state)
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, (int, float, jax.Array, np.ndarray)):
            raise TypeError(
                f"scale must be a 0-d array (exp(logit_scale)), a float or None; got "
                f"{type(scale).__name__}"
            )
        scale = jnp.asarray(scale)
    form = FORMS["two_tower"]
    if axis_name is not None:
        axis_name = _check_axis_name(axis_name, x, y)
        return _compiled(form, config, (), axis_name, (x, y, scale), state)
    rows = _explicit_rows(x, y)
    if rows is not None:
        return _sharded_two_tower(x, y, scale, state, config, rows)
    return _compiled(form, config, (), None, (x, y, scale), state)


def explicit_negatives(
    q: jax.Array,
    k: jax.Array,
    n: jax.Array,
    state: WEINCEState,
    config: WEINCEConfig | None = None,
    *,
    in_batch_negatives: bool = False,
) -> tuple[jax.Array, tuple[WEINCEState, Stats]]:
    """``(loss, (new_state, stats))`` of the explicit-negatives form (docs/math.md section 9).

    Args:
        q: ``(N, d)`` queries.
        k: ``(N, d)`` their positive keys.
        n: ``(L, d)`` negatives shared by every query (a queue: ``jax.lax.stop_gradient`` it
            unless it should get a gradient), or ``(N, P, d)``, each query's own.
        state: from ``init_state``.
        config: static; the paper preset unless given.
        in_batch_negatives: static; the other queries' keys are negatives too.

    Returns:
        ``(loss, (new_state, stats))``; the gradient reaches ``q``, ``k`` and ``n``.
    """
    config = check_config(config)
    q, k, n = _as_jax_array("q", q), _as_jax_array("k", k), _as_jax_array("n", n)
    state = _check_state(state)
    if not isinstance(in_batch_negatives, bool):
        raise TypeError(
            f"in_batch_negatives must be True or False; got {type(in_batch_negatives).__name__}"
        )
    options = (("in_batch_negatives", in_batch_negatives),)
    return _compiled(FORMS["explicit_negatives"], config, options, None, (q, k, n), state)


def multi_positive(
    z: jax.Array,
    labels: jax.Array,
    state: WEINCEState,
    config: WEINCEConfig | None = None,
) -> tuple[jax.Array, tuple[WEINCEState, Stats]]:
    """``(loss, (new_state, stats))`` of the multi-positive (SupCon ``L_out``) form.

    Args:
        z: ``(R, d)`` rows.
        labels: ``(R,)`` integer array: rows with equal labels are positives of each other.
        state: from ``init_state``.
        config: static; the paper preset unless given.

    Returns:
        ``(loss, (new_state, stats))``; the gradient reaches ``z``.
    """
    config = check_config(config)
    z, labels = _as_jax_array("z", z), _as_jax_array("labels", labels)
    state = _check_state(state)
    return _compiled(FORMS["multi_positive"], config, (), None, (z, labels), state)


def _check_state(state: Any) -> WEINCEState:
    if not isinstance(state, WEINCEState):
        raise TypeError(
            f"state must be a WEINCEState from weince_jax.init_state; got {type(state).__name__}"
        )
    return state


@functools.partial(jax.jit, static_argnames=("form", "config", "options", "axis_name"))
def _compiled(
    form: Form,
    config: WEINCEConfig,
    options: Options,
    axis_name: AxisName | None,
    inputs: tuple[jax.Array | None, ...],
    state: WEINCEState,
) -> tuple[jax.Array, tuple[WEINCEState, Stats]]:
    dtypes = tuple(None if x is None else x.dtype for x in inputs)
    loss, beta_t, stats = _form_loss(form, config, options, axis_name, dtypes, inputs, state.beta_t)
    return loss, (WEINCEState(beta_t), stats)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3, 4))
def _form_loss(
    form: Form,
    config: WEINCEConfig,
    options: Options,
    axis_name: AxisName | None,
    dtypes: tuple[Any, ...],
    inputs: tuple[jax.Array | None, ...],
    beta_t: jax.Array,
) -> tuple[jax.Array, jax.Array, Stats]:
    """``(loss, new_beta_t, stats)``; ``dtypes`` (the inputs') are the gradients' dtypes."""
    # The forward with residuals (it takes collectives); XLA drops the unused residuals.
    loss, new_beta_t, stats, _ = form.call(
        "_forward", inputs, beta_t, config, **_collective_kw(axis_name), **dict(options)
    )
    return loss, new_beta_t, stats


def _form_loss_forward(
    form: Form,
    config: WEINCEConfig,
    options: Options,
    axis_name: AxisName | None,
    dtypes: tuple[Any, ...],
    inputs: tuple[jax.Array | None, ...],
    beta_t: jax.Array,
) -> tuple[tuple[jax.Array, jax.Array, Stats], tuple[jax.Array, ...]]:
    # The gradients in the compute dtype: scaled by the cotangent before rounding to dtypes.
    grad_dtype = jnp.promote_types(dtypes[0], jnp.float32)
    loss, grads, new_beta_t, stats = form.call(
        "_value_and_grad",
        inputs,
        beta_t,
        config,
        dtype=grad_dtype,
        **_collective_kw(axis_name),
        **dict(options),
    )
    return (loss, new_beta_t, stats), tuple(grads)


def _form_loss_backward(
    form: Form,
    config: WEINCEConfig,
    options: Options,
    axis_name: AxisName | None,
    dtypes: tuple[Any, ...],
    grads: tuple[jax.Array, ...],
    cotangents: tuple[jax.Array, Any, Any],
) -> tuple[tuple[jax.Array | None, ...], None]:
    grad_loss = cotangents[0]  # those of new_beta_t and stats are dropped: no gradient there
    result: list[jax.Array | None] = [None] * len(form.inputs)
    for name, grad in zip(form.differentiable, grads, strict=True):
        at = form.inputs.index(name)
        if dtypes[at] is not None:
            result[at] = (grad * grad_loss).astype(dtypes[at])
    return tuple(result), None


_form_loss.defvjp(_form_loss_forward, _form_loss_backward)


def _collective_kw(axis_name: AxisName | None) -> dict[str, Any]:
    """``collectives=`` for the core over ``axis_name``, nothing on one device."""
    return {} if axis_name is None else {"collectives": _collectives(axis_name)}


def _explicit_rows(x: jax.Array, y: jax.Array) -> AxisName | None:
    """The Explicit mesh axes over which ``x``'s (else ``y``'s) rows are split, or None."""
    for z in (x, y):
        spec = getattr(getattr(jax.typeof(z), "sharding", None), "spec", None)
        if z.ndim == 2 and spec is not None and len(spec) and spec[0] is not None:
            return spec[0]
    return None


@functools.partial(jax.jit, static_argnames=("config", "rows"))
def _sharded_two_tower(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array | None,
    state: WEINCEState,
    config: WEINCEConfig,
    rows: AxisName,
) -> tuple[jax.Array, tuple[WEINCEState, Stats]]:
    """The ``shard_map`` form over the mesh axes ``rows``, with the single device's results
    (per-row statistics in the global order: ``x``'s rows, then ``y``'s)."""
    mesh = jax.typeof(x).sharding.mesh

    def reshard(value: jax.Array, *spec: Any) -> jax.Array:
        return jax.sharding.reshard(value, NamedSharding(mesh, P(*spec)))

    x, y = reshard(x, rows, None), reshard(y, rows, None)
    form = FORMS["two_tower"]

    def local(x: jax.Array, y: jax.Array, scale: Any, beta_t: jax.Array) -> Any:
        loss, (state, stats) = _compiled(form, config, (), rows, (x, y, scale), WEINCEState(beta_t))
        per_row = {key: jnp.reshape(v, (2, -1)) for key, v in stats.items() if v.ndim}
        return loss, state.beta_t, {k: v for k, v in stats.items() if not v.ndim}, per_row

    if scale is not None:
        scale = reshard(scale)
    loss, beta_t, stats, per_row = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(rows), P(rows), P(), P()),
        out_specs=(P(), P(), P(), P(None, rows)),
    )(x, y, scale, reshard(state.beta_t))
    for key, value in per_row.items():
        stats[key] = jnp.reshape(reshard(value, None, None), (-1,))
    return loss, (WEINCEState(beta_t), stats)
