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

import weince_core
from weince_core import *  # noqa: F403  (the core's public names, as weince_core lists them)
from weince_core import __version__

# The adapters, imported on first attribute access (each imports its framework). Not in
# __all__: ``from weince import *`` must not import every framework.
ADAPTERS = ("torch", "jax", "cupy")

__all__ = [*weince_core.__all__, "__version__"]


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
