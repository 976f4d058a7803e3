"""Input checks, run before any computation. Shapes, dtypes and devices only: never values."""

from __future__ import annotations

from typing import Any

from array_api_compat import array_namespace, device

from .config import WEINCEConfig

Array = Any
Namespace = Any


def namespace_of(**arrays: Array) -> Namespace:
    """The one Array API namespace of all ``arrays``, or a ``TypeError`` naming them."""
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
    """``config`` itself, or the paper preset for ``None``; a ``TypeError`` for anything else."""
    if config is None:
        return WEINCEConfig()
    if not isinstance(config, WEINCEConfig):
        hint = (
            " (for a preset by name: WEINCEConfig.preset(name))" if isinstance(config, str) else ""
        )
        raise TypeError(f"config must be a WEINCEConfig or None; got {type(config).__name__}{hint}")
    return config


def check_floating(name: str, x: Array, xp: Namespace) -> None:
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype; got {x.dtype}")


def check_same_device(names: tuple[str, str], a: Array, b: Array) -> None:
    if device(a) != device(b):
        raise ValueError(
            f"{names[0]} and {names[1]} must be on the same device; got {device(a)} and {device(b)}"
        )


def check_pair(z_i: Array, z_j: Array, state: Array) -> Namespace:
    """Validate the two views and the state of a two-view loss; return their namespace."""
    xp = namespace_of(z_i=z_i, z_j=z_j, state=state)
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


def compute_dtype(dtype: Any, xp: Namespace) -> Any:
    """float64 stays float64; every other float (float32, float16, bfloat16) computes in float32."""
    return xp.float64 if dtype == xp.float64 else xp.float32
