"""The backend matrix of ``weince_core.testing``, run through the frameworks' adapters.

``weince_core.testing`` holds the registry, the tolerances, the reference vectors, the pairing
forms' cases and the comparisons, and may not import an adapter; this module, above the
adapters, adds the runs through them, for the test suite and ``weince crosscheck``.

One mechanism runs every pairing form (docs/math.md section 9), the two-view form included:
:func:`run_form` uses the framework's adapter where there is one (``weince_torch``: autograd
through ``weince_loss`` or ``weince_torch.<form>``; ``weince_jax``: ``jax.value_and_grad`` of
``weince_loss`` or ``weince_jax.<form>`` under ``jax.jit``, compiled once per form and options;
``weince_cupy``: ``value_and_grad`` or ``<form>_value_and_grad``) and the core
(``weince_core.<form>_value_and_grad``) on the framework's arrays otherwise; the path taken is
returned with the results. ``Backend.run_steps`` is the two-view form through it, and
:func:`run_case` one form's case compared with the NumPy float64 core (a :class:`Row`). Matrix
products run in full float32 precision (``weince_core.testing.full_precision_matmuls``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from weince_core import WEINCEConfig, testing
from weince_core.testing import (
    VERDICT,
    Batches,
    Difference,
    FormCase,
    FormResult,
    StepResult,
    Tolerance,
    compare_form,
    differentiable,
    form_arrays,
    form_reference,
    form_result,
    form_shortfall,
    full_precision_matmuls,
    rounded_case,
    run_core_form,
    split_arguments,
)

__all__ = [
    "PATHS",
    "Backend",
    "Row",
    "all_backends",
    "form_row",
    "import_adapter",
    "last_step",
    "run_case",
    "run_form",
]

PATHS = ("adapter", "core")


@dataclasses.dataclass(frozen=True)
class Backend(testing.Backend):
    """A backend of ``weince_core.testing`` that also runs the loss through its adapter."""

    def run_steps(
        self, batches: Batches, config: WEINCEConfig, dtype: str, *, path: str = "adapter"
    ) -> tuple[str, list[StepResult]]:
        """Loss, gradients, statistics and state of each batch in turn, the state carried:
        the two-view form through :func:`run_form`.

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
        views = tuple({"z_i": z_i, "z_j": z_j} for z_i, z_j in batches)
        taken, results = run_form(
            self, FormCase("two_view", "two views", (), views), config, dtype, path=path
        )
        return taken, [
            StepResult(
                loss=r.loss,
                grad_i=r.grads["z_i"],
                grad_j=r.grads["z_j"],
                state=r.state,
                stats=r.stats,
                loss_dtype=r.loss_dtype,
                grad_dtype=r.grad_dtypes["z_i"],
            )
            for r in results
        ]


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


# -- the pairing forms through the adapters ------------------------------------------------------


def run_form(
    backend: testing.Backend,
    case: FormCase,
    config: WEINCEConfig,
    dtype: str,
    *,
    path: str = "adapter",
) -> tuple[str, list[FormResult]]:
    """Each batch of ``case`` in turn on ``backend``, the state carried.

    Args:
        backend: the array library and device.
        case: the form and its inputs.
        config: the loss's configuration.
        dtype: the dtype the floating inputs are cast to.
        path: ``"adapter"`` uses the framework's adapter when it is importable and the core
            otherwise; ``"core"`` always uses the core.

    Returns:
        The path taken and one result per step.

    Raises:
        ValueError: an unknown ``path``, or a dtype this backend does not have.
    """
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}; got {path!r}")
    if not backend.supports(dtype):
        raise ValueError(f"{backend.id} has no {dtype}; it has {', '.join(backend.dtypes)}")
    adapter = import_adapter(backend.adapter) if path == "adapter" and backend.adapter else None
    if adapter is None:
        return "core", run_core_form(backend, case, config, dtype)
    runner = {"torch": _run_torch, "jax": _run_jax, "cupy": _run_cupy}[backend.module]
    state = adapter.init_state(config, like=backend.asarray(np.zeros(()), "float32"))
    options = dict(case.options)
    results = []
    with full_precision_matmuls(backend.module):
        for batch in case.batches:
            arrays = form_arrays(backend, batch, dtype)
            loss, grads, state, stats = runner(adapter, case.form, arrays, state, config, options)
            beta_t = state.beta_t if backend.module == "jax" else state  # a WEINCEState in JAX
            results.append(form_result(backend, loss, grads, beta_t, stats))
    return "adapter", results


