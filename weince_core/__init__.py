"""weince_core: the WEINCE contrastive loss on any Array API namespace.

The math of docs/math.md, written once against the Array API standard: configuration and
presets, the online state, the tail statistics, the blended loss and its analytic gradient, for
every pairing form (two-view, two-tower, explicit negatives, multi-positive). The ``nt_xent*``
names are aliases of the ``two_view*`` ones, kept for one release.

One calling convention for every form (``rows_*`` too, with ``beta_t`` for the state and
``dL/dsim`` for the gradients):

=================================  =============================================
``<form>(..., state, config)``      ``(loss, new_state, stats)``
``<form>_forward(...)``             ``(loss, new_state, stats, residuals)``
``<form>_backward(residuals, ...)`` the gradients
``<form>_value_and_grad(...)``      ``(loss, grads, new_state, stats)``
``init_state(config, *, like)``     the state, on ``like``'s namespace and device
=================================  =============================================

``config`` is a ``WEINCEConfig``, or ``None`` for the paper preset; ``stats`` has the keys
``STAT_KEYS``. The adapters follow the same order: ``weince_torch`` and ``weince_cupy`` as it
is, ``weince_jax`` as ``(loss, (new_state, stats))`` (the shape ``jax.value_and_grad(...,
has_aux=True)`` requires).
"""

from .collectives import Collectives
from .config import WEINCEConfig
from .forms import (
    FormResiduals,
    NTXentResiduals,
    TwoViewResiduals,
    explicit_negatives,
    explicit_negatives_backward,
    explicit_negatives_forward,
    explicit_negatives_value_and_grad,
    multi_positive,
    multi_positive_backward,
    multi_positive_forward,
    multi_positive_value_and_grad,
    nt_xent,
    nt_xent_backward,
    nt_xent_forward,
    nt_xent_value_and_grad,
    two_tower,
    two_tower_backward,
    two_tower_forward,
    two_tower_value_and_grad,
    two_view,
    two_view_backward,
    two_view_forward,
    two_view_value_and_grad,
)
from .rows import RowsResiduals, rows_backward, rows_forward, rows_value_and_grad
from .state import init_state
from .stats import STAT_KEYS

__all__ = [
    "STAT_KEYS",
    "Collectives",
    "FormResiduals",
    "NTXentResiduals",
    "RowsResiduals",
    "TwoViewResiduals",
    "WEINCEConfig",
    "explicit_negatives",
    "explicit_negatives_backward",
    "explicit_negatives_forward",
    "explicit_negatives_value_and_grad",
    "init_state",
    "multi_positive",
    "multi_positive_backward",
    "multi_positive_forward",
    "multi_positive_value_and_grad",
    "nt_xent",
    "nt_xent_backward",
    "nt_xent_forward",
    "nt_xent_value_and_grad",
    "rows_backward",
    "rows_forward",
    "rows_value_and_grad",
    "two_tower",
    "two_tower_backward",
    "two_tower_forward",
    "two_tower_value_and_grad",
    "two_view",
    "two_view_backward",
    "two_view_forward",
    "two_view_value_and_grad",
]

__version__ = "0.1.0"
