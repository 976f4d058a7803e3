"""The WEINCE loss as a differentiable PyTorch function (docs/math.md; gradient: section 6).

``weince_loss(z_i, z_j, state, config) -> (loss, new_state, stats)`` is pure: the caller keeps
``state`` (``beta_t``). Autograd goes through one ``torch.autograd.Function``. When ``z_i`` or
``z_j`` requires grad, its forward computes the loss and the core's analytic gradient together
(``two_view_value_and_grad``: ``S`` and the blended logits are made once) and keeps only the
gradient, O(N d), for the backward, which scales it by the loss's upstream gradient (gathered
over processes, the backward computes it from O(N d) residuals instead: see
``_WEINCEFunction``). So PyTorch differentiates the same formula as every other backend, and
nothing of size ``N^2`` outlives the forward. Under ``torch.no_grad()`` (or with inputs that
need no gradient) the forward computes the loss alone. The gradient is first-order only (a
double backward raises).

Across processes (``gather``, see ``weince_torch.distributed``), the core runs with
``Collectives`` built from ``torch.distributed``: each process passes its own rows and gets the
loss of the global batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from array_api_compat import array_namespace

import weince_core as wc
from weince_core import STAT_KEYS, WEINCEConfig
from weince_core.ops import cast_gradient
from weince_core.validation import check_config, check_has_values

from . import distributed


def init_state(
    config: WEINCEConfig | None = None, *, like: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss's state, ``beta_t = config.beta_init`` (docs/math.md section 4).

    A 0-d float64 tensor, whatever the inputs' dtype: the state carried between steps loses
    nothing.

    Args:
        config: the paper preset when ``None``.
        like: a tensor whose device the state goes on (e.g. ``z_i``); ``None``: PyTorch's
            default device.

    Returns:
        ``beta_t``, a 0-d float64 tensor.

    Raises:
        TypeError: ``config`` is not a ``WEINCEConfig`` or ``like`` not a tensor.
    """
    config = check_config(config)
    if like is not None and not isinstance(like, torch.Tensor):
        raise TypeError(
            f"like must be a torch.Tensor (the state goes on its device) or None; "
            f"got {type(like).__name__}"
        )
    device = None if like is None else like.device
    return wc.init_state(config, like=torch.empty((), dtype=torch.float64, device=device))


