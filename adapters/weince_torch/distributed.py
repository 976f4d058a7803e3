"""The WEINCE loss of one global batch spread over ``torch.distributed`` processes (issue 7).

With ``gather`` active (``"auto"`` under an initialised process group of more than one
process, ``True``, or a ``ProcessGroup``) every process passes its own ``n`` rows of ``z_i`` and
``z_j``; the global batch is their concatenation in the group's rank order. The loss, ``beta_t``
and the summary statistics are those of the global batch (equal on every process), the
per-anchor statistics (``lambda``, ``rho``, ``d_aic``) those of the process's own ``2n`` anchors
(its ``z_i`` rows, then its ``z_j`` rows).

Gradients. The backward returns ``world_size * d(global loss)/d(own rows)``: every process's
loss is the global loss, and DDP (or any all-reduce mean of the parameter gradients) averages
over the processes, so the average of the processes' parameter gradients is exactly the
gradient of the global loss, as on one process holding the whole batch.

The collectives are built from ``torch.distributed`` here and handed to the core
(``weince_core.Collectives``): ``all_gather_single`` (``all_gather_into_tensor`` before
PyTorch 2.13) to gather, ``all_reduce`` on a copy to sum, and ``reduce_scatter_single``
(``reduce_scatter_tensor``) to send the gradients of gathered rows home, or, on a backend
without a reduce-scatter, ``all_reduce`` and this process's block. They run inside the loss's
``autograd.Function``, so they carry no gradient themselves.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.distributed as dist

import weince_core as wc

GATHER_CHOICES = "'auto', True, False or a torch.distributed.ProcessGroup"

# Per process group, the local shapes and dtypes last found equal on every process (see
# check_inputs). Weak keys: a destroyed group is forgotten.
_checked: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()
# Groups whose backend has no reduce-scatter (found on first use; every process alike).
_no_reduce_scatter: weakref.WeakSet[Any] = weakref.WeakSet()

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_gather(gather: Any) -> None:
    """Check the ``gather`` argument of a loss. Needs no process group: a constructor checks its
    argument with it.

    Args:
        gather: ``"auto"``, ``True``, ``False`` or a ``ProcessGroup``.

    Raises:
        TypeError: anything else.
        ValueError: another string, or a group this process is not a member of.
    """
    if isinstance(gather, bool) or _is_process_group(gather):
        return
    if _is_non_member(gather):
        raise ValueError(
            "gather is torch.distributed.GroupMember.NON_GROUP_MEMBER: this process is not "
            "a member of the group (torch.distributed.new_group returns that on the processes "
            "outside it); compute the loss only on the group's members"
        )
    if isinstance(gather, str):
        if gather == "auto":
            return
        raise ValueError(f"gather must be {GATHER_CHOICES}; got the string {gather!r}")
    raise TypeError(f"gather must be {GATHER_CHOICES}; got {type(gather).__name__}")


def resolve_group(gather: Any) -> Any:
    """The process group to gather over.

    Args:
        gather: ``False``: none. ``"auto"``: the default group if ``torch.distributed`` is
            available and initialised, else none. ``True``: the default group, which must be
            initialised. A ``ProcessGroup``: that group, of which this process must be a member.

    Returns:
        The group, or ``None`` for a loss local to this process (a group of one process too:
        nothing to gather).

    Raises:
        RuntimeError: ``True`` without an initialised default group.
        TypeError: as ``check_gather``.
        ValueError: as ``check_gather``, or this process is not a member of the group.
    """
    if gather is False:
        return None
    if isinstance(gather, str) and gather == "auto":
        if not (dist.is_available() and dist.is_initialized()):
            return None
        group = dist.group.WORLD
    elif gather is True:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "gather=True gathers over the default torch.distributed process group, but "
                "none is initialised: call torch.distributed.init_process_group first (or use "
                "gather='auto', which keeps the loss local without a group)"
            )
        group = dist.group.WORLD
    else:
        check_gather(gather)
        group = gather
        if dist.get_rank(group) < 0:
            raise ValueError("this process is not a member of the process group passed as gather")
    return group if dist.get_world_size(group) > 1 else None


def collectives(group: Any) -> wc.Collectives:
    """The core's collectives over a process group.

    Args:
        group: a ``ProcessGroup`` of more than one process.

    Returns:
        ``weince_core.Collectives``: this process's rank and the group's size, all-gather,
        all-reduce and reduce-scatter over it.
    """
    rank, world_size = dist.get_rank(group), dist.get_world_size(group)

    def gather(x: torch.Tensor) -> torch.Tensor:
        return _all_gather(x, group, world_size)

    def total(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x, group=group)
        return x

    def sum_scatter(x: torch.Tensor) -> torch.Tensor:
        return _reduce_scatter(x, group, rank, world_size)

    return wc.Collectives(rank, world_size, gather, total, sum_scatter)


def check_inputs(
    z_i: torch.Tensor, z_j: torch.Tensor, group: Any, *, names: tuple[str, str] = ("z_i", "z_j")
) -> None:
    """Raise on every process unless all hold views of one shape and dtype on the group's device.

    The shapes are exchanged (one small all-gather, read back to the host) only when this
    process's shapes or dtypes differ from the last ones found equal on every process of
    ``group``, so steady-state steps add no communication and no host synchronisation. Raises
    before any of the loss's collectives, on every process alike, so none is left waiting.

    The limit of checking on change only: a process whose shapes did not change does not take
    part, so if some processes change shape while others keep theirs, the collectives do not
    match and the backend reports it (gloo aborts; NCCL waits for its timeout). Batches that
    change size on every process at once (the first step, an epoch's shorter last batch from a
    ``DistributedSampler``) are checked.

    Args:
        z_i: this process's rows of the first input.
        z_j: this process's rows of the second.
        group: the process group.
        names: what the errors call the two inputs (``("x", "y")`` for the two-tower form).

    Raises:
        ValueError: on every process, where the processes' shapes or dtypes differ, or an input
            is not on the device the group's backend uses.
    """
    _check_device(z_i, group)
    key = (names, tuple(z_i.shape), tuple(z_j.shape), z_i.dtype, z_j.dtype)
    if _checked.get(group) == key:
        return
    world_size = dist.get_world_size(group)
    mine = [_dtype_code(z_i.dtype), _dtype_code(z_j.dtype), *_dims(z_i), *_dims(z_j)]
    local = torch.tensor(mine, dtype=torch.int64, device=z_i.device)
    everyone = _all_gather(local, group, world_size).reshape(world_size, len(mine)).tolist()
    for name, column in ((names[0], 2), (names[1], 4)):
        _require_equal(everyone, column, f"{name} has {{}} rows", "the same number of rows")
        _require_equal(everyone, column + 1, f"{name} has {{}} columns", "the same embedding size")
    for name, column in ((names[0], 0), (names[1], 1)):
        _require_equal(everyone, column, f"{name} is {{}}", "inputs of one dtype", _dtype_name)
    _checked[group] = key


def _require_equal(
    rows: list[list[int]], column: int, what: str, rule: str, show: Any = str
) -> None:
    values = [row[column] for row in rows]
    for rank, value in enumerate(values):
        if value != values[0]:
            raise ValueError(
                f"{what.format(show(value))} on rank {rank} but {show(values[0])} on rank 0 "
                f"(per rank: {', '.join(show(v) for v in values)}): every rank must hold "
                f"{rule} (the global batch is the ranks' rows joined in rank order)"
            )


def _dims(z: torch.Tensor) -> list[int]:
    """Rows and columns of a matrix; ``-1`` where ``z`` has no such axis (the core rejects it)."""
    return [z.shape[0] if z.ndim >= 1 else -1, z.shape[1] if z.ndim >= 2 else -1]


def _dtype_code(dtype: torch.dtype) -> int:
    return _DTYPES.index(dtype) if dtype in _DTYPES else len(_DTYPES)


def _dtype_name(code: int) -> str:
    return str(_DTYPES[code]) if code < len(_DTYPES) else "another dtype"


def _check_device(z: torch.Tensor, group: Any) -> None:
    """Raise if the group has no backend for ``z``'s device (NCCL and CPU tensors, say)."""
    try:
        types = {device.type for device in group._device_types}
    except (AttributeError, RuntimeError):  # an older or custom ProcessGroup
        types = {"cuda"} if str(dist.get_backend(group)) == "nccl" else set()
    if types and z.device.type not in types:
        raise ValueError(
            f"the inputs are on {z.device} but the process group works on "
            f"{' and '.join(sorted(types))} tensors only: move the model's outputs there "
            "(for NCCL: torch.cuda.set_device(local_rank) and model.to('cuda'))"
        )


