"""The online state: one scalar, ``beta_t`` (docs/math.md section 4)."""

from __future__ import annotations

from array_api_compat import device

from ._types import Array
from .config import WEINCEConfig
from .validation import check_config, compute_dtype, namespace_of


def init_state(config: WEINCEConfig | None = None, *, like: Array) -> Array:
    """The loss's state, ``beta_t = config.beta_init`` (docs/math.md section 4).

    Args:
        config: the paper preset when ``None``.
        like: an array (e.g. ``z_i``) whose namespace and device the state takes; its dtype is
            the one ``like`` is computed in: float64 for float64, else float32.

    Returns:
        ``beta_t``, a 0-d array.

    Raises:
        TypeError: ``like`` is not an array, or ``config`` not a ``WEINCEConfig``.
    """
    config = check_config(config)
    xp = namespace_of(like=like)
    dtype = compute_dtype(like.dtype, xp)
    return xp.full((), config.beta_init, dtype=dtype, device=device(like))
