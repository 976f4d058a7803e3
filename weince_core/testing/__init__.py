"""Testing WEINCE on every array library: the backend matrix, tolerances, reference vectors.

In the spirit of scipy's ``xp`` fixture and ``xp_assert_close``: a test is written once and runs
on every backend this machine has (:func:`all_backends`), within tolerances that depend on the
dtype and on the inputs (:func:`tolerance`), against the reference vectors of the math page
(:func:`load_golden`), with normwise assertions (:func:`assert_close_normwise`). The test suite
and ``weince crosscheck`` both use this module.

The backend matrix
------------------
A backend is an array library on one device: it builds arrays from NumPy data
(:meth:`Backend.asarray`), compiles where the library compiles (:meth:`Backend.jit`), reads
results back as float64 NumPy arrays (:meth:`Backend.to_numpy`); :func:`run_core_form` runs the
core's loss of any pairing form on it for a few steps with the state carried. Listing the
backends only looks the libraries up (``importlib.util.find_spec``); a probe for a device imports
the one library it probes.

Nothing here imports an adapter (``weince_torch``, ``weince_jax``, ``weince_cupy``) or the
command-line tools, and a test checks it (tests/test_boundaries.py): a backend *names* its
framework's adapter (:attr:`Backend.adapter`, a module name), and whoever runs the loss through
the adapter imports it.

Matrix multiplications are compared in full float32 precision: TF32, which keeps 10 bits of
mantissa and would cost three decimal digits in ``S = U U^T``, is switched off while
:func:`full_precision_matmuls` is active (PyTorch: ``torch.set_float32_matmul_precision``,
every setting put back afterwards; JAX: ``jax.default_matmul_precision("highest")``, since XLA
uses TF32 for float32 dots on recent NVIDIA GPUs by default; CuPy uses TF32 only when
``CUPY_TF32=1`` is set, which is refused).

Comparison
----------
:func:`reference_results` runs the core on NumPy float64 arrays holding a backend's inputs;
:func:`compare` measures every quantity of :data:`QUANTITIES` against it, each within a
:class:`Tolerance` (:class:`Difference`); :class:`ReferenceCache` computes each reference once.
The pairing forms (docs/math.md section 9) have their seeded cases (:func:`form_cases`), their
runs through the core on any backend (:func:`run_core_form`), their reference
(:func:`form_reference`) and comparison (:func:`compare_form`); ``weince.testing`` runs them
through the adapters.

The tolerances, and the measurements behind them, are in the docstring of
``weince_core.testing._tolerances``.
"""

from __future__ import annotations

from ._compare import (
    QUANTITIES,
    TAIL_QUANTITIES,
    VIEW_NOISE,
    Difference,
    ReferenceCache,
    compare,
    computed_quantities,
    difference,
    generated_batches,
    reference_results,
)
from ._forms import (
    CLIP_SCALE,
    FORM_ARRAYS,
    FORM_QUANTITIES,
    FORMS,
    INTEGER_ARRAYS,
    KEYWORD_ARRAYS,
    FormBatch,
    FormCase,
    FormResult,
    compare_form,
    core_function,
    differentiable,
    form_arrays,
    form_cases,
    form_reference,
    form_result,
    form_shortfall,
    rounded_case,
    run_core_form,
    split_arguments,
)
from ._golden import GOLDEN_VARIABLES, Golden, golden_directory, golden_names, load_golden
from ._matrix import (
    ADAPTERS,
    BACKEND_IDS,
    Backend,
    Batches,
    StepResult,
    all_backends,
    dtype_name,
    enable_jax_float64,
    full_precision_matmuls,
)
from ._tolerances import (
    CONDITION,
    DTYPES,
    RTOL_FLOAT32,
    RTOL_FLOAT64,
    TOLERANCES,
    VERDICT,
    Tolerance,
    assert_close_normwise,
    assert_matches_golden_step,
    smallest_shortfall,
    tolerance,
)

__all__ = [
    "ADAPTERS",
    "BACKEND_IDS",
    "CLIP_SCALE",
    "CONDITION",
    "DTYPES",
    "FORMS",
    "FORM_ARRAYS",
    "FORM_QUANTITIES",
    "GOLDEN_VARIABLES",
    "INTEGER_ARRAYS",
    "KEYWORD_ARRAYS",
    "QUANTITIES",
    "RTOL_FLOAT32",
    "RTOL_FLOAT64",
    "TAIL_QUANTITIES",
    "TOLERANCES",
    "VERDICT",
    "VIEW_NOISE",
    "Backend",
    "Batches",
    "Difference",
    "FormBatch",
    "FormCase",
    "FormResult",
    "Golden",
    "ReferenceCache",
    "StepResult",
    "Tolerance",
    "all_backends",
    "assert_close_normwise",
    "assert_matches_golden_step",
    "compare",
    "compare_form",
    "computed_quantities",
    "core_function",
    "difference",
    "differentiable",
    "dtype_name",
    "enable_jax_float64",
    "form_arrays",
    "form_cases",
    "form_reference",
    "form_result",
    "form_shortfall",
    "full_precision_matmuls",
    "generated_batches",
    "golden_directory",
    "golden_names",
    "load_golden",
    "reference_results",
    "rounded_case",
    "run_core_form",
    "smallest_shortfall",
    "split_arguments",
    "tolerance",
]
