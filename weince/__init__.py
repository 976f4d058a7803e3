"""WEINCE, the Weibull-aware blend of InfoNCE: the loss on any Array API namespace.

``import weince`` gives the core (``weince_core``): the configuration and its presets, the
online state, and every pairing form's loss, forward, backward and value-and-gradient, on the
arrays' own namespace (NumPy, PyTorch, JAX, CuPy, ...). The frameworks' adapters are imported
on first use, so that ``import weince`` imports no framework::

    import weince

    config = weince.WEINCEConfig.paper()
    state = weince.init_state(config, like=z_i)
    loss, grads, state, stats = weince.two_view_value_and_grad(z_i, z_j, state, config)

    criterion = weince.torch.WEINCELoss()  # imports weince_torch (and PyTorch) here

``weince.torch``, ``weince.jax`` and ``weince.cupy`` are the adapters ``weince_torch``,
``weince_jax`` and ``weince_cupy`` under this package's name (``import weince.torch`` works
too). The command-line tools are ``weince.cli`` (``weince ...``, ``python -m weince ...``),
which ``import weince`` never imports.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from weince_core import (
    STAT_KEYS,
    Collectives,
    FormResiduals,
    NTXentResiduals,
    RowsResiduals,
    TwoViewResiduals,
    WEINCEConfig,
    __version__,
    explicit_negatives,
    explicit_negatives_backward,
    explicit_negatives_forward,
    explicit_negatives_value_and_grad,
    init_state,
    multi_positive,
    multi_positive_backward,
    multi_positive_forward,
    multi_positive_value_and_grad,
    nt_xent,
    nt_xent_backward,
    nt_xent_forward,
    nt_xent_value_and_grad,
    rows_backward,
    rows_forward,
    rows_value_and_grad,
    two_tower,
    two_tower_backward,
    two_tower_forward,
    two_tower_value_and_grad,
    two_view,
    two_view_backward,
    two_view_forward,
    two_view_value_and_grad,
)

# The adapters, imported on first attribute access (each imports its framework). Not in
# __all__: ``from weince import *`` must not import every framework.
ADAPTERS = ("torch", "jax", "cupy")

__all__ = [
    "STAT_KEYS",
    "Collectives",
    "FormResiduals",
    "NTXentResiduals",
    "RowsResiduals",
    "TwoViewResiduals",
    "WEINCEConfig",
    "__version__",
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


def __getattr__(name: str) -> ModuleType:
    """``weince.torch``, ``weince.jax``, ``weince.cupy``: the adapter, imported now.

    Args:
        name: the attribute asked for.

    Returns:
        The submodule ``weince.<name>``, which re-exports the adapter ``weince_<name>``.

    Raises:
        AttributeError: for any other name.
    """
    if name in ADAPTERS:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, *ADAPTERS])
