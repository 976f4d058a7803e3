"""WEINCE on CuPy arrays: the loss and its analytic gradient, on the inputs' GPU.

CuPy has no autograd, so ``value_and_grad`` returns the gradient with the loss: the core's
forward and analytic gradient (docs/math.md section 6), the same formula every backend uses::

    import cupy, weince_cupy
    state = weince_cupy.init_state(like=z_i)  # beta_t, on z_i's device
    loss, (g_i, g_j), state, stats = weince_cupy.value_and_grad(z_i, z_j, state)

The pairing forms of docs/math.md section 9 take the core's arguments and return the same
``(loss, grads, new_state, stats)``, one gradient per array argument::

    loss, (g_x, g_y, g_scale), state, stats = weince_cupy.two_tower_value_and_grad(
        x, y, state, scale=scale
    )
    loss, (g_q, g_k, g_n), state, stats = weince_cupy.explicit_negatives_value_and_grad(
        q, k, queue, state
    )
    loss, (g_z,), state, stats = weince_cupy.multi_positive_value_and_grad(z, labels, state)

The calling convention is the core's: ``*_value_and_grad`` returns ``(loss, grads, new_state,
stats)``, ``weince_loss`` (no gradient) ``(loss, new_state, stats)``; ``config=None`` is the
paper preset; ``init_state(config=None, *, like=None)`` places the state on ``like``'s device.

Everything runs on the device that holds ``z_i`` (whatever the current device is) and on the
current stream; results, gradients and the new state live there too. Nothing is copied to the
host, so the call queues GPU work and returns without synchronising.
"""

from __future__ import annotations

import os
from typing import Any

import cupy

import weince_core as wc
from weince_core import WEINCEConfig
from weince_core.validation import check_config

__all__ = [
    "WEINCEConfig",
    "explicit_negatives_value_and_grad",
    "init_state",
    "multi_positive_value_and_grad",
    "two_tower_value_and_grad",
    "two_view_value_and_grad",
    "value_and_grad",
    "weince_loss",
]

if os.environ.get("WEINCE_KERNELS", "1").strip().lower() not in ("0", "off", "false", "no"):
    from . import _kernels

    _kernels.register()  # its CUDA kernels (kernels/*.cu): the tails' selection, the row pass


def init_state(
    config: WEINCEConfig | None = None, *, like: cupy.ndarray | None = None
) -> cupy.ndarray:
    """The loss's state, ``beta_t = config.beta_init`` (docs/math.md section 4).

    A 0-d float64 array, whatever the inputs' dtype: the state carried between steps loses
    nothing.

    Args:
        config: the paper preset when ``None``.
        like: an array whose device the state goes on (e.g. ``z_i``); ``None``: the current
            device.

    Returns:
        ``beta_t``, a 0-d float64 ``cupy.ndarray``.

    Raises:
        TypeError: ``config`` is not a ``WEINCEConfig`` or ``like`` not a ``cupy.ndarray``.
    """
    config = check_config(config)
    if like is not None and not isinstance(like, cupy.ndarray):
        raise TypeError(
            f"like must be a cupy.ndarray (the state goes on its device) or None; "
            f"got {type(like).__name__}"
        )
    with cupy.cuda.Device(None) if like is None else like.device:
        return cupy.full((), config.beta_init, dtype=cupy.float64)


def _check_cupy(**arrays: Any) -> None:
    for name, value in arrays.items():
        if not isinstance(value, cupy.ndarray):
            raise TypeError(f"{name} must be a cupy.ndarray; got {type(value).__name__}")


def value_and_grad(
    z_i: cupy.ndarray,
    z_j: cupy.ndarray,
    state: cupy.ndarray,
    config: WEINCEConfig | None = None,
) -> tuple[cupy.ndarray, tuple[cupy.ndarray, cupy.ndarray], cupy.ndarray, dict[str, cupy.ndarray]]:
    """The two-view loss and its gradients, on ``z_i``'s device (docs/math.md sections 6 and 9).

    Args:
        z_i: ``(N, d)`` embeddings of the first view, ``N >= 2``.
        z_j: ``(N, d)`` embeddings of the second view.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.

    Returns:
        ``(loss, (dL/dz_i, dL/dz_j), new_state, stats)``; gradients in the inputs' dtype.

    Raises:
        TypeError: an argument is not a ``cupy.ndarray`` (named), or as the core's.
        ValueError: as the core's (shapes, devices).
    """
    _check_cupy(z_i=z_i, z_j=z_j, state=state)
    with z_i.device:
        return wc.two_view_value_and_grad(z_i, z_j, state, config)


