"""WEINCE on CuPy arrays: the loss and its analytic gradient, on the inputs' GPU.

CuPy has no autograd, so ``value_and_grad`` returns the gradient with the loss: the core's
forward and analytic gradient (SPEC.md section 6), the same formula every backend uses::

    import cupy, weince_cupy
    state = weince_cupy.init_state()
    loss, (g_i, g_j), state, stats = weince_cupy.value_and_grad(z_i, z_j, state)

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

__all__ = ["WEINCEConfig", "init_state", "value_and_grad", "weince_loss"]

if os.environ.get("WEINCE_KERNELS", "1").strip().lower() not in ("0", "off", "false", "no"):
    from . import _kernels

    _kernels.register()  # its CUDA kernels (kernels/*.cu): the tails' selection, the row pass


def init_state(
    config: WEINCEConfig | None = None, *, device: int | cupy.cuda.Device | None = None
) -> cupy.ndarray:
    """``beta_t = config.beta_init`` as a 0-d float64 array on ``device`` (default: current).

    float64 so that the state carried between steps loses nothing, whatever the inputs' dtype.
    """
    config = check_config(config)
    with cupy.cuda.Device(device):
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
    """``(loss, (dL/dz_i, dL/dz_j), new_state, stats)``; gradients in the inputs' dtype."""
    _check_cupy(z_i=z_i, z_j=z_j, state=state)
    with z_i.device:
        return wc.nt_xent_value_and_grad(z_i, z_j, state, config)


def weince_loss(
    z_i: cupy.ndarray,
    z_j: cupy.ndarray,
    state: cupy.ndarray,
    config: WEINCEConfig | None = None,
) -> tuple[cupy.ndarray, cupy.ndarray, dict[str, cupy.ndarray]]:
    """``(loss, new_state, stats)`` without the gradient."""
    _check_cupy(z_i=z_i, z_j=z_j, state=state)
    with z_i.device:
        return wc.nt_xent(z_i, z_j, state, config)
