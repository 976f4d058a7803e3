"""weince_core: the WEINCE contrastive loss on any Array API namespace.

The math of SPEC.md, written once against the Array API standard: configuration and presets,
the online state, the tail statistics, the blended loss and its analytic gradient.
"""

from .collectives import Collectives
from .config import WEINCEConfig
from .nt_xent import (
    NTXentResiduals,
    nt_xent,
    nt_xent_backward,
    nt_xent_forward,
    nt_xent_value_and_grad,
)
from .rows import RowsResiduals, rows_backward, rows_forward, rows_value_and_grad
from .state import init_state

__all__ = [
    "Collectives",
    "NTXentResiduals",
    "RowsResiduals",
    "WEINCEConfig",
    "init_state",
    "nt_xent",
    "nt_xent_backward",
    "nt_xent_forward",
    "nt_xent_value_and_grad",
    "rows_backward",
    "rows_forward",
    "rows_value_and_grad",
]

__version__ = "0.1.0"
