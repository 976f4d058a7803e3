"""The fused row pass of the loss in one Triton program per row (docs/math.md sections 2 and 6).

Per row ``a`` of ``sim`` (``R x C``), with the gate ``lam_a``: the blended logits
``G = (1 - lam_a) sim / tau + lam_a beta_w (-log(1 - clip_s(sim)))`` over the candidates (the
excluded columns left out), their logsumexp, the softmax ``P``, and the dense part of the
gradient ``P * dG/dsim / R_total``, where ``dG/dsim = (1 - lam) / tau + lam beta_w / (1 - sim)``
below the cap and ``(1 - lam) / tau`` at or above it. Two passes over the row, in tiles: an
online logsumexp, then ``P`` and the gradient. Only the gradient and the logsumexp are written.
The arithmetic is in ``sim``'s dtype (float32 or float64).
"""

import numpy as np
import torch
import triton
import triton.language as tl


@triton.jit
def _blended_logits(x, candidate, softmax_weight, shortfall_weight, cap, BLEND: tl.constexpr):
    """``G`` of one tile (``-inf`` off the candidates) and ``1 - clip_s(x)`` (``BLEND`` only)."""
    if BLEND:
        distance = 1.0 - tl.minimum(x, cap)
        logits = softmax_weight * x - shortfall_weight * tl.log(distance)
    else:
        distance = x
        logits = softmax_weight * x
    return tl.where(candidate, logits, -float("inf")), distance


@triton.jit
def _candidates(cols, n_columns, excluded_row, n_excluded):
    candidate = cols < n_columns
    for e in range(n_excluded):
        candidate = candidate & (cols != tl.load(excluded_row + e))
    return candidate