def weince_loss(
    z_i: cupy.ndarray,
    z_j: cupy.ndarray,
    state: cupy.ndarray,
    config: WEINCEConfig | None = None,
) -> tuple[cupy.ndarray, cupy.ndarray, dict[str, cupy.ndarray]]:
    """The two-view loss without its gradient, on ``z_i``'s device.

    Args:
        z_i: ``(N, d)`` embeddings of the first view, ``N >= 2``.
        z_j: ``(N, d)`` embeddings of the second view.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.

    Returns:
        ``(loss, new_state, stats)``.

    Raises:
        TypeError: an argument is not a ``cupy.ndarray`` (named), or as the core's.
        ValueError: as the core's (shapes, devices).
    """
    _check_cupy(z_i=z_i, z_j=z_j, state=state)
    with z_i.device:
        return wc.two_view(z_i, z_j, state, config)


two_view_value_and_grad = value_and_grad  # the two-view form under the name the others follow


def two_tower_value_and_grad(
    x: cupy.ndarray,
    y: cupy.ndarray,
    state: cupy.ndarray,
    config: WEINCEConfig | None = None,
    *,
    scale: cupy.ndarray | float | None = None,
) -> tuple[cupy.ndarray, tuple[cupy.ndarray, ...], cupy.ndarray, dict[str, cupy.ndarray]]:
    """The two-tower (CLIP) loss and its gradients, on ``x``'s device; as the core's
    ``two_tower_value_and_grad``.

    Args:
        x: ``(N, d)`` rows of one tower.
        y: ``(N, d)`` rows of the other.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.
        scale: a positive 0-d array (CLIP's ``exp(logit_scale)``), a float, or ``None`` for
            ``1 / config.temperature``.

    Returns:
        ``(loss, (dL/dx, dL/dy, dL/dscale), new_state, stats)``.

    Raises:
        TypeError: an argument is not a ``cupy.ndarray`` (named), or as the core's.
        ValueError: as the core's (shapes, devices).
    """
    _check_cupy(x=x, y=y, state=state)
    with x.device:
        return wc.two_tower_value_and_grad(x, y, state, config, scale=scale)


def explicit_negatives_value_and_grad(
    q: cupy.ndarray,
    k: cupy.ndarray,
    n: cupy.ndarray,
    state: cupy.ndarray,
    config: WEINCEConfig | None = None,
    *,
    in_batch_negatives: bool = False,
) -> tuple[cupy.ndarray, tuple[cupy.ndarray, ...], cupy.ndarray, dict[str, cupy.ndarray]]:
    """The explicit-negatives loss and its gradients, on ``q``'s device; as the core's
    ``explicit_negatives_value_and_grad``.

    Args:
        q: ``(N, d)`` queries.
        k: ``(N, d)`` their positive keys.
        n: a shared ``(L, d)`` queue or paired ``(N, P, d)`` negatives.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.
        in_batch_negatives: the other queries' keys are negatives too.

    Returns:
        ``(loss, (dL/dq, dL/dk, dL/dn), new_state, stats)``.

    Raises:
        TypeError: an argument is not a ``cupy.ndarray`` (named), or as the core's.
        ValueError: as the core's (shapes, devices).
    """
    _check_cupy(q=q, k=k, n=n, state=state)
    with q.device:
        return wc.explicit_negatives_value_and_grad(
            q, k, n, state, config, in_batch_negatives=in_batch_negatives
        )


def multi_positive_value_and_grad(
    z: cupy.ndarray,
    labels: cupy.ndarray,
    state: cupy.ndarray,
    config: WEINCEConfig | None = None,
) -> tuple[cupy.ndarray, tuple[cupy.ndarray], cupy.ndarray, dict[str, cupy.ndarray]]:
    """The multi-positive (SupCon) loss and its gradient, on ``z``'s device; as the core's
    ``multi_positive_value_and_grad``.

    Args:
        z: ``(R, d)`` rows.
        labels: ``(R,)`` integers: rows with equal labels are positives of each other.
        state: ``beta_t`` from ``init_state``.
        config: the paper preset when ``None``.

    Returns:
        ``(loss, (dL/dz,), new_state, stats)``.

    Raises:
        TypeError: an argument is not a ``cupy.ndarray`` (named), or as the core's.
        ValueError: as the core's (shapes, devices).
    """
    _check_cupy(z=z, labels=labels, state=state)
    with z.device:
        return wc.multi_positive_value_and_grad(z, labels, state, config)
