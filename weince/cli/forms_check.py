"""The pairing forms (docs/math.md section 9) on every backend, against the NumPy float64 core.

``weince crosscheck --form two_tower|explicit_negatives|multi_positive|two_view|all`` runs here
for every form but the two-view one (which ``weince.cli.crosscheck`` runs as before): seeded inputs
per form (``form_batches``), each backend running the form through its framework's adapter
where there is one (``run_form``: ``weince_torch.<form>`` with autograd, ``weince_jax.<form>``
under ``jax.jit(jax.value_and_grad(...))``, ``weince_cupy.<form>_value_and_grad``) or the
core's ``<form>_value_and_grad`` on the framework's arrays, and the comparison of the crosscheck
(its tolerances, rows and table), each gradient compared on its own.

A form's case is one set of options: ``two_tower`` with a learnable ``scale`` (CLIP's initial
``1 / 0.07``); ``explicit_negatives`` with a shared queue of ``4N`` and with ``2N`` paired
negatives plus the in-batch keys; ``multi_positive`` with three views of ``N // 3`` samples
and a few singletons (labels not contiguous).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import weince_core as wc
from weince.cli import crosscheck as cc
from weince.cli.args import choice_list
from weince.cli.output import track, write_json
from weince.testing import Backend, import_adapter
from weince_core import WEINCEConfig
from weince_core.testing import (
    Difference,
    computed_quantities,
    difference,
    dtype_name,
    full_precision_matmuls,
    smallest_shortfall,
)

FORMS = ("two_view", "two_tower", "explicit_negatives", "multi_positive")
# Each form's array arguments (before state), those with a gradient, and keyword arrays.
ARRAYS = {
    "two_view": ("z_i", "z_j"),
    "two_tower": ("x", "y", "scale"),
    "explicit_negatives": ("q", "k", "n"),
    "multi_positive": ("z", "labels"),
}
KEYWORD_ARRAYS = {"two_tower": ("scale",)}
INTEGER_ARRAYS = ("labels",)
CLIP_SCALE = 1 / 0.07  # CLIP's initial exp(logit_scale)
VIEW_NOISE = 0.5

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class FormCase:
    """One form with one set of options, on seeded float64 inputs of several steps."""

    form: str
    name: str
    options: tuple[tuple[str, Any], ...]
    batches: tuple[Batch, ...]

    @property
    def n(self) -> int:
        return int(next(iter(self.batches[0].values())).shape[0])

    @property
    def d(self) -> int:
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
    return tuple(name for name in ARRAYS[form] if name not in INTEGER_ARRAYS)


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
    """
    rng = np.random.default_rng([seed, n, d, FORMS.index(form)])

    def views(count: int) -> tuple[np.ndarray, np.ndarray]:
        a = rng.standard_normal((count, d))
        return a, a + VIEW_NOISE * rng.standard_normal((count, d))

    def batches(make: Any) -> tuple[Batch, ...]:
        return tuple(make() for _ in range(steps))

    if form == "two_view":

        def two_views() -> Batch:
            z_i, z_j = views(n)
            return {"z_i": z_i, "z_j": z_j}

        return [FormCase(form, "two views", (), batches(two_views))]
    if form == "two_tower":

        def tower() -> Batch:
            x, y = views(n)
            return {"x": x, "y": y, "scale": np.asarray(CLIP_SCALE)}

        return [FormCase(form, f"scale {CLIP_SCALE:.4g}", (), batches(tower))]
    if form == "explicit_negatives":

        def shared() -> Batch:
            q, k = views(n)
            return {"q": q, "k": k, "n": rng.standard_normal((4 * n, d))}

        def paired() -> Batch:
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
    if form == "multi_positive":
        samples = max(n // 3, 2)

        def labelled() -> Batch:
            base = rng.standard_normal((samples, d))
            rows = [base + VIEW_NOISE * rng.standard_normal((samples, d)) for _ in range(3)]
            singles = rng.standard_normal((2, d))
            z = np.concatenate([*rows, singles])
            labels = np.concatenate([np.tile(7 * np.arange(samples) - 5, 3), [1000, 1001]])
            order = rng.permutation(z.shape[0])
            return {"z": z[order], "labels": labels[order].astype(np.int64)}

        return [FormCase(form, f"3 views of {samples} + 2 singletons", (), batches(labelled))]
    raise ValueError(f"form must be one of {', '.join(FORMS)}; got {form!r}")


def _to_backend(backend: Backend, name: str, value: np.ndarray, dtype: str) -> Any:
    if name in INTEGER_ARRAYS:
        if backend.module == "jax":
            import jax.numpy as jnp

            return jnp.asarray(value)
        if backend.module == "torch":
            import torch

            return torch.asarray(value, device=backend.device)
        if backend.module == "array_api_strict":
            xp = backend.lib()
            return xp.asarray(value, device=xp.Device(backend.device))
        if backend.module == "cupy":
            return backend.lib().asarray(value)
        return value
    return backend.asarray(value, dtype)


def run_form(
    backend: Backend,
    case: FormCase,
    config: WEINCEConfig,
    dtype: str,
    *,
    path: str = "adapter",
) -> tuple[str, list[FormResult]]:
    """Each batch of ``case`` in turn on ``backend``, the state carried: ``(path, results)``.

    ``path="adapter"`` uses the framework's adapter where it is importable, else the core.

    Args:
        backend: the array library and device.
        case: the form and its inputs.
        config: the loss's configuration.
        dtype: the dtype the inputs are cast to.
        path: ``"adapter"`` or ``"core"``.

    Returns:
        The path taken and one ``FormResult`` per step.
    """
    adapter = import_adapter(backend.adapter) if path == "adapter" and backend.adapter else None
    options = dict(case.options)
    with full_precision_matmuls(backend.module):
        if adapter is None:
            return "core", _run_core(backend, case, config, dtype, options)
        runner = {"torch": _run_torch, "jax": _run_jax, "cupy": _run_cupy}[backend.module]
        return "adapter", runner(adapter, backend, case, config, dtype, options)


def _split(form: str, arrays: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    keywords = KEYWORD_ARRAYS.get(form, ())
    positional = [arrays[name] for name in ARRAYS[form] if name not in keywords]
    return positional, {name: arrays[name] for name in keywords}


def _result(
    backend: Backend, form: str, loss: Any, grads: dict[str, Any], state: Any, stats: Any
) -> FormResult:
    return FormResult(
        loss=backend.to_numpy(loss),
        grads={name: backend.to_numpy(g) for name, g in grads.items()},
        state=backend.to_numpy(state),
        stats={key: backend.to_numpy(value) for key, value in stats.items()},
        loss_dtype=dtype_name(loss),
        grad_dtypes={name: dtype_name(g) for name, g in grads.items()},
    )


def _core_function(form: str) -> Any:
    return getattr(wc, f"{form}_value_and_grad")


def _run_core(
    backend: Backend, case: FormCase, config: WEINCEConfig, dtype: str, options: dict[str, Any]
) -> list[FormResult]:
    function = _core_function(case.form)
    if backend.module == "jax":
        import jax

        function = jax.jit(function, static_argnames=("config", *options))
    first = next(iter(case.batches[0].values()))
    state = wc.init_state(config, like=backend.asarray(first, dtype))
    results = []
    for batch in case.batches:
        arrays = {k: _to_backend(backend, k, v, dtype) for k, v in batch.items()}
        positional, keywords = _split(case.form, arrays)
        loss, grads, state, stats = function(*positional, state, config, **keywords, **options)
        named = dict(zip(differentiable(case.form), grads, strict=True))
        results.append(_result(backend, case.form, loss, named, state, stats))
    return results


def _run_torch(
    weince_torch: Any,
    backend: Backend,
    case: FormCase,
    config: WEINCEConfig,
    dtype: str,
    options: dict[str, Any],
) -> list[FormResult]:
    function = getattr(weince_torch, case.form)
    state = weince_torch.init_state(config, like=backend.asarray(np.zeros(()), "float32"))
    results = []
    for batch in case.batches:
        arrays = {k: _to_backend(backend, k, v, dtype) for k, v in batch.items()}
        for name in differentiable(case.form):
            arrays[name].requires_grad_(True)
        positional, keywords = _split(case.form, arrays)
        loss, state, stats = function(*positional, state, config, **keywords, **options)
        loss.backward()
        grads = {name: arrays[name].grad for name in differentiable(case.form)}
        results.append(_result(backend, case.form, loss, grads, state, stats))
    return results


def _run_jax(
    weince_jax: Any,
    backend: Backend,
    case: FormCase,
    config: WEINCEConfig,
    dtype: str,
    options: dict[str, Any],
) -> list[FormResult]:
    import jax

    names = ARRAYS[case.form]
    wanted = differentiable(case.form)
    function = getattr(weince_jax, case.form)

    def loss_of(arrays: dict[str, Any], state: Any) -> Any:
        positional, keywords = _split(case.form, arrays)
        return function(*positional, state, config, **keywords, **options)

    def step(arrays: dict[str, Any], state: Any) -> Any:
        grad_part = {k: arrays[k] for k in wanted}
        rest = {k: arrays[k] for k in names if k not in wanted}
        return jax.value_and_grad(lambda g, r: loss_of({**g, **r}, state), has_aux=True)(
            grad_part, rest
        )

    step = jax.jit(step)
    state = weince_jax.init_state(config, like=backend.asarray(np.zeros(()), "float32"))
    results = []
    for batch in case.batches:
        arrays = {k: _to_backend(backend, k, v, dtype) for k, v in batch.items()}
        (loss, (state, stats)), grads = step(arrays, state)
        results.append(_result(backend, case.form, loss, grads, state.beta_t, stats))
    return results


def _run_cupy(
    weince_cupy: Any,
    backend: Backend,
    case: FormCase,
    config: WEINCEConfig,
    dtype: str,
    options: dict[str, Any],
) -> list[FormResult]:
    function = getattr(weince_cupy, f"{case.form}_value_and_grad")
    state = weince_cupy.init_state(config, like=backend.asarray(np.zeros(()), "float32"))
    results = []
    for batch in case.batches:
        arrays = {k: _to_backend(backend, k, v, dtype) for k, v in batch.items()}
        positional, keywords = _split(case.form, arrays)
        loss, grads, state, stats = function(*positional, state, config, **keywords, **options)
        named = dict(zip(differentiable(case.form), grads, strict=True))
        results.append(_result(backend, case.form, loss, named, state, stats))
    return results


def reference(case: FormCase, config: WEINCEConfig) -> list[FormResult]:
    """The core on NumPy float64 arrays of ``case``'s inputs: what every backend must give.

    Args:
        case: the form and its inputs.
        config: the loss's configuration.

    Returns:
        One ``FormResult`` per step.
    """
    numpy = Backend("numpy", "numpy", "cpu")
    return _run_core(numpy, case, config, "float64", dict(case.options))


def shortfall_of(case: FormCase) -> float:
    """The smallest ``1 - cosine`` between any two rows of the inputs (for the reader).

    Args:
        case: the form and its inputs.

    Returns:
        The shortfall (at least ``eps``).
    """
    rows = []
    for batch in case.batches:
        for name, value in batch.items():
            if name not in INTEGER_ARRAYS and value.ndim >= 2:
                rows.append(value.reshape(-1, value.shape[-1]))
    joined = np.concatenate(rows)
    return smallest_shortfall([(joined, joined[:0])])


# -- the comparison, on the crosscheck's rows ----------------------------------------------------

QUANTITIES = ("loss", "lambda", "d_aic", "rho", "rho0", "beta_t")


def _stacked(results: Sequence[FormResult], quantity: str) -> np.ndarray:
    if quantity == "loss":
        return np.stack([r.loss for r in results])
    if quantity.startswith("grad_"):
        return np.stack([r.grads[quantity[5:]] for r in results])
    if quantity == "beta_t":
        return np.stack([np.stack([r.stats["beta_t"], r.state]) for r in results])
    return np.stack([r.stats[quantity] for r in results])


def compare(
    form: str,
    results: Sequence[FormResult],
    expected: Sequence[FormResult],
    tol: Any,
    config: WEINCEConfig,
) -> dict[str, Difference]:
    """Every quantity, and each gradient on its own (``grad_x``, ...), against ``expected``;
    ``grad`` is the worst gradient (the table's column). Checked as the two-view crosscheck
    checks them: a reference that is not finite fails, and the statistics ``config`` does not
    compute are left out.

    Args:
        form: the form's name.
        results: the backend's steps.
        expected: the reference's steps.
        tol: the tolerance of the dtype.
        config: the loss's configuration.

    Returns:
        A ``Difference`` per quantity and per gradient.
    """
    computed = computed_quantities(config)
    out = {}
    for q in QUANTITIES:
        diff = difference(_stacked(results, q), _stacked(expected, q), q, tol, strict=True)
        if q not in computed:
            diff = Difference(diff.abs, diff.rel, diff.error, diff.tolerance, computed=False)
        out[q] = diff
    grads = {}
    for name in differentiable(form):
        key = f"grad_{name}"
        actual, reference_grad = _stacked(results, key), _stacked(expected, key)
        grads[key] = difference(actual, reference_grad, "grad", tol, strict=True)
    out["grad"] = max(grads.values(), key=lambda diff: diff.error / diff.tolerance)
    return {**out, **grads}


def rounded(backend: Backend, case: FormCase, dtype: str) -> FormCase:
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


def run_case(backend: Backend, case: FormCase, preset: str, dtype: str, path: str) -> cc.Row:
    """One backend on one case: a crosscheck row (its ``case`` names the form).

    Args:
        backend: the array library and device.
        case: the form and its inputs.
        preset: the preset's name.
        dtype: the dtype under test.
        path: ``"adapter"`` or ``"core"``.

    Returns:
        The row; a backend that raised gives a row with its ``error``.
    """
    row = cc.Row(
        f"{case.form}, {case.name}",
        preset,
        case.n,
        case.d,
        len(case.batches),
        backend.id,
        backend.device or "",
        dtype,
        path,
    )
    config = WEINCEConfig.preset(preset)
    try:
        mine = rounded(backend, case, dtype)
        expected = reference(mine, config)
        row.delta = shortfall_of(mine)
        row.tolerance = cc.VERDICT[dtype]  # fixed per dtype, as for the two-view form
        row.path, results = run_form(backend, mine, config, dtype, path=path)
    except Exception as error:  # a broken backend is a failed row, not a crashed command
        row.error = f"{type(error).__name__}: {error}"
        return row
    last = results[-1]
    row.loss = float(last.loss)
    row.grad_norm = float(math.sqrt(sum(float(np.sum(g**2)) for g in last.grads.values())))
    row.differences = compare(case.form, results, expected, row.tolerance, config)
    compute = "float64" if dtype == "float64" else "float32"
    for r in results:
        wrong = [f"gradient of {k} in {v}" for k, v in r.grad_dtypes.items() if v != dtype]
        if r.loss_dtype != compute:
            wrong.insert(0, f"loss in {r.loss_dtype}, not {compute}")
        if wrong:
            row.wrong_dtype = "; ".join(wrong)
            break
    return row


def reference_row(case: FormCase, preset: str) -> cc.Row:
    """The reference's own row (NumPy float64) of a form's case and preset.

    Args:
        case: the form and its inputs.
        preset: the preset's name.

    Returns:
        The row.
    """
    row = cc.Row(
        f"{case.form}, {case.name}",
        preset,
        case.n,
        case.d,
        len(case.batches),
        "numpy",
        "cpu",
        "float64",
        "reference",
    )
    last = reference(case, WEINCEConfig.preset(preset))[-1]
    row.loss = float(last.loss)
    row.grad_norm = float(math.sqrt(sum(float(np.sum(g**2)) for g in last.grads.values())))
    row.delta = shortfall_of(case)
    return row


# -- the --form option of weince crosscheck --------------------------------------------------


def add_form_argument(parser: argparse.ArgumentParser) -> None:
    """``--form``: which pairing forms ``weince crosscheck`` compares.

    Args:
        parser: the command's parser, to which the options are added.
    """
    parser.add_argument(
        "--form",
        type=choice_list("form", FORMS),
        action="append",
        metavar="FORM[,FORM...]",
        help=f"pairing forms (docs/math.md section 9): {', '.join(FORMS)} or all (default: "
        "two_view); the forms other than two_view run on generated inputs, 64 rows unless "
        "--sizes says otherwise",
    )


def _describe(job: tuple[FormCase, str, str, Backend]) -> str:
    case, preset, dtype, backend = job
    return f"{backend.id} {dtype} {preset} {case.form}, {case.name}"


def selected_forms(args: argparse.Namespace) -> list[str]:
    """The forms ``--form`` selects (``two_view`` by default).

    Args:
        args: the parsed options of the command.

    Returns:
        Their names, each once.
    """
    return cc._flat(getattr(args, "form", None), ["two_view"])


def run(args: argparse.Namespace) -> int:
    """``weince crosscheck --form ...``: every selected form; 0 if all agree, 1 if any does not,
    2 on bad input. The two-view form runs through ``weince.cli.crosscheck`` as before.

    Args:
        args: the parsed options of the command.

    Returns:
        The exit status.
    """
    forms = selected_forms(args)
    others = [form for form in forms if form != "two_view"]
    if args.input is not None:
        print(
            "weince crosscheck: error: --input: only for --form two_view (the forms' inputs "
            f"are generated); got --form {','.join(forms)}",
            file=sys.stderr,
        )
        return 2
    try:
        backends, skipped = cc._select_backends(cc._flat(args.backends, None))
    except cc.UsageError as error:
        print(f"weince crosscheck: error: {error}", file=sys.stderr)
        return 2
    dtypes = cc._flat(args.dtype, ["float64", "float32", "bfloat16", "float16"])
    presets = cc._flat(args.preset, ["paper"])
    steps, d = args.steps or 3, args.dim or 64
    sizes = cc._flat(args.sizes, [64])
    jobs = [
        (case, preset, dtype, backend)
        for form in others
        for n in sizes
        for case in form_cases(form, n, d, steps, args.seed)
        for preset in presets
        for dtype in dtypes
        for backend in backends
        if backend.supports(dtype) and not (backend.id == "numpy" and dtype == "float64")
    ]
    if not jobs:
        print(
            f"weince crosscheck: error: --dtype: no selected backend has {', '.join(dtypes)}",
            file=sys.stderr,
        )
        return 2
    report: dict[str, Any] = {"forms": {}}
    code = 0
    if "two_view" in forms:
        code, report["forms"]["two_view"] = cc.run_two_view(args)
        if code == 2:
            return 2
    progress = track(jobs, "crosscheck", enabled=not args.no_progress, label=_describe)
    with cc.jax_float64(any(b.module == "jax" for b in backends)):
        rows = [
            run_case(backend, case, preset, dtype, args.path)
            for case, preset, dtype, backend in progress
        ]
    references = [
        reference_row(case, preset)
        for form in others
        for n in sizes
        for case in form_cases(form, n, d, steps, args.seed)
        for preset in presets
    ]
    print(cc.format_table(rows, references))
    for b in skipped:
        print(f"skipped {b.id}: {b.skip_reason}")
    passed = all(r.passed for r in rows)
    if args.json is not None:
        for form in others:
            mine = [r for r in rows if r.case.startswith(f"{form}, ")]
            report["forms"][form] = {
                "passed": all(r.passed for r in mine),
                "rows": [r.as_json() for r in mine],
            }
        report["passed"] = passed and code == 0
        write_json(args.json, report)
    return 1 if code == 1 or not passed else 0