# Each runner takes one step of a form through its framework's adapter and returns
# ``(loss, gradients by name, the adapter's new state, stats)``.


def _run_torch(
    weince_torch: Any,
    form: str,
    arrays: dict[str, Any],
    state: Any,
    config: WEINCEConfig,
    options: dict[str, Any],
) -> tuple[Any, dict[str, Any], Any, Any]:
    function = weince_torch.weince_loss if form == "two_view" else getattr(weince_torch, form)
    for name in differentiable(form):
        arrays[name].requires_grad_(True)
    positional, keywords = split_arguments(form, arrays)
    loss, state, stats = function(*positional, state, config, **keywords, **options)
    loss.backward()
    return loss, {name: arrays[name].grad for name in differentiable(form)}, state, stats


def _run_jax(
    weince_jax: Any,
    form: str,
    arrays: dict[str, Any],
    state: Any,
    config: WEINCEConfig,
    options: dict[str, Any],
) -> tuple[Any, dict[str, Any], Any, Any]:
    step = _jax_adapter_step(form, tuple(sorted(options.items())))
    wanted = differentiable(form)
    grad_part = {k: v for k, v in arrays.items() if k in wanted}
    rest = {k: v for k, v in arrays.items() if k not in wanted}
    (loss, (state, stats)), grads = step(grad_part, rest, state, config)
    return loss, grads, state, stats


@functools.cache
def _jax_adapter_step(form: str, options: tuple[tuple[str, Any], ...]) -> Callable[..., Any]:
    """``jax.value_and_grad`` of ``weince_jax``'s form under ``jax.jit``, once per process for
    each form and options (a config is static in ``weince_jax``: a new one compiles again)."""
    import jax

    import weince_jax

    function: Callable[..., Any] = (
        weince_jax.weince_loss if form == "two_view" else getattr(weince_jax, form)
    )

    def loss_of(grad_part: dict[str, Any], rest: dict[str, Any], state: Any, config: Any) -> Any:
        positional, keywords = split_arguments(form, {**grad_part, **rest})
        return function(*positional, state, config, **keywords, **dict(options))

    return jax.jit(jax.value_and_grad(loss_of, has_aux=True))


def _run_cupy(
    weince_cupy: Any,
    form: str,
    arrays: dict[str, Any],
    state: Any,
    config: WEINCEConfig,
    options: dict[str, Any],
) -> tuple[Any, dict[str, Any], Any, Any]:
    name = "value_and_grad" if form == "two_view" else f"{form}_value_and_grad"
    positional, keywords = split_arguments(form, arrays)
    loss, grads, state, stats = getattr(weince_cupy, name)(
        *positional, state, config, **keywords, **options
    )
    return loss, dict(zip(differentiable(form), grads, strict=True)), state, stats


# -- one form's case against the NumPy float64 core ----------------------------------------------


