"""Input checks, run before any computation. Shapes, dtypes and devices only: never values."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, device

from ._types import Array, Namespace
from .config import WEINCEConfig


def namespace_of(**arrays: Array) -> Namespace:
    """The one Array API namespace of all ``arrays``.

    Args:
        **arrays: the arrays, by the names the caller's user knows them by.

    Returns:
        Their namespace, ``xp``.

    Raises:
        TypeError: one is not an array (named), or they come from different libraries.
    """
    for name, value in arrays.items():
        try:
            array_namespace(value)
        except TypeError:
            raise TypeError(
                f"{name} must be an array (NumPy, PyTorch, JAX, CuPy or any Array API library); "
                f"got {type(value).__name__}"
            ) from None
    try:
        return array_namespace(*arrays.values())
    except TypeError:
        kinds = ", ".join(
            f"{name}: {type(v).__module__}.{type(v).__name__}" for name, v in arrays.items()
        )
        raise TypeError(
            f"{', '.join(arrays)} must come from the same array library; got {kinds}"
        ) from None


def check_config(config: Any) -> WEINCEConfig:
    """The configuration to use.

    Args:
        config: a ``WEINCEConfig``, or ``None`` for the paper preset.

    Returns:
        ``config`` itself, or ``WEINCEConfig()`` (the paper preset) for ``None``.

    Raises:
        TypeError: ``config`` is anything else.
    """
    if config is None:
        return WEINCEConfig()
    if not isinstance(config, WEINCEConfig):
        hint = (
            " (for a preset by name: WEINCEConfig.preset(name))" if isinstance(config, str) else ""
        )
        raise TypeError(f"config must be a WEINCEConfig or None; got {type(config).__name__}{hint}")
    return config


def check_floating(name: str, x: Array, xp: Namespace) -> None:
    """Require a real floating dtype.

    Args:
        name: the argument's name, for the message.
        x: the array.
        xp: its namespace.

    Raises:
        TypeError: ``x`` has another dtype.
    """
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype; got {x.dtype}")


def check_integral(name: str, x: Array, xp: Namespace) -> None:
    """Require an integer dtype (column indices).

    Args:
        name: the argument's name, for the message.
        x: the array.
        xp: its namespace.

    Raises:
        TypeError: ``x`` has another dtype.
    """
    if not xp.isdtype(x.dtype, "integral"):
        raise TypeError(f"{name} must have an integer dtype (column indices); got {x.dtype}")


def check_same_device(names: tuple[str, str], a: Array, b: Array) -> None:
    """Require two arrays on one device.

    Args:
        names: the two arguments' names, for the message.
        a: the first array.
        b: the second.

    Raises:
        ValueError: they are on different devices.
    """
    if device(a) != device(b):
        raise ValueError(
            f"{names[0]} and {names[1]} must be on the same device; got {device(a)} and {device(b)}"
        )


def check_has_values(**arrays: Array) -> None:
    """Require arrays that hold values: not PyTorch tensors on the ``meta`` device (a shape, no
    numbers). Looks at the device only.

    Args:
        **arrays: the arrays, by name.

    Raises:
        ValueError: naming the first array without values.
    """
    for name, value in arrays.items():
        if getattr(value, "is_meta", False):
            raise ValueError(
                f"{name} is a meta tensor: it has a shape {tuple(value.shape)} but no values, and "
                "the loss needs numbers; make it on a real device (e.g. cpu or cuda)"
            )


def check_pair(z_i: Array, z_j: Array, state: Array) -> Namespace:
    """Validate the two views and the state of a two-view loss.

    Args:
        z_i: ``(N, d)``, ``N >= 2``, ``d >= 1``, a floating dtype.
        z_j: the shape, dtype and device of ``z_i``.
        state: a 0-d floating array on ``z_i``'s device.

    Returns:
        Their namespace.

    Raises:
        TypeError: a wrong type or dtype, named.
        ValueError: a wrong shape or device, named.
    """
    xp = namespace_of(z_i=z_i, z_j=z_j, state=state)
    check_has_values(z_i=z_i, z_j=z_j, state=state)
    if z_i.ndim != 2:
        raise ValueError(f"z_i must be a 2-D array of shape (N, d); got shape {tuple(z_i.shape)}")
    if tuple(z_j.shape) != tuple(z_i.shape):
        raise ValueError(
            f"z_j must have the shape of z_i {tuple(z_i.shape)}; got {tuple(z_j.shape)}"
        )
    n, d = z_i.shape
    if n < 2:
        raise ValueError(f"z_i and z_j need N >= 2 pairs (rows); got N = {n}")
    if d < 1:
        raise ValueError(f"z_i and z_j need at least one column; got shape {tuple(z_i.shape)}")
    check_floating("z_i", z_i, xp)
    check_floating("z_j", z_j, xp)
    if z_j.dtype != z_i.dtype:
        raise TypeError(f"z_j must have the dtype of z_i ({z_i.dtype}); got {z_j.dtype}")
    check_same_device(("z_i", "z_j"), z_i, z_j)
    if state.ndim != 0:
        raise ValueError(
            f"state must be a 0-d array (beta_t) from init_state; got shape {tuple(state.shape)}"
        )
    check_floating("state", state, xp)
    check_same_device(("state", "z_i"), state, z_i)
    return xp


def check_rows(
    sim: Array,
    positive: Array,
    excluded: Array | None,
    beta_t: Array | None = None,
    negatives: Array | None = None,
) -> Namespace:
    """Validate the arguments of the rows API (``rows_forward``, ``rows_value_and_grad``,
    ``rows_backward``).

    Args:
        sim: ``(R, C)``, a floating dtype.
        positive: ``(R,)`` integer columns, or with ``negatives`` (per-row sets) a boolean mask
            of ``sim``'s shape.
        excluded: ``(R, E)`` integer columns, or ``None``.
        beta_t: a 0-d floating array, or ``None`` (``rows_backward``).
        negatives: a boolean mask of ``sim``'s shape, or ``None``.

    Returns:
        Their namespace.

    Raises:
        TypeError: a wrong type or dtype, named.
        ValueError: a wrong shape or device, named.
    """
    arrays = {"sim": sim, "positive": positive}
    for name, value in (("excluded", excluded), ("beta_t", beta_t), ("negatives", negatives)):
        if value is not None:
            arrays[name] = value
    xp = namespace_of(**arrays)
    check_has_values(**arrays)
    if sim.ndim != 2:
        raise ValueError(f"sim must be a 2-D array of shape (R, C); got shape {tuple(sim.shape)}")
    check_floating("sim", sim, xp)
    rows = sim.shape[0]
    if negatives is not None:
        for name in ("positive", "negatives"):
            mask = arrays[name]
            if tuple(mask.shape) != tuple(sim.shape):
                raise ValueError(
                    f"{name} must be a boolean mask of sim's shape {tuple(sim.shape)} (per-row "
                    f"sets); got shape {tuple(mask.shape)}"
                )
            if not xp.isdtype(mask.dtype, "bool"):
                raise TypeError(f"{name} must be a boolean mask (per-row sets); got {mask.dtype}")
    else:
        if tuple(positive.shape) != (rows,):
            raise ValueError(
                f"positive must be a 1-D array of a column per row of sim, shape ({rows},); got "
                f"shape {tuple(positive.shape)}"
            )
        check_integral("positive", positive, xp)
    if excluded is not None:
        if excluded.ndim != 2 or excluded.shape[0] != rows:
            raise ValueError(
                f"excluded must be None or a 2-D array (R, E) with sim's R = {rows} rows; got "
                f"shape {tuple(excluded.shape)}"
            )
        check_integral("excluded", excluded, xp)
    if beta_t is not None:
        if beta_t.ndim != 0:
            raise ValueError(
                f"beta_t must be a 0-d array (from init_state); got shape {tuple(beta_t.shape)}"
            )
        check_floating("beta_t", beta_t, xp)
    for name, value in arrays.items():
        if name != "sim":
            check_same_device((name, "sim"), value, sim)
    return xp


def check_residuals(residuals: Any, kind: type, made_by: str) -> None:
    """Require the residuals of the matching forward pass.

    Args:
        residuals: what the caller passed.
        kind: the residuals' class.
        made_by: the function that returns them, for the message.

    Raises:
        TypeError: ``residuals`` is not a ``kind``.
    """
    if not isinstance(residuals, kind):
        raise TypeError(
            f"residuals must be the {kind.__name__} that {made_by} returns; "
            f"got {type(residuals).__name__}"
        )


def compute_dtype(dtype: Any, xp: Namespace) -> Any:
    """The dtype the loss is computed in.

    Args:
        dtype: the inputs' dtype.
        xp: their namespace.

    Returns:
        float64 for float64; float32 for every other float (float32, float16, bfloat16).
    """
    return xp.float64 if dtype == xp.float64 else xp.float32
