"""The backend matrix of ``weince_core.testing``, run through the frameworks' adapters.

``weince_core.testing`` holds the registry, the tolerances, the reference vectors and the
assertions, and may not import an adapter; this module, above the adapters, adds the runs
through them, for the test suite and ``weince crosscheck``. ``Backend.run_steps`` uses the
framework's adapter where there is one (``weince_torch``: autograd through ``weince_loss``;
``weince_jax``: ``jax.value_and_grad`` of ``weince_loss`` under ``jax.jit``; ``weince_cupy``:
``value_and_grad``) and the core (``weince_core.nt_xent_value_and_grad``) on the framework's
arrays otherwise; the path taken is returned with the results. Matrix products run in full
float32 precision (``weince_core.testing.full_precision_matmuls``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from weince_core import WEINCEConfig, testing
from weince_core.testing import Batches, StepResult, full_precision_matmuls

__all__ = ["PATHS", "Backend", "all_backends", "import_adapter"]

PATHS = ("adapter", "core")


@dataclasses.dataclass(frozen=True)
class Backend(testing.Backend):
    """A backend of ``weince_core.testing`` that also runs the loss through its adapter."""

    def run_steps(
        self, batches: Batches, config: WEINCEConfig, dtype: str, *, path: str = "adapter"
    ) -> tuple[str, list[StepResult]]:
        """Loss, gradients, statistics and state of each batch in turn, the state carried.

        Args:
            batches: pairs of views ``(z_i, z_j)`` as NumPy arrays.
            config: the loss's configuration.
            dtype: the dtype of the inputs on this backend.
            path: ``"adapter"`` uses the framework's adapter when it is importable and the
                core otherwise; ``"core"`` always uses the core.

        Returns:
            The path taken and one result per batch.

        Raises:
            ValueError: an unknown ``path``, or a dtype this backend does not have.
        """
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}; got {path!r}")
        if not self.supports(dtype):
            raise ValueError(f"{self.id} has no {dtype}; it has {', '.join(self.dtypes)}")
        adapter = import_adapter(self.adapter) if path == "adapter" and self.adapter else None
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


def import_adapter(name: str) -> Any | None:
    """An adapter package, if it can be imported.

    Args:
        name: the package, e.g. ``Backend.adapter``.

    Returns:
        The module, or ``None`` when it is not installed or fails to import.
    """
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
        ids: kinds of ``BACKEND_IDS`` to probe; ``None`` probes every kind.

    Returns:
        The backends, in the order of ``BACKEND_IDS``; those that cannot run here carry
        ``skip_reason``.
    """
    return [
        Backend(**{f.name: getattr(b, f.name) for f in dataclasses.fields(b)})
        for b in testing.all_backends(ids)
    ]