@dataclasses.dataclass
class Row:
    """One backend, dtype, preset and input case: its results and their differences (a row of
    ``weince crosscheck``'s table and JSON)."""

    case: str
    preset: str
    n: int
    d: int
    steps: int
    backend: str
    device: str
    dtype: str
    path: str
    loss: float = math.nan  # the last step's
    grad_norm: float = math.nan  # the last step's norm of every gradient together
    delta: float = math.nan  # the inputs' smallest 1 - cosine (for the reader)
    nonfinite_rows: int = 0  # rows of the input holding NaN or inf
    tolerance: Tolerance | None = None
    differences: dict[str, Difference] = dataclasses.field(default_factory=dict)
    wrong_dtype: str | None = None  # a loss not in the compute dtype, a gradient not in dtype
    error: str | None = None  # the exception a backend raised, if any

    @property
    def failed(self) -> list[str]:
        """The quantities beyond tolerance (``["error"]`` if the backend raised)."""
        if self.error is not None:
            return ["error"]
        failed = ["input"] if self.nonfinite_rows else []
        failed += [q for q, diff in self.differences.items() if not diff.passed]
        return [*failed, "dtype"] if self.wrong_dtype else failed

    @property
    def passed(self) -> bool:
        """Whether nothing failed."""
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        """The row as the JSON report holds it (NaN left as NaN: the writer makes it null).

        Returns:
            Its fields, the differences the preset computes, ``passed`` and ``failed``.
        """
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "differences"}
        out["differences"] = {
            q: {
                "abs": diff.abs,
                "rel": diff.rel,
                "error": diff.error,
                "tolerance": diff.tolerance,
                "reference_nonfinite": diff.reference_nonfinite,
                "passed": diff.passed,
            }
            for q, diff in self.differences.items()
            if diff.computed
        }
        out["passed"] = self.passed
        out["failed"] = self.failed
        return out


def form_row(case: FormCase, preset: str, backend: str, device: str, dtype: str, path: str) -> Row:
    """An empty row of a form's case (its ``case`` names the form).

    Args:
        case: the form and its inputs.
        preset: the preset's name.
        backend: the backend's id.
        device: its device.
        dtype: the dtype under test.
        path: ``"adapter"``, ``"core"`` or ``"reference"``.

    Returns:
        The row, without results.
    """
    name = f"{case.form}, {case.name}"
    return Row(name, preset, case.n, case.d, len(case.batches), backend, device, dtype, path)


def last_step(row: Row, results: Sequence[FormResult]) -> None:
    """Fill ``row``'s loss and gradient norm from the last step of ``results``.

    Args:
        row: the row to fill.
        results: one result per step.
    """
    last = results[-1]
    row.loss = float(last.loss)
    row.grad_norm = float(math.sqrt(sum(float(np.sum(g**2)) for g in last.grads.values())))


def run_case(backend: Backend, case: FormCase, preset: str, dtype: str, path: str) -> Row:
    """One backend on one form's case, compared with the NumPy float64 core on the same
    (rounded) inputs within ``weince_core.testing.VERDICT``.

    Args:
        backend: the array library and device.
        case: the form and its inputs.
        preset: the preset's name.
        dtype: the dtype under test.
        path: ``"adapter"`` or ``"core"``.

    Returns:
        The row; a backend that raised gives a row with its ``error``.
    """
    row = form_row(case, preset, backend.id, backend.device or "", dtype, path)
    config = WEINCEConfig.preset(preset)
    try:
        mine = rounded_case(backend, case, dtype)
        expected = form_reference(mine, config)
        row.delta = form_shortfall(mine)
        row.tolerance = VERDICT[dtype]  # fixed per dtype, as for the two-view form
        row.path, results = run_form(backend, mine, config, dtype, path=path)
    except Exception as error:  # a broken backend is a failed row, not a crashed command
        row.error = f"{type(error).__name__}: {error}"
        return row
    last_step(row, results)
    row.differences = compare_form(case.form, results, expected, row.tolerance, config)
    compute = "float64" if dtype == "float64" else "float32"
    for r in results:
        wrong = [f"gradient of {k} in {v}" for k, v in r.grad_dtypes.items() if v != dtype]
        if r.loss_dtype != compute:
            wrong.insert(0, f"loss in {r.loss_dtype}, not {compute}")
        if wrong:
            row.wrong_dtype = "; ".join(wrong)
            break
    return row