def weince_loss(
    z_i: torch.Tensor,
    z_j: torch.Tensor,
    state: torch.Tensor,
    config: WEINCEConfig | None = None,
    *,
    gather: bool | str | dist.ProcessGroup = "auto",
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``(loss, new_state, stats)`` of the two-view WEINCE loss, differentiable in ``z_i, z_j``.

    ``z_i``, ``z_j``: ``(N, d)`` tensors, ``N >= 2``, of one floating dtype on one device;
    ``state``: ``beta_t`` (from ``init_state``) on the same device. ``config`` defaults to the
    paper preset. Half-precision inputs are computed in float32 (docs/math.md section 7), also under
    ``torch.autocast``; gradients come back in the inputs' dtype. ``new_state`` (in ``state``'s
    dtype) and ``stats`` carry no gradient: ``lambda`` and ``beta_t`` are constants of the loss.
    Nothing is read back to the host, so the call does not synchronise with a GPU.

    ``gather``: over which processes the batch is spread.

    - ``"auto"`` (default): the default ``torch.distributed`` process group when one is
      initialised and has more than one process; otherwise the loss is local.
    - ``False``: the loss of this process's rows only, whatever the processes.
    - ``True``: the default process group, which must be initialised.
    - a ``torch.distributed.ProcessGroup``: that group (this process must be a member).

    Gathered, every process passes its own ``n`` rows (the same ``n`` on every process; the
    global batch is the processes' rows joined in the group's rank order) and gets the global
    loss, the global ``new_state`` (equal on every process when ``state`` is) and the global
    summary statistics; the per-anchor ``lambda``, ``rho``, ``d_aic`` are those of its own ``2n``
    anchors (its ``z_i`` rows, then its ``z_j`` rows). The backward gives every process
    ``world_size * d(global loss)/d(its rows)``: DDP averages parameter gradients over the
    processes, so the average is the global loss's gradient, exactly what one process holding
    the whole batch gets (reducing gradients by hand, average them as DDP does: a sum would be
    ``world_size`` times too large). Every process must call the loss, and its backward, in
    step. Different row counts (or embedding sizes, dtypes) on different processes raise a
    ``ValueError`` on every process before any loss computation. The shapes are exchanged only
    when this process's shapes change, so steady-state steps add no host synchronisation; a
    process whose shapes stay as they were does not check again, so if only some processes
    change their batch size, the mismatch surfaces in the backend's collectives instead.
    Gathered, the loss runs eagerly: under ``torch.compile`` it is a graph break.

    Args:
        z_i: ``(N, d)`` embeddings of the first view, ``N >= 2``.
        z_j: ``(N, d)`` embeddings of the second view, of ``z_i``'s dtype and device.
        state: ``beta_t`` from ``init_state``, on the same device.
        config: the paper preset when ``None``.
        gather: ``"auto"``, ``False``, ``True`` or a ``ProcessGroup``, as above.

    Returns:
        ``(loss, new_state, stats)``: the loss differentiable in ``z_i`` and ``z_j``; ``new_state``
        in ``state``'s dtype and ``stats`` (``STAT_KEYS``) without gradient.

    Raises:
        TypeError: an argument is not a tensor, or of a wrong dtype, named.
        ValueError: a wrong shape or device, named; gathered, processes whose shapes differ.
    """
    _check_tensors(z_i=z_i, z_j=z_j, state=state)
    config = check_config(config)
    group = distributed.resolve_group(gather)
    if group is not None:
        return _gathered_loss(z_i, z_j, state, config, group)
    loss, new_state, *stat_values = _WEINCEFunction.apply(z_i, z_j, state, config, None)
    return loss, new_state, {key: stat_values[i] for i, key in enumerate(STAT_KEYS)}


def _run_eagerly(function: Any) -> Any:
    reason = (
        "the loss gathered over torch.distributed processes runs eagerly, a graph break: "
        "compile without fullgraph=True, or keep the loss local (gather=False)"
    )
    try:
        return torch.compiler.disable(function, reason=reason)
    except TypeError:  # older PyTorch takes no reason
        return torch.compiler.disable(function)


@_run_eagerly
def _gathered_loss(
    z_i: torch.Tensor,
    z_j: torch.Tensor,
    state: torch.Tensor,
    config: WEINCEConfig,
    group: dist.ProcessGroup,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """``weince_loss`` over ``group``: eager, a graph break under ``torch.compile``.

    Dynamo cannot trace the ``ProcessGroup`` object, and the shape check reads to the host.
    """
    distributed.check_inputs(z_i, z_j, group)
    collectives = distributed.collectives(group)
    loss, new_state, *stat_values = _WEINCEFunction.apply(z_i, z_j, state, config, collectives)
    return loss, new_state, {key: stat_values[i] for i, key in enumerate(STAT_KEYS)}


class _WEINCEFunction(torch.autograd.Function):
    """The loss of one process, or of a batch gathered over processes (``collectives``).

    Local, with an input that needs a gradient: the forward is ``wc.two_view_value_and_grad``
    (the gradient is computed with the loss, where ``S`` and the blended logits are at hand,
    and kept: O(N d)); the backward scales it by the loss's upstream gradient. Otherwise the
    forward is ``wc.two_view_forward`` and the backward ``wc.two_view_backward`` on its O(N d)
    residuals. Gathered, the gradient is computed in the backward on purpose: its collectives
    then run in the backward pass, like DDP's. (Run in the forward, they made gloo's
    ``destroy_process_group`` deadlock now and then in our tests: a known PyTorch hazard,
    a process group's destructor holding the GIL while a worker thread waits for it.)

    With ``collectives``, the backward returns ``world_size`` times the gradient of the global
    loss (see ``weince_loss``).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        z_i: torch.Tensor,
        z_j: torch.Tensor,
        state: torch.Tensor,
        config: WEINCEConfig,
        collectives: wc.Collectives | None,
    ) -> tuple[torch.Tensor, ...]:
        one_pass = collectives is None and any(ctx.needs_input_grad[:2])
        with _without_autocast(z_i):
            if one_pass:
                # In the compute dtype: scaled by the upstream gradient before rounding to z's.
                grad_dtype = torch.promote_types(z_i.dtype, torch.float32)
                loss, grads, new_state, stats = wc.two_view_value_and_grad(
                    z_i, z_j, state, config, dtype=grad_dtype
                )
                ctx.save_for_backward(*grads)
            else:
                loss, new_state, stats, residuals = wc.two_view_forward(
                    z_i, z_j, state, config, collectives=collectives
                )
                ctx.save_for_backward(*_flatten(residuals))
        ctx.set_materialize_grads(False)  # no zero tensors for the statistics' unused gradients
        ctx.one_pass = one_pass
        ctx.config = config
        ctx.collectives = collectives
        ctx.dtype = z_i.dtype
        outputs = _distinct([loss, new_state, *(stats[key] for key in STAT_KEYS)])
        ctx.mark_non_differentiable(*outputs[1:])
        return tuple(outputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # type: ignore[override]
        ctx: Any, grad_loss: torch.Tensor | None, *_: Any
    ) -> tuple[torch.Tensor | None, ...]:
        needs_i, needs_j = ctx.needs_input_grad[:2]
        if ctx.one_pass:
            if grad_loss is None:  # not materialised: the loss reached the graph's output unused
                return None, None, None, None, None
            grad_i, grad_j = (
                cast_gradient(grad * grad_loss, ctx.dtype, array_namespace(grad))
                for grad in ctx.saved_tensors
            )
        else:
            residuals = _unflatten(ctx.saved_tensors)
            if grad_loss is None:  # zeros, still computed: every process joins the collectives
                grad_loss = torch.zeros((), dtype=residuals.u.dtype, device=residuals.u.device)
            collectives = ctx.collectives
            if collectives is not None:
                # Every process's loss is the global loss and DDP averages: see weince_loss.
                grad_loss = grad_loss * collectives.world_size
            with _without_autocast(grad_loss):
                grad_i, grad_j = wc.two_view_backward(
                    residuals,
                    ctx.config,
                    dtype=ctx.dtype,
                    grad_output=grad_loss,
                    collectives=collectives,
                )
        return (grad_i if needs_i else None, grad_j if needs_j else None, None, None, None)


def _without_autocast(like: torch.Tensor) -> torch.autocast:
    """The core picks its own precision (at least float32): autocast must not lower its matmuls."""
    return torch.autocast(device_type=like.device.type, enabled=False)


def _flatten(residuals: wc.TwoViewResiduals) -> tuple[torch.Tensor | None, ...]:
    # TwoViewResiduals ends with the nested RowsResiduals; optional entries may be None.
    return (*residuals[:-1], *residuals.rows)


def _unflatten(saved: tuple[torch.Tensor | None, ...]) -> wc.TwoViewResiduals:
    own = len(wc.TwoViewResiduals._fields) - 1
    return wc.TwoViewResiduals._make([*saved[:own], wc.RowsResiduals._make(saved[own:])])


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
    check_has_values(**tensors)
