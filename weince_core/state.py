"""The online state: one scalar, ``beta_t`` (SPEC.md section 4)."""

from __future__ import annotations

from array_api_compat import device

from ._types import Array
from .config import WEINCEConfig
from .validation import check_config, compute_dtype, namespace_of


def init_state(config: WEINCEConfig | None = None, *, like: Array) -> Array:
    """``beta_t = beta_init`` as a 0-d array of ``like``'s namespace and device.

    Its dtype is the one ``like`` is computed in: float64 for float64, else float32.
    """
    config = check_config(config)
    xp = namespace_of(like=like)
    dtype = compute_dtype(like.dtype, xp)
    return xp.full((), config.beta_init, dtype=dtype, device=device(like))
