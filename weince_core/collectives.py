"""How one batch is spread over devices, and the collectives that join it again.

The core never talks to a communication library: an adapter builds ``Collectives`` from its
framework's engine (``torch.distributed``, ``jax.lax`` inside ``shard_map``) and passes it in.
``None`` everywhere means one device. Every rank holds the same number of rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._types import Array


@dataclass(frozen=True)
class Collectives:
    """This rank's place in the group and three collectives over it.

    Attributes:
        rank: this rank's position, an ``int`` or a 0-d integer array (as ``lax.axis_index``).
        world_size: how many ranks hold rows.
        gather: every rank's array joined along axis 0 in rank order (no gradient).
        sum: the sum of every rank's array (an all-reduce).
        sum_scatter: sums every rank's ``(world_size * m, ...)`` array and returns this rank's
            block of ``m`` rows (a reduce-scatter): how the gradients of gathered rows go home.
    """

    rank: Any
    world_size: int
    gather: Callable[[Array], Array]
    sum: Callable[[Array], Array]
    sum_scatter: Callable[[Array], Array]


def gather(x: Array, collectives: Collectives | None) -> Array:
    """Every rank's ``x`` joined along axis 0 in rank order.

    Args:
        x: this rank's array.
        collectives: the group, or ``None`` for one device.

    Returns:
        The joined array (``x`` itself on one device).
    """
    return x if collectives is None else collectives.gather(x)


def total(x: Array, collectives: Collectives | None) -> Array:
    """The sum of every rank's ``x`` (an all-reduce).

    Args:
        x: this rank's array.
        collectives: the group, or ``None`` for one device.

    Returns:
        The sum (``x`` itself on one device).
    """
    return x if collectives is None else collectives.sum(x)


def world_size(collectives: Collectives | None) -> int:
    """How many ranks hold rows.

    Args:
        collectives: the group, or ``None`` for one device.

    Returns:
        ``collectives.world_size``, or 1.
    """
    return 1 if collectives is None else collectives.world_size
