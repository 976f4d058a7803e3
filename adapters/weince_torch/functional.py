"""The WEINCE loss as a differentiable PyTorch function (SPEC.md; gradient: section 6).

``weince_loss(z_i, z_j, state, config) -> (loss, new_state, stats)`` is pure: the caller keeps
``state`` (``beta_t``). Autograd goes through one ``torch.autograd.Function`` whose forward is the
core's ``nt_xent_forward`` and whose backward is the core's analytic gradient
``nt_xent_backward``, so PyTorch differentiates the same formula as every other backend, and
only the core's O(N d) residuals are kept between forward and backward (``S`` is recomputed).
"""

from __future__ import annotations

from typing import Any

import torch

import weince_core as wc
from weince_core import WEINCEConfig

# The statistics the core returns, in the order the autograd Function returns them (a Function
# returns a flat tuple of tensors; a dict output would not be marked non-differentiable under
# torch.compile). A test checks that this is exactly the core's set.
STAT_KEYS = (
    "lambda",
    "d_aic",
    "rho",
    "rho0",
    "beta_t",
    "beta_hat",
    "beta_r2",
    "beta_updated",
    "lambda_mean",
    "frac_lambda_above_half",
    "loss_blend",
    "loss_weibit",
    "loss_softmax",
)


def init_state(
    config: WEINCEConfig | None = None, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """``beta_t = config.beta_init`` as a 0-d float64 tensor on ``device`` (SPEC.md section 4).

    float64 so that the state carried between steps loses nothing, whatever the inputs' dtype.
    """
    config = _check_config(config)
    return wc.init_state(config, like=torch.empty((), dtype=torch.float64, device=device))


def weince_loss(
    z_i: torch.Tensor,
    z_j: torch.Tensor,
    state: torch.Tensor,
    config: WEINCEConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(loss, new_state, stats)`` of the two-view WEINCE loss, differentiable in ``z_i, z_j``.

    ``z_i``, ``z_j``: ``(N, d)`` tensors, ``N >= 2``, of one floating dtype on one device;
    ``state``: ``beta_t`` (from ``init_state``) on the same device. ``config`` defaults to the
    paper preset. Half-precision inputs are computed in float32 (SPEC.md section 7), also under
    ``torch.autocast``; gradients come back in the inputs' dtype. ``new_state`` (in ``state``'s
    dtype) and ``stats`` carry no gradient: ``lambda`` and ``beta_t`` are constants of the loss.
    Nothing is read back to the host, so the call does not synchronise with a GPU.
    """
    _check_tensors(z_i=z_i, z_j=z_j, state=state)
    config = _check_config(config)
    loss, new_state, *stat_values = _WEINCEFunction.apply(z_i, z_j, state, config)
    return loss, new_state, {key: stat_values[i] for i, key in enumerate(STAT_KEYS)}


class _WEINCEFunction(torch.autograd.Function):
    """forward: ``wc.nt_xent_forward``; backward: ``wc.nt_xent_backward`` on saved residuals."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z_i: torch.Tensor,
        z_j: torch.Tensor,
        state: torch.Tensor,
        config: WEINCEConfig,
    ) -> tuple[torch.Tensor, ...]:
        with _without_autocast(z_i):
            loss, new_state, stats, residuals = wc.nt_xent_forward(z_i, z_j, state, config)
        ctx.config = config
        ctx.dtype = z_i.dtype
        ctx.save_for_backward(*_flatten(residuals))
        outputs = _distinct([loss, new_state, *(stats[key] for key in STAT_KEYS)])
        ctx.mark_non_differentiable(*outputs[1:])
        return tuple(outputs)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_loss: torch.Tensor, *_: Any
    ) -> tuple[torch.Tensor | None, ...]:
        residuals = _unflatten(ctx.saved_tensors)
        with _without_autocast(grad_loss):
            grad_i, grad_j = wc.nt_xent_backward(
                residuals, ctx.config, dtype=ctx.dtype, grad_output=grad_loss
            )
        needs_i, needs_j = ctx.needs_input_grad[:2]
        return (grad_i if needs_i else None, grad_j if needs_j else None, None, None)


def _without_autocast(like: torch.Tensor) -> torch.autocast:
    """The core picks its own precision (at least float32): autocast must not lower its matmuls."""
    return torch.autocast(device_type=like.device.type, enabled=False)


def _flatten(residuals: wc.NTXentResiduals) -> tuple[torch.Tensor | None, ...]:
    # NTXentResiduals ends with the nested RowsResiduals; optional entries may be None.
    return (*residuals[:-1], *residuals.rows)


def _unflatten(saved: tuple[torch.Tensor | None, ...]) -> wc.NTXentResiduals:
    own = len(wc.NTXentResiduals._fields) - 1
    return wc.NTXentResiduals._make([*saved[:own], wc.RowsResiduals._make(saved[own:])])


def _distinct(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The same tensors, a repeated one cloned (the core may return the loss as a statistic too).

    Marking a statistic non-differentiable marks the tensor object, so the loss must not be one.
    """
    seen: list[torch.Tensor] = []
    result = []
    for tensor in tensors:
        if any(tensor is other for other in seen):
            tensor = tensor.clone()
        seen.append(tensor)
        result.append(tensor)
    return result


def _check_tensors(**tensors: Any) -> None:
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")


def _check_config(config: Any) -> WEINCEConfig:
    if config is None:
        return WEINCEConfig()
    if not isinstance(config, WEINCEConfig):
        hint = (
            " (for a preset by name: WEINCEConfig.preset(name))" if isinstance(config, str) else ""
        )
        raise TypeError(f"config must be a WEINCEConfig or None; got {type(config).__name__}{hint}")
    return config
