"""The pairing forms' cases (docs/math.md section 9), their runs through the core on any
backend, and their comparison with the core on NumPy float64 arrays.

A form's case is one set of options on seeded float64 inputs of several steps: ``two_view`` on
two views; ``two_tower`` with a learnable ``scale`` (CLIP's initial ``1 / 0.07``);
``explicit_negatives`` with a shared queue of ``4N`` and with ``2N`` paired negatives plus the
in-batch keys; ``multi_positive`` with three views of ``N // 3`` samples and a few singletons
(labels not contiguous).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import forms as core_forms
from ..config import WEINCEConfig
from ..state import init_state
from ._compare import VIEW_NOISE, Difference, computed_quantities, difference
from ._matrix import Backend, dtype_name, full_precision_matmuls
from ._tolerances import Tolerance, smallest_shortfall

FORMS = ("two_view", "two_tower", "explicit_negatives", "multi_positive")
# Each form's array arguments (before the state), in argument order.
FORM_ARRAYS = {
    "two_view": ("z_i", "z_j"),
    "two_tower": ("x", "y", "scale"),
    "explicit_negatives": ("q", "k", "n"),
    "multi_positive": ("z", "labels"),
}
# The arrays passed by keyword (after the state), and those without a gradient.
KEYWORD_ARRAYS = {"two_tower": ("scale",)}
INTEGER_ARRAYS = ("labels",)
CLIP_SCALE = 1 / 0.07  # CLIP's initial exp(logit_scale)
# The quantities of a form's comparison besides its gradients, in the crosscheck's order.
FORM_QUANTITIES = ("loss", "lambda", "d_aic", "rho", "rho0", "beta_t")

FormBatch = dict[str, np.ndarray]


@dataclass(frozen=True)
class FormCase:
    """One form with one set of options, on seeded float64 inputs of several steps."""

    form: str
    name: str
    options: tuple[tuple[str, Any], ...]
    batches: tuple[FormBatch, ...]

    @property
    def n(self) -> int:
        """Rows per tower or query (of the first array)."""
        return int(next(iter(self.batches[0].values())).shape[0])

    @property
    def d(self) -> int:
        """The embedding dimension."""
        return int(next(iter(self.batches[0].values())).shape[-1])


@dataclass
class FormResult:
    """One step's outputs as float64 NumPy arrays, and the dtypes they came in."""

    loss: np.ndarray
    grads: dict[str, np.ndarray]
    state: np.ndarray
    stats: dict[str, np.ndarray]
    loss_dtype: str = "float64"
    grad_dtypes: dict[str, str] = field(default_factory=dict)


def differentiable(form: str) -> tuple[str, ...]:
    """The arrays of ``form`` that have a gradient (not the labels).

    Args:
        form: a name of ``FORMS``.

    Returns:
        Their names, in argument order.
    """
    return tuple(name for name in FORM_ARRAYS[form] if name not in INTEGER_ARRAYS)


