"""Compare the loss, gradients, statistics and state of every installed backend with NumPy float64.

Each backend (NumPy, array_api_strict, PyTorch, JAX, CuPy; every device found) runs a few steps
of the loss on the same seeded inputs, or on your own embeddings, with the state carried from
step to step, through its framework's adapter where there is one. Its results are compared with
the core on NumPy float64 arrays holding the same inputs (rounded to the dtype under test).
Errors are normwise, max|x - x_ref| / max|x_ref| over all steps ('lambda': absolute; 'dAIC':
relative to max(|dAIC_ref|, 1)). A row passes only when every quantity the preset computes (loss,
gradients, lambda, dAIC, rho, rho0, beta_t used and carried) is finite where the reference is,
the reference itself is finite, the input holds no NaN or inf, and each error is within the
tolerance of the row's dtype: a fixed number per dtype, printed with the table and in the JSON,
whatever the inputs (listed below).

Exit status: 0 when every row passes, 1 when any fails, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from weince.cli import forms_check
from weince.cli.args import (
    backend_names,
    choice_list,
    int_list,
    matching_ids,
    output_file,
    positive_int,
)
from weince.cli.output import table, track, write_json
from weince.testing import PATHS, Backend, Row, all_backends
from weince_core import WEINCEConfig
from weince_core.testing import (
    BACKEND_IDS,
    DTYPES,
    VERDICT,
    ReferenceCache,
    StepResult,
    Tolerance,
    compare,
    computed_quantities,
    generated_batches,
)

PRESETS = ("paper", "blend", "infonce")
TABLE_QUANTITIES = ("loss", "grad", "lambda", "beta_t")
Batch = tuple[np.ndarray, np.ndarray]
T = TypeVar("T")


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


class UsageError(Exception):
    """A bad argument: the message names it."""


# -- arguments ------------------------------------------------------------------------------


def _tolerance_epilog() -> str:
    lines = [
        "tolerances, fixed per dtype whatever the inputs (errors normwise; lambda absolute;",
        "dAIC relative to max(|dAIC|, 1)):",
    ]
    lines += [f"  {line}" for line in tolerance_lines()]
    lines += [
        "'value' bounds loss, rho, rho0 and beta_t. Half precision computes in float32, whose",
        "cap 1 - eps differs from float64's (1 - 1.0133e-6 for eps = 1e-6): on copies the loss",
        "moves by up to 6e-4, hence 1e-3. Pairs just short of the cap (1 - cosine from about",
        "1e-6 to 1e-4, which float32 holds to few digits) can fail float32 rows: the tolerance",
        "does not widen for them; compare such inputs in float64.",
    ]
    return "\n".join(lines)


def tolerance_lines() -> list[str]:
    """The verdict's tolerances, a line per dtype, for the help and the table.

    Returns:
        The lines: a header, then one per dtype.
    """
    rows = []
    for dtype, tol in VERDICT.items():
        bounds = [f"{b:.0e}" for b in (tol.value, tol.lam, tol.grad, tol.d_aic)]
        extra = f"(+ {tol.grad_abs:.1e} absolute on gradients)" if tol.grad_abs else ""
        rows.append([dtype, *bounds, extra])
    header = ["dtype", "value", "lambda", "grad", "d_aic", ""]
    return table(header, rows, justify="lrrrrl").splitlines()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``weince crosscheck``.

    Args:
        parser: the command's parser, to which the options are added.
    """
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _tolerance_epilog()
    parser.add_argument(
        "--sizes",
        type=int_list(2),
        action="append",
        metavar="N[,N...]",
        help="pairs per batch (2N rows); a comma list or repeated (default: 256)",
    )
    parser.add_argument(
        "--dim", type=positive_int(1), metavar="D", help="embedding dimension (default: 64)"
    )
    parser.add_argument(
        "--dtype",
        type=choice_list("dtype", DTYPES),
        action="append",
        metavar="DTYPE[,DTYPE...]",
        help=f"{', '.join(DTYPES)} or all; each backend runs those it has (default: all)",
    )
    parser.add_argument(
        "--preset",
        type=choice_list("preset", PRESETS),
        action="append",
        metavar="PRESET[,PRESET...]",
        help=f"{', '.join(PRESETS)} or all (default: paper)",
    )
    parser.add_argument(
        "--steps",
        type=positive_int(1),
        metavar="T",
        help="steps per run, the state carried (default: 3)",
    )
    parser.add_argument(
        "--seed", type=positive_int(0), default=0, help="seed of the inputs, >= 0 (default: 0)"
    )
    parser.add_argument(
        "--input",
        type=Path,
        metavar="PATH",
        help="your embeddings instead of generated ones: .npy of shape (2, N, d) (the two "
        "views) or (2N, d) (z_i the first half, z_j the second); or .npz with arrays z_i and "
        "z_j of shape (N, d), or (T, N, d) for T steps. A single batch runs --steps times",
    )
    parser.add_argument(
        "--backends",
        type=backend_names,
        action="append",
        metavar="ID[,ID...]",
        help=f"only these: {', '.join(BACKEND_IDS)}, or a prefix such as torch "
        "(default: every installed one; one named here that cannot run is an error)",
    )
    parser.add_argument(
        "--path",
        choices=PATHS,
        default="adapter",
        help="adapter: each framework's adapter where installed, else the core (default); "
        "core: the core on every framework's arrays",
    )
    parser.add_argument(
        "--json", type=output_file, metavar="PATH", help="also write the results here"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    forms_check.add_form_argument(parser)  # --form: the pairing forms (weince.cli.forms_check)


def _flat(values: Iterable[list[Any]] | None, default: T) -> list[Any] | T:
    """The items of an ``append`` option's lists, each once, in order; ``default`` if none."""
    if values is None:
        return default
    return list(dict.fromkeys(item for group in values for item in group))


# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """The inputs of one run: a name for the table and the batches of its steps (float64)."""

    name: str
    batches: tuple[Batch, ...]

    @property
    def n(self) -> int:
        return self.batches[0][0].shape[0]

    @property
    def d(self) -> int:
        return self.batches[0][0].shape[1]

    @property
    def nonfinite_rows(self) -> int:
        """How many rows, over both views and every step, hold a NaN or an infinity."""
        return sum(
            int(np.sum(~np.isfinite(z).all(axis=1))) for batch in self.batches for z in batch
        )


def load_batches(path: Path, steps: int) -> tuple[Batch, ...]:
    """The user's embeddings (see ``--input``) as float64 batches; ``UsageError`` if malformed.

    Args:
        path: an ``.npy`` or ``.npz`` file (see ``--input``).
        steps: how many times a single batch runs.

    Returns:
        The batches, float64.
    """
    if not path.is_file():
        raise UsageError(f"--input: no such file: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UsageError(f"--input: cannot read {path} as .npy or .npz: {error}") from None
    if isinstance(loaded, np.ndarray):
        if loaded.ndim == 3 and loaded.shape[0] == 2:
            z_i, z_j = loaded[0], loaded[1]
        elif loaded.ndim == 2 and loaded.shape[0] % 2 == 0:
            z_i, z_j = np.split(loaded, 2)
        else:
            raise UsageError(
                f"--input: a .npy must have shape (2, N, d) or (2N, d); {path} has {loaded.shape}"
            )
        views = [(z_i, z_j)] * steps
    else:
        with loaded:
            missing = {"z_i", "z_j"} - set(loaded.files)
            if missing:
                raise UsageError(
                    f"--input: {path} lacks {', '.join(sorted(missing))} "
                    f"(it has {', '.join(loaded.files) or 'nothing'})"
                )
            z_i, z_j = loaded["z_i"], loaded["z_j"]
        if z_i.shape != z_j.shape or z_i.ndim not in (2, 3):
            raise UsageError(
                f"--input: z_i and z_j must have one shape, (N, d) or (T, N, d); got "
                f"{z_i.shape} and {z_j.shape}"
            )
        views = list(zip(z_i, z_j, strict=True)) if z_i.ndim == 3 else [(z_i, z_j)] * steps
    batches = []
    for z_i, z_j in views:
        if not np.issubdtype(z_i.dtype, np.number) or np.iscomplexobj(z_i):
            raise UsageError(f"--input: embeddings must be real numbers; got {z_i.dtype}")
        if z_i.shape[0] < 2 or z_i.shape[1] < 1:
            raise UsageError(f"--input: need N >= 2 pairs and d >= 1; got (N, d) = {z_i.shape}")
        batches.append((np.asarray(z_i, np.float64), np.asarray(z_j, np.float64)))
    return tuple(batches)


# -- rows -----------------------------------------------------------------------------------


def _last_step(row: Row, results: Sequence[StepResult]) -> None:
    last = results[-1]
    row.loss = float(last.loss)
    row.grad_norm = float(np.sqrt(np.sum(last.grad_i**2) + np.sum(last.grad_j**2)))


@dataclass(frozen=True)
class Job:
    case: Case
    preset: str
    dtype: str
    backend: Backend


def run_job(job: Job, references: ReferenceCache, path: str) -> Row:
    """Run one backend on one case and compare it with the reference of the same inputs.

    Args:
        job: the case, preset, dtype and backend.
        references: the reference results, shared by the jobs.
        path: ``"adapter"`` or ``"core"``.

    Returns:
        The row; a backend that raised gives a row with its ``error``.
    """
    backend, case = job.backend, job.case
    row = Row(
        case.name,
        job.preset,
        case.n,
        case.d,
        len(case.batches),
        backend.id,
        backend.device or "",
        job.dtype,
        path,
    )
    try:
        # The inputs as the backend holds them: the reference computes on the same numbers.
        def held(z: np.ndarray) -> np.ndarray:
            return backend.to_numpy(backend.asarray(z, job.dtype))

        rounded = tuple((held(z_i), held(z_j)) for z_i, z_j in case.batches)
        reference = references.get(rounded, job.preset)
        row.delta = references.delta(rounded)
        row.nonfinite_rows = Case(case.name, rounded).nonfinite_rows
        row.tolerance = VERDICT[job.dtype]
        config = WEINCEConfig.preset(job.preset)
        row.path, results = backend.run_steps(rounded, config, job.dtype, path=path)
    except Exception as error:  # a broken backend is a failed row, not a crashed command
        row.error = f"{type(error).__name__}: {error}"
        return row
    _last_step(row, results)
    row.differences = compare(results, reference, row.tolerance, computed_quantities(config))
    row.wrong_dtype = _wrong_dtype(results, job.dtype)
    return row


def _wrong_dtype(results: Sequence[StepResult], dtype: str) -> str | None:
    """What came back in the wrong dtype (docs/math.md section 7), or ``None``."""
    compute = "float64" if dtype == "float64" else "float32"
    for r in results:
        if r.loss_dtype != compute:
            return f"loss in {r.loss_dtype}, not {compute}"
        if r.grad_dtype != dtype:
            return f"gradient in {r.grad_dtype}, not {dtype}"
    return None


def reference_row(case: Case, preset: str, references: ReferenceCache) -> Row:
    """The reference's own row (NumPy float64) of a case and preset, for the table.

    Args:
        case: the inputs.
        preset: the preset's name.
        references: the reference results.

    Returns:
        The row.
    """
    row = Row(
        case.name, preset, case.n, case.d, len(case.batches), "numpy", "cpu", "float64", "reference"
    )
    _last_step(row, references.get(case.batches, preset))
    row.delta = references.delta(case.batches)
    row.nonfinite_rows = case.nonfinite_rows
    return row


# -- output ---------------------------------------------------------------------------------


def _number(x: float) -> str:
    if x == 0:
        return "0"
    return f"{x:.1e}" if math.isfinite(x) else str(x)


def _tolerance_text(tol: Tolerance | None) -> str:
    """``value/grad`` bounds, or one number when they print alike."""
    if tol is None:
        return "-"
    value, grad = _short(tol.value), _short(tol.grad)
    return value if value == grad else f"{value}/{grad}"


def _short(x: float) -> str:
    """``2e-5`` rather than ``2e-05``."""
    mantissa, _, exponent = f"{x:.0e}".partition("e")
    return f"{mantissa}e{int(exponent)}"


def format_table(rows: Sequence[Row], references: Sequence[Row]) -> str:
    """The rows under one heading per case and preset; a summary of the failures last.

    Args:
        rows: the backends' rows.
        references: the reference row of each case and preset, in the order of the headings.

    Returns:
        The text that ``weince crosscheck`` prints.
    """
    header = ["backend", "device", "dtype", "path", "loss", "|grad|"]
    for q in TABLE_QUANTITIES:
        header += [f"{q} abs", f"{q} rel"]
    header += ["tol", "result"]
    justify = "llll" + "r" * (len(header) - 5) + "l"
    lines: list[str] = []
    for ref in references:
        group = [r for r in rows if (r.case, r.preset) == (ref.case, ref.preset)]
        cells = [_cells(ref, reference=True)] + [_cells(r) for r in group]
        lines.append("")
        lines.append(
            f"{ref.preset} preset, {ref.case}: N = {ref.n} pairs, d = {ref.d}, {ref.steps} "
            f"step{'s' if ref.steps > 1 else ''}, smallest 1 - cosine {ref.delta:.1e}"
        )
        if ref.nonfinite_rows:
            lines.append(
                f"INPUT NOT FINITE: {ref.nonfinite_rows} rows hold NaN or inf; the reference is "
                "not finite and no row can pass"
            )
        lines.append(table(header, cells, justify=justify))
    lines.append("")
    lines.append(
        "abs = max|x - x_ref|, rel = abs / max|x_ref| over every step (x_ref: NumPy float64 on "
        "the same inputs); tol = the dtype's fixed tolerance on value / gradient errors:"
    )
    lines += [f"  {line}" for line in tolerance_lines()]
    failed = [r for r in rows if not r.passed]
    if failed:
        lines.append(f"FAILED: {len(failed)} of {len(rows)} rows disagree with NumPy float64:")
        for r in failed:
            what = r.error or _failures(r)
            lines.append(
                f"  {r.backend} ({r.device}, {r.dtype}, {r.path}) on {r.preset}, {r.case}: {what}"
            )
    else:
        lines.append(f"PASSED: all {len(rows)} rows agree with NumPy float64 within tolerance.")
    return "\n".join(lines)


def _failures(row: Row) -> str:
    """Why ``row`` fails, in a few words: the input, the dtype, each quantity off by more
    than its tolerance, and the quantities whose reference is not finite, in one list."""
    reasons, unvouched = [], []
    for q in row.failed:
        if q == "dtype":
            reasons.append(str(row.wrong_dtype))
        elif q == "input":
            reasons.append(f"input has {row.nonfinite_rows} rows with NaN or inf")
        elif row.differences[q].reference_nonfinite:
            unvouched.append(q)
        else:
            reasons.append(
                f"{q} {row.differences[q].error:.1e} > {row.differences[q].tolerance:.1e}"
            )
    if unvouched:
        reasons.append(f"reference not finite: {', '.join(unvouched)}")
    return ", ".join(reasons)


def _cells(row: Row, reference: bool = False) -> list[str]:
    cells = [row.backend, row.device, row.dtype, row.path]
    cells += [f"{row.loss:.8f}", f"{row.grad_norm:.4e}"]
    if reference:
        return cells + ["-"] * (2 * len(TABLE_QUANTITIES)) + ["-", "reference"]
    if row.error is not None:
        message = row.error if len(row.error) <= 60 else row.error[:57] + "..."
        return cells[:4] + ["-"] * (2 + 2 * len(TABLE_QUANTITIES)) + ["-", f"FAIL {message}"]
    for q in TABLE_QUANTITIES:
        diff = row.differences[q]
        if diff.reference_nonfinite:
            cells += ["ref", "not finite"]
        else:
            cells += [_number(diff.abs), _number(diff.rel)]
    result = "PASS" if row.passed else f"FAIL ({', '.join(row.failed)})"
    return [*cells, _tolerance_text(row.tolerance), result]


# -- the command ----------------------------------------------------------------------------


def _describe_backend(backend: Backend) -> str:
    try:
        return backend.describe()
    except Exception as error:  # a description is no reason to stop
        return f"{backend.module}, {type(error).__name__}"


def _describe(job: Job) -> str:
    return f"{job.backend.id} {job.dtype} {job.preset} {job.case.name}"


def _select_backends(names: list[str] | None) -> tuple[list[Backend], list[Backend]]:
    """(runnable, skipped). A backend named by its id that cannot run is a ``UsageError``, as
    is a prefix (``torch``) none of whose backends can; otherwise a prefix takes those that can.
    """
    ids = None if names is None else [i for name in names for i in matching_ids(name)]
    backends = all_backends(ids)
    runnable = [b for b in backends if not b.skip_reason]
    skipped = [b for b in backends if b.skip_reason]
    for name in names or []:
        kinds = matching_ids(name)
        mine = [b for b in backends if b.id.partition(":")[0] in kinds]
        if name in BACKEND_IDS or not any(not b.skip_reason for b in mine):
            absent = [b for b in mine if b.skip_reason]
            if absent:
                reasons = "; ".join(f"{b.id}: {b.skip_reason}" for b in absent)
                raise UsageError(f"--backends: cannot run here: {reasons}")
    return runnable, skipped


def _cases(args: argparse.Namespace) -> list[Case]:
    steps = args.steps or 3
    if args.input is not None:
        if args.sizes is not None or args.dim is not None:
            raise UsageError("--input: --sizes and --dim come from the file; leave them out")
        batches = load_batches(args.input, steps)
        return [Case(args.input.name, batches)]
    d = args.dim or 64
    sizes = _flat(args.sizes, [256])
    return [Case(f"seed {args.seed}", generated_batches(n, d, steps, args.seed)) for n in sizes]


def run(args: argparse.Namespace) -> int:
    """Run the comparison; print the table; 0 if all agree, 1 if any does not, 2 on bad input.

    Args:
        args: the parsed options of the command.

    Returns:
        The exit status.
    """
    if forms_check.selected_forms(args) != ["two_view"]:  # --form: weince.cli.forms_check runs it
        return forms_check.run(args)
    code, report = run_two_view(args)
    if report is not None and args.json is not None:
        write_json(args.json, report)
    return code


def compared(backend: Backend, dtype: str) -> bool:
    """Whether ``backend`` is compared in ``dtype``: every dtype it has, but NumPy float64, which
    is the reference itself.

    Args:
        backend: a backend of the registry.
        dtype: a dtype name.

    Returns:
        Whether the pair is run.
    """
    return backend.supports(dtype) and not (backend.id == "numpy" and dtype == "float64")


def usage_error(message: str) -> None:
    """Print ``message`` as the command's usage error (the caller exits with status 2).

    Args:
        message: what is wrong, naming the option.
    """
    print(f"weince crosscheck: error: {message}", file=sys.stderr)


def run_two_view(args: argparse.Namespace) -> tuple[int, dict[str, Any] | None]:
    """The comparison of the two-view form: run it and print the table.

    Args:
        args: the parsed options of the command.

    Returns:
        The exit status, and the JSON report (``None`` after a usage error).
    """
    # Three frameworks may share one GPU here: JAX must not take 75% of its memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        cases = _cases(args)
        backends, skipped = _select_backends(_flat(args.backends, None))
    except UsageError as error:
        usage_error(str(error))
        return 2, None
    dtypes = _flat(args.dtype, list(DTYPES))
    presets = _flat(args.preset, ["paper"])
    jobs = [
        Job(case, preset, dtype, backend)
        for case in cases
        for preset in presets
        for dtype in dtypes
        for backend in backends
        if compared(backend, dtype)
    ]
    if not jobs:
        usage_error(f"--dtype: no selected backend has {', '.join(dtypes)}")
        return 2, None
    references = ReferenceCache()
    progress = track(jobs, "crosscheck", enabled=not args.no_progress, label=_describe)
    # JAX float64 for the runs only (float32 inputs stay float32); put back afterwards.
    with jax_float64(any(b.module == "jax" for b in backends)):
        rows = [run_job(job, references, args.path) for job in progress]
    reference_rows = [
        reference_row(case, preset, references) for case in cases for preset in presets
    ]
    machine = {b.id: _describe_backend(b) for b in backends}
    print("backends: " + "; ".join(f"{i} ({text})" for i, text in machine.items()))
    print(format_table(rows, reference_rows))
    for b in skipped:
        print(f"skipped {b.id}: {b.skip_reason}")
    report = {
        "passed": all(r.passed for r in rows),
        "settings": {
            "cases": [c.name for c in cases],
            "sizes": [c.n for c in cases],
            "dim": cases[0].d,
            "steps": len(cases[0].batches),
            "seed": args.seed,
            "input": str(args.input) if args.input else None,
            "presets": presets,
            "dtypes": dtypes,
            "path": args.path,
        },
        "backends": machine,
        "tolerances": {dtype: asdict(tol) for dtype, tol in VERDICT.items()},
        "reference": [r.as_dict() for r in reference_rows],
        "rows": [r.as_dict() for r in rows],
        "skipped": [{"backend": b.id, "reason": b.skip_reason} for b in skipped],
    }
    return (0 if report["passed"] else 1), report
