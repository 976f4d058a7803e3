"""Every array backend and device of this machine, and how to run the WEINCE loss on each.

The registry, the tolerances and the conversions are ``weince_core.testing`` (shared with the
test suite); this module adds the runs through the frameworks' adapters, which the core may not
import. ``Backend.run_steps`` uses the framework's adapter where there is one (``weince_torch``:
autograd through ``weince_loss``; ``weince_jax``: ``jax.value_and_grad`` of ``weince_loss``
under ``jax.jit``; ``weince_cupy``: ``value_and_grad``) and the core
(``weince_core.nt_xent_value_and_grad``) on the framework's arrays otherwise; the path taken is
returned with the results. Matrix products run in full float32 precision
(``weince_core.testing.full_precision_matmuls``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from weince_core import WEINCEConfig, testing
from weince_core.testing import (
    ADAPTERS,
    BACKEND_IDS,
    CONDITION,
    DTYPES,
    TOLERANCES,
    Batches,
    StepResult,
    Tolerance,
    enable_jax_float64,
    full_precision_matmuls,
    smallest_shortfall,
    tolerance,
)

__all__ = [
    "ADAPTERS",
    "BACKEND_IDS",
    "CONDITION",
    "DTYPES",
    "PATHS",
    "TOLERANCES",
    "Backend",
    "StepResult",
    "Tolerance",
    "all_backends",
    "enable_jax_float64",
    "full_precision_matmuls",
    "jax_float64",
    "matching_ids",
    "smallest_shortfall",
    "tolerance",
]

PATHS = ("adapter", "core")


@dataclasses.dataclass(frozen=True)
class Backend(testing.Backend):
    """A backend of ``weince_core.testing`` that also runs the loss through its adapter."""

    def run_steps(
        self, batches: Batches, config: WEINCEConfig, dtype: str, *, path: str = "adapter"
    ) -> tuple[str, list[StepResult]]:
        """Loss, gradients, statistics and state of each batch in turn, the state carried.

        ``path="adapter"`` uses the framework's adapter when it is importable and the core
        otherwise; ``path="core"`` always uses the core. Returns the path taken and the results.

        Args:
            batches: the inputs of each step, ``(z_i, z_j)`` as NumPy arrays.
            config: the loss's configuration.
            dtype: the dtype the inputs are cast to (one of ``self.dtypes``).
            path: ``"adapter"``: the adapter where importable, else the core; ``"core"``: the core.

        Returns:
            The path taken and one ``StepResult`` per step.
        """
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}; got {path!r}")
        if not self.supports(dtype):
            raise ValueError(f"{self.id} has no {dtype}; it has {', '.join(self.dtypes)}")
        adapter = _import_adapter(self.adapter) if path == "adapter" and self.adapter else None
        with full_precision_matmuls(self.module):
            if adapter is not None:
                runner = getattr(self, f"_run_{self.module}_adapter")
                return "adapter", runner(adapter, batches, config, dtype)
            return "core", self.run_core(batches, config, dtype)

    def _run_torch_adapter(
        self, weince_torch: Any, batches: Batches, config: WEINCEConfig, dtype: str
    ) -> list[StepResult]:
        state = weince_torch.init_state(config, like=self.asarray(np.zeros(()), "float32"))
        results = []
        for z_i, z_j in batches:
            t_i = self.asarray(z_i, dtype).requires_grad_(True)
            t_j = self.asarray(z_j, dtype).requires_grad_(True)
            loss, state, stats = weince_torch.weince_loss(t_i, t_j, state, config)
            loss.backward()
            results.append(self.step_result(loss, (t_i.grad, t_j.grad), state, stats))
        return results

    def _run_jax_adapter(
        self, weince_jax: Any, batches: Batches, config: WEINCEConfig, dtype: str
    ) -> list[StepResult]:
        step = _jax_adapter_step()
        state = weince_jax.init_state(config, like=self.asarray(np.zeros(()), "float32"))
        results = []
        for z_i, z_j in batches:
            (loss, (state, stats)), grads = step(
                self.asarray(z_i, dtype), self.asarray(z_j, dtype), state, config
            )
            results.append(self.step_result(loss, grads, state.beta_t, stats))
        return results

    def _run_cupy_adapter(
        self, weince_cupy: Any, batches: Batches, config: WEINCEConfig, dtype: str
    ) -> list[StepResult]:
        state = weince_cupy.init_state(config, like=self.asarray(np.zeros(()), "float32"))
        results = []
        for z_i, z_j in batches:
            loss, grads, state, stats = weince_cupy.value_and_grad(
                self.asarray(z_i, dtype), self.asarray(z_j, dtype), state, config=config
            )
            results.append(self.step_result(loss, grads, state, stats))
        return results


def _import_adapter(name: str) -> Any | None:
    """The adapter module, or ``None`` when it is not installed or fails to import."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@functools.cache
def _jax_adapter_step() -> Callable[..., Any]:
    """``jax.value_and_grad`` of ``weince_jax.weince_loss`` under ``jax.jit``."""
    import jax

    import weince_jax

    return jax.jit(jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True))


def all_backends(ids: Sequence[str] | None = None) -> list[Backend]:
    """``weince_core.testing.all_backends``, each backend able to run through its adapter.

    Args:
        ids: the backend kinds wanted; ``None``: all.

    Returns:
        One backend per device of each kind, each runnable or with the reason it is skipped.
    """
    return [
        Backend(**{f.name: getattr(b, f.name) for f in dataclasses.fields(b)})
        for b in testing.all_backends(ids)
    ]


def matching_ids(name: str) -> list[str]:
    """The backend kinds that ``name`` selects: itself, or those it is the prefix of.

    Args:
        name: a backend id (``torch-cpu``) or a prefix of ids (``torch``).

    Returns:
        The ids of ``BACKEND_IDS`` it selects (none for an unknown name).
    """
    return [i for i in BACKEND_IDS if i == name or i.startswith(f"{name}-")]


@contextlib.contextmanager
def jax_float64(enabled: bool = True) -> Iterator[None]:
    """JAX makes float64 arrays (``jax_enable_x64``) while the block runs; the setting is put
    back afterwards. JAX is imported only when ``enabled``.

    Args:
        enabled: ``False``: change nothing (and import nothing).

    Yields:
        Nothing: the block runs with the setting on.
    """
    if not enabled:
        yield
        return
    import jax

    previous = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