@triton.jit
def _row_pass_kernel(
    sim_ptr,
    lam_ptr,
    excluded_ptr,
    grad_ptr,
    lse_ptr,
    n_columns,
    n_excluded,
    stride_sim,
    stride_excluded,
    stride_grad,
    TEMPERATURE: tl.constexpr,  # the floats as constants: a float argument is float32
    BETA_W: tl.constexpr,
    CAP: tl.constexpr,
    CLAMPED: tl.constexpr,
    TOTAL_ROWS: tl.constexpr,
    BLEND: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    sim_row = sim_ptr + row * stride_sim
    excluded_row = excluded_ptr + row * stride_excluded
    lam = tl.load(lam_ptr + row)
    cap = tl.full((), CAP, lam.dtype)  # each constant in sim's dtype, rounded once
    clamped = tl.full((), CLAMPED, lam.dtype)
    a = (1.0 - lam) / tl.full((), TEMPERATURE, lam.dtype)  # G = a sim - b log(1 - clip_s(sim))
    b = lam * tl.full((), BETA_W, lam.dtype)
    total_rows = tl.full((), TOTAL_ROWS, lam.dtype)
    cols = tl.arange(0, BLOCK_C)

    # Pass 1: the row's logsumexp, online over tiles. The shift is the running maximum where
    # that is finite and 0 where it is not (so a row of -inf or +inf gives -inf or +inf).
    shift = tl.sum(tl.zeros([BLOCK_C], dtype=lam.dtype), axis=0)
    total = shift
    for start in range(0, n_columns, BLOCK_C):
        candidate = _candidates(start + cols, n_columns, excluded_row, n_excluded)
        x = tl.load(sim_row + start + cols, mask=start + cols < n_columns, other=0.0)
        logits, _ = _blended_logits(x, candidate, a, b, cap, BLEND)
        peak = tl.maximum(shift, tl.max(logits, axis=0))
        new_shift = tl.where(tl.abs(peak) < float("inf"), peak, 0.0)
        total = total * tl.exp(shift - new_shift) + tl.sum(tl.exp(logits - new_shift), axis=0)
        shift = new_shift
    lse = tl.log(total) + shift
    tl.store(lse_ptr + row, lse)

    # Pass 2: P * dG/dsim / R; the slope of the shortfall is 0 where sim was clamped (the
    # entries at the least distance, exactly ``clamped``).
    softmax_slope = a / total_rows
    shortfall_slope = b / total_rows
    for start in range(0, n_columns, BLOCK_C):
        inside = start + cols < n_columns
        candidate = _candidates(start + cols, n_columns, excluded_row, n_excluded)
        x = tl.load(sim_row + start + cols, mask=inside, other=0.0)
        logits, distance = _blended_logits(x, candidate, a, b, cap, BLEND)
        slope = softmax_slope
        if BLEND:
            slope += tl.where(distance > clamped, shortfall_slope / distance, 0.0)
        grad = tl.exp(logits - lse) * slope
        tl.store(grad_ptr + row * stride_grad + start + cols, grad, mask=inside)


def supports(sim: torch.Tensor) -> bool:
    """Whether ``row_pass`` handles ``sim`` (2-D float32 or float64)."""
    return sim.dtype in (torch.float32, torch.float64) and sim.ndim == 2 and sim.numel() > 0


def row_pass(
    sim: torch.Tensor,
    lam: torch.Tensor,
    excluded: torch.Tensor | None,
    temperature: float,
    beta_w: float,
    eps: float,
    total_rows: int,
    blend: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dense gradient, logsumexp)`` of the rows' blended logits.

    Args:
        sim: ``(R, C)`` similarities, float32 or float64.
        lam: ``(R,)`` the gate per row (ignored without ``blend``).
        excluded: ``(R, E)`` integer columns that are no candidates, or ``None``.
        temperature: ``tau``.
        beta_w: the shortfall coordinate's weight.
        eps: the cap is ``1 - eps`` rounded to ``sim``'s dtype.
        total_rows: the rows the loss averages over (``R`` times the ranks).
        blend: ``False`` with the gate off: the logits are ``sim / tau``.

    Returns:
        ``P * dG/dsim / total_rows`` (``R x C``, 0 at the excluded columns) and the logsumexp
        of each row's blended logits (``R``).
    """
    rows, width = sim.shape
    sim = sim.contiguous()
    lam = lam.to(sim.dtype).contiguous()
    if excluded is None:
        excluded = torch.empty((rows, 0), dtype=torch.int64, device=sim.device)
    excluded = excluded.to(torch.int64).contiguous()
    grad = torch.empty_like(sim)
    lse = torch.empty((rows,), dtype=sim.dtype, device=sim.device)
    numpy_dtype = np.float32 if sim.dtype == torch.float32 else np.float64
    cap = numpy_dtype(1.0) - numpy_dtype(eps)
    _row_pass_kernel[(rows,)](
        sim,
        lam,
        excluded,
        grad,
        lse,
        width,
        excluded.shape[1],
        sim.stride(0),
        excluded.stride(0),
        grad.stride(0),
        TEMPERATURE=float(temperature),
        BETA_W=float(beta_w),
        CAP=float(cap),
        CLAMPED=float(numpy_dtype(1.0) - cap),
        TOTAL_ROWS=float(total_rows),
        BLEND=blend,
        BLOCK_C=min(2048, triton.next_power_of_2(width)),
        num_warps=8 if width >= 2048 else 4,
    )
    return grad, lse


def row_pass_reference(
    sim: torch.Tensor,
    lam: torch.Tensor,
    excluded: torch.Tensor | None,
    temperature: float,
    beta_w: float,
    eps: float,
    total_rows: int,
    blend: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``row_pass`` by the formulas, in plain PyTorch (arguments as there)."""
    cap = float(torch.tensor(1.0 - eps, dtype=sim.dtype))
    lam = lam.to(sim.dtype)[:, None]
    softmax_weight = (1.0 - lam) / temperature
    distance = 1.0 - torch.clamp(sim, max=cap)
    logits = softmax_weight * sim
    slope = softmax_weight.expand_as(sim)
    if blend:
        logits = logits - lam * beta_w * torch.log(distance)
        shortfall = torch.where(distance > 1.0 - cap, 1.0 / distance, 0.0)
        slope = slope + lam * beta_w * shortfall
    if excluded is not None:
        logits = logits.scatter(1, excluded.to(torch.int64), -torch.inf)
    lse = torch.logsumexp(logits, dim=1)
    return torch.exp(logits - lse[:, None]) * slope / total_rows, lse