def _all_gather(x: torch.Tensor, group: Any, world_size: int) -> torch.Tensor:
    x = x.contiguous()
    out = x.new_empty((world_size * x.shape[0], *x.shape[1:]) if x.ndim else (world_size,))
    all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    all_gather(out, x.reshape(-1) if x.ndim == 0 else x, group=group)
    return out


def _reduce_scatter(x: torch.Tensor, group: Any, rank: int, world_size: int) -> torch.Tensor:
    block = x.shape[0] // world_size
    if group not in _no_reduce_scatter:
        x = x.contiguous()
        out = x.new_empty((block, *x.shape[1:]))
        reduce_scatter = getattr(dist, "reduce_scatter_single", None) or getattr(
            dist, "reduce_scatter_tensor", None
        )
        try:
            if reduce_scatter is None:
                raise NotImplementedError("no reduce-scatter in this torch.distributed")
            reduce_scatter(out, x, group=group)
            return out
        except (NotImplementedError, RuntimeError) as error:
            # A backend without a reduce-scatter refuses before communicating, on every
            # process alike: remember it and fall back. Any other failure is the caller's.
            if "support" not in str(error) and not isinstance(error, NotImplementedError):
                raise
            _no_reduce_scatter.add(group)
    return _reduce_scatter_by_all_reduce(x, group, rank, world_size)


def _reduce_scatter_by_all_reduce(
    x: torch.Tensor, group: Any, rank: int, world_size: int
) -> torch.Tensor:
    """The reduce-scatter as an all-reduce of a copy and this process's block of it."""
    block = x.shape[0] // world_size
    total = x.clone()
    dist.all_reduce(total, group=group)
    return total[rank * block : (rank + 1) * block]


def _is_process_group(value: Any) -> bool:
    return dist.is_available() and isinstance(value, dist.ProcessGroup)


def _is_non_member(value: Any) -> bool:
    return dist.is_available() and value is dist.GroupMember.NON_GROUP_MEMBER