def form_cases(form: str, n: int, d: int, steps: int, seed: int) -> list[FormCase]:
    """The cases of ``form`` (see the module docstring) on ``n`` rows per tower or query.

    Args:
        form: a name of ``FORMS``.
        n: rows per tower or query.
        d: the embedding dimension.
        steps: batches per case.
        seed: the seed of the inputs.

    Returns:
        The cases, on float64 inputs.

    Raises:
        ValueError: an unknown ``form``.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}; got {form!r}")
    rng = np.random.default_rng([seed, n, d, FORMS.index(form)])

    def views(count: int) -> tuple[np.ndarray, np.ndarray]:
        a = rng.standard_normal((count, d))
        return a, a + VIEW_NOISE * rng.standard_normal((count, d))

    def batches(make: Callable[[], FormBatch]) -> tuple[FormBatch, ...]:
        return tuple(make() for _ in range(steps))

    if form == "two_view":

        def two_views() -> FormBatch:
            z_i, z_j = views(n)
            return {"z_i": z_i, "z_j": z_j}

        return [FormCase(form, "two views", (), batches(two_views))]
    if form == "two_tower":

        def tower() -> FormBatch:
            x, y = views(n)
            return {"x": x, "y": y, "scale": np.asarray(CLIP_SCALE)}

        return [FormCase(form, f"scale {CLIP_SCALE:.4g}", (), batches(tower))]
    if form == "explicit_negatives":

        def shared() -> FormBatch:
            q, k = views(n)
            return {"q": q, "k": k, "n": rng.standard_normal((4 * n, d))}

        def paired() -> FormBatch:
            q, k = views(n)
            return {"q": q, "k": k, "n": rng.standard_normal((n, 2 * n, d))}

        return [
            FormCase(form, f"queue of {4 * n}", (), batches(shared)),
            FormCase(
                form,
                f"{2 * n} paired + in-batch",
                (("in_batch_negatives", True),),
                batches(paired),
            ),
        ]
    samples = max(n // 3, 2)

    def labelled() -> FormBatch:
        base = rng.standard_normal((samples, d))
        rows = [base + VIEW_NOISE * rng.standard_normal((samples, d)) for _ in range(3)]
        singles = rng.standard_normal((2, d))
        z = np.concatenate([*rows, singles])
        labels = np.concatenate([np.tile(7 * np.arange(samples) - 5, 3), [1000, 1001]])
        order = rng.permutation(z.shape[0])
        return {"z": z[order], "labels": labels[order].astype(np.int64)}

    return [FormCase(form, f"3 views of {samples} + 2 singletons", (), batches(labelled))]


def form_arrays(backend: Backend, batch: FormBatch, dtype: str) -> dict[str, Any]:
    """One batch of a form as arrays of ``backend``: floating arrays in ``dtype``, labels as
    they are (integers).

    Args:
        backend: the array library and device.
        batch: the form's arrays as NumPy.
        dtype: the dtype of the floating arrays.

    Returns:
        The arrays by name.
    """
    return {name: _array(backend, name, value, dtype) for name, value in batch.items()}


def _array(backend: Backend, name: str, value: np.ndarray, dtype: str) -> Any:
    if name not in INTEGER_ARRAYS:
        return backend.asarray(value, dtype)
    if backend.module == "jax":
        import jax.numpy as jnp

        return jnp.asarray(value)
    if backend.module == "torch":
        return backend.lib().asarray(value, device=backend.device)
    if backend.module == "array_api_strict":
        xp = backend.lib()
        return xp.asarray(value, device=xp.Device(backend.device))
    if backend.module == "cupy":
        return backend.lib().asarray(value)
    return value


def split_arguments(form: str, arrays: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """A form's arrays as its functions take them: positional (before the state) and keyword.

    Args:
        form: a name of ``FORMS``.
        arrays: the arrays by name.

    Returns:
        The positional arrays in argument order, and the keyword arrays.
    """
    keywords = KEYWORD_ARRAYS.get(form, ())
    positional = [arrays[name] for name in FORM_ARRAYS[form] if name not in keywords]
    return positional, {name: arrays[name] for name in keywords}


def form_result(
    backend: Backend, loss: Any, grads: dict[str, Any], state: Any, stats: Any
) -> FormResult:
    """One step's outputs on ``backend``, read back as NumPy.

    Args:
        backend: the array library and device.
        loss: the loss.
        grads: the gradient of each differentiable array, by name.
        state: ``beta_t`` carried to the next step.
        stats: the step's statistics.

    Returns:
        The outputs as float64 NumPy arrays, with the dtypes of the loss and gradients.
    """
    return FormResult(
        loss=backend.to_numpy(loss),
        grads={name: backend.to_numpy(g) for name, g in grads.items()},
        state=backend.to_numpy(state),
        stats={key: backend.to_numpy(value) for key, value in stats.items()},
        loss_dtype=dtype_name(loss),
        grad_dtypes={name: dtype_name(g) for name, g in grads.items()},
    )


def core_function(form: str) -> Callable[..., Any]:
    """The core's ``<form>_value_and_grad``.

    Args:
        form: a name of ``FORMS``.

    Returns:
        The function.
    """
    function: Callable[..., Any] = getattr(core_forms, f"{form}_value_and_grad")
    return function


@functools.cache
def _jax_core_function(form: str, options: tuple[str, ...]) -> Callable[..., Any]:
    # One compiled function per form and option names for the process: JAX compiles once per
    # configuration, options and shapes.
    import jax

    return jax.jit(core_function(form), static_argnames=("config", *options))


def run_core_form(
    backend: Backend, case: FormCase, config: WEINCEConfig, dtype: str
) -> list[FormResult]:
    """The core's ``<form>_value_and_grad`` on ``backend``'s arrays, each batch of ``case`` in
    turn, the state carried (under ``jax.jit`` on JAX, full-precision float32 products).

    Args:
        backend: the array library and device.
        case: the form and its inputs.
        config: the loss's configuration.
        dtype: the dtype the floating inputs are cast to.

    Returns:
        One result per step.
    """
    options = dict(case.options)
    function = core_function(case.form)
    if backend.module == "jax":
        function = _jax_core_function(case.form, tuple(sorted(options)))
    first = next(iter(case.batches[0].values()))
    state = init_state(config, like=backend.asarray(first, dtype))
    results = []
    with full_precision_matmuls(backend.module):
        for batch in case.batches:
            positional, keywords = split_arguments(case.form, form_arrays(backend, batch, dtype))
            loss, grads, state, stats = function(*positional, state, config, **keywords, **options)
            named = dict(zip(differentiable(case.form), grads, strict=True))
            results.append(form_result(backend, loss, named, state, stats))
    return results


def form_reference(case: FormCase, config: WEINCEConfig) -> list[FormResult]:
    """The core on NumPy float64 arrays of ``case``'s inputs: what every backend must give.

    Args:
        case: the form and its inputs.
        config: the loss's configuration.

    Returns:
        One result per step.
    """
    return run_core_form(Backend("numpy", "numpy", "cpu"), case, config, "float64")


def form_shortfall(case: FormCase) -> float:
    """The smallest ``1 - cosine`` between any two rows of the inputs (for the reader).

    Args:
        case: the form and its inputs.

    Returns:
        The shortfall (at least ``eps``), as :func:`smallest_shortfall` measures it.
    """
    rows = []
    for batch in case.batches:
        for name, value in batch.items():
            if name not in INTEGER_ARRAYS and value.ndim >= 2:
                rows.append(value.reshape(-1, value.shape[-1]))
    joined = np.concatenate(rows)
    return smallest_shortfall([(joined, joined[:0])])


def rounded_case(backend: Backend, case: FormCase, dtype: str) -> FormCase:
    """``case`` with its inputs as ``backend`` holds them in ``dtype`` (the reference computes
    on the same numbers).

    Args:
        backend: the array library and device.
        case: the form and its inputs.
        dtype: the dtype under test.

    Returns:
        The case on the rounded inputs.
    """
    batches = tuple(
        {
            k: v if k in INTEGER_ARRAYS else backend.to_numpy(backend.asarray(v, dtype))
            for k, v in batch.items()
        }
        for batch in case.batches
    )
    return FormCase(case.form, case.name, case.options, batches)


def _stacked(results: Sequence[FormResult], quantity: str) -> np.ndarray:
    if quantity == "loss":
        return np.stack([r.loss for r in results])
    if quantity.startswith("grad_"):
        return np.stack([r.grads[quantity[5:]] for r in results])
    if quantity == "beta_t":  # the value used in each step, then the value carried out of it
        return np.stack([np.stack([r.stats["beta_t"], r.state]) for r in results])
    return np.stack([r.stats[quantity] for r in results])


def compare_form(
    form: str,
    results: Sequence[FormResult],
    expected: Sequence[FormResult],
    tol: Tolerance,
    config: WEINCEConfig,
) -> dict[str, Difference]:
    """Every quantity of ``FORM_QUANTITIES``, and each gradient on its own (``grad_x``, ...),
    against ``expected``; ``grad`` is the worst gradient. Checked as the two-view comparison
    checks them (``strict``): a reference that is not finite fails, and the statistics
    ``config`` does not compute are left out.

    Args:
        form: the form's name.
        results: the backend's steps.
        expected: the reference's steps (:func:`form_reference`).
        tol: the bounds.
        config: the loss's configuration.

    Returns:
        A ``Difference`` per quantity and per gradient.
    """
    computed = computed_quantities(config)
    out = {}
    for q in FORM_QUANTITIES:
        diff = difference(_stacked(results, q), _stacked(expected, q), q, tol, strict=True)
        if q not in computed:
            diff = Difference(diff.abs, diff.rel, diff.error, diff.tolerance, computed=False)
        out[q] = diff
    grads = {}
    for name in differentiable(form):
        key = f"grad_{name}"
        grads[key] = difference(
            _stacked(results, key), _stacked(expected, key), "grad", tol, strict=True
        )
    out["grad"] = max(grads.values(), key=lambda diff: diff.error / diff.tolerance)
    return {**out, **grads}
