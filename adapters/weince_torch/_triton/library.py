"""The Triton kernels as ``torch.library`` custom ops, and the hooks the core calls.

Custom ops keep ``torch.compile(fullgraph=True)`` tracing through them (their fake versions
give the shapes). The hooks return ``None`` wherever a kernel does not apply (another device,
an unsupported dtype or shape), and the core then takes its own path.
"""

from typing import Any, Optional

import torch

import weince_core.ops

from . import rowpass, select

Tensor = torch.Tensor


@torch.library.custom_op("weince::select_top_k", mutates_args=())
def select_top_k(
    sim: Tensor,
    excluded: Optional[Tensor],  # noqa: UP045 (the form every torch version parses)
    k: int,
    cap: float,
) -> tuple[Tensor, Tensor]:
    """``(values, columns)`` of each row's ``k`` largest keys ``min(sim, cap)``, ties by the
    lower column (see ``select.select_top_k``)."""
    return select.select_top_k(sim, excluded, k, cap)


@select_top_k.register_fake
def _(sim: Tensor, excluded: Tensor | None, k: int, cap: float) -> tuple[Tensor, Tensor]:
    rows = sim.shape[0]
    return sim.new_empty((rows, k)), sim.new_empty((rows, k), dtype=torch.int64)


@torch.library.custom_op("weince::row_pass", mutates_args=())
def row_pass(
    sim: Tensor,
    lam: Tensor,
    excluded: Optional[Tensor],  # noqa: UP045 (the form every torch version parses)
    temperature: float,
    beta_w: float,
    eps: float,
    total_rows: int,
    blend: bool,
) -> tuple[Tensor, Tensor]:
    """``(P * dG/dsim / total_rows, logsumexp)`` of the rows' blended logits (see
    ``rowpass.row_pass``)."""
    return rowpass.row_pass(sim, lam, excluded, temperature, beta_w, eps, total_rows, blend)


@row_pass.register_fake
def _(
    sim: Tensor,
    lam: Tensor,
    excluded: Optional[Tensor],  # noqa: UP045 (the form every torch version parses)
    temperature: float,
    beta_w: float,
    eps: float,
    total_rows: int,
    blend: bool,
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(sim), sim.new_empty((sim.shape[0],))


def _applies(x: Any, devices: tuple[str, ...]) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type in devices


def register(devices: tuple[str, ...] = ("cuda",)) -> None:
    """Make the core use the kernels for PyTorch tensors on ``devices``.

    Args:
        devices: the device types served (``"cpu"`` only under ``TRITON_INTERPRET=1``, for tests).
    """

    def top_k_hook(x: Any, k: int, excluded: Any, cap: float) -> tuple[Tensor, Tensor] | None:
        if not (_applies(x, devices) and select.supports(x, k)):
            return None
        return torch.ops.weince.select_top_k(x, excluded, k, cap)

    def row_pass_hook(
        sim: Any, lam: Any, excluded: Any, config: Any, total_rows: int
    ) -> tuple[Tensor, Tensor] | None:
        if not (_applies(sim, devices) and rowpass.supports(sim)):
            return None
        blend = config.gate != "off"
        args = (config.temperature, config.beta_w, config.eps, total_rows, blend)
        return torch.ops.weince.row_pass(sim, lam, excluded, *args)

    weince_core.ops.register_kernel("top_k", top_k_hook)
    weince_core.ops.register_kernel("row_pass", row_pass_hook)
