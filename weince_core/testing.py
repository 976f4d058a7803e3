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
results back as float64 NumPy arrays (:meth:`Backend.to_numpy`) and runs the core's two-view loss
for a few steps with the state carried (:meth:`Backend.run_core`). Listing the backends only
looks the libraries up (``importlib.util.find_spec``); a probe for a device imports the one
library it probes.

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

Tolerances against the NumPy float64 reference
----------------------------------------------
These bounds depend on the inputs (they widen near the cap) and serve the test suite's
conformance matrix, which knows its inputs. ``weince crosscheck`` does not use them for its
verdict: it holds every row to a fixed tolerance per dtype, whatever the inputs.

The reference is the core on NumPy float64 arrays holding the *same* inputs, that is the inputs
after rounding to the dtype under test: what is measured is the computation, not the rounding of
the inputs (which for bfloat16 alone moves the loss by about 1e-3). Errors are normwise,
``max|x - x_ref| / max|x_ref|`` over a whole array and every step, except ``lambda``, a weight in
[0, 1], whose error is absolute, and ``dAIC``, taken relative to ``max(max|dAIC_ref|, 1)`` (it
is often near 0). ``value`` bounds the loss, ``beta_t`` (used and carried), ``rho`` and ``rho0``;
``lam`` bounds ``lambda``; ``grad`` both gradients; ``d_aic`` the ``dAIC``.

A bound is ``max(floor, C * u / delta)``. ``u`` is the unit roundoff of the dtype the loss is
computed in (2^-53 for float64; 2^-24 otherwise, since half precision computes in float32,
docs/math.md section 7) and ``delta`` the inputs' smallest shortfall ``1 - s`` over all pairs of
rows (``smallest_shortfall``). The shortfall coordinate ``-log(1 - s)`` and its derivative
``1 / (1 - s)`` turn an error ``u`` in ``s`` into a relative error ``u / (1 - s)``, so ``1/delta``
is the inputs' condition number: random inputs in high dimension have ``delta`` around 0.1,
embeddings with near-duplicate rows approach the floor ``eps = 1e-6``.

Measured (every CPU backend; presets paper, blend, infonce; N from 2 to 2048, d from 2 to 256;
two seeds; the largest error of each kind):

=========  ======================================  ===========================================
dtype      floor: value / lam / grad / d_aic       why
=========  ======================================  ===========================================
float64    1e-12 / 1e-12 / 1e-12 / 1e-12           measured 1e-14 at most off the cap (loss
                                                   8e-16, gradients 9e-15, dAIC 6e-15);
                                                   docs/math.md promises 1e-10 against
                                                   published implementation
float32    1e-5 / 2e-5 / 3e-5 / 5e-5               measured off the cap (delta > 0.05): loss
                                                   5e-7, rho and beta_t 3e-7, lambda 4e-6,
                                                   gradients 6e-6, dAIC 9e-6; the tail fits
                                                   sum logs of shortfalls over 2N rows
bfloat16   1e-5 / 2e-5 / 8e-3 / 5e-5               computed in float32, so as float32, except
                                                   the gradient, returned in bfloat16: rounding
                                                   alone is up to 2^-8 = 3.9e-3 (measured 3.5e-3)
float16    1e-5 / 2e-5 / 1e-3 / 5e-5 (+ 2^-24      as bfloat16 with float16's 2^-11 = 4.9e-4;
           absolute on gradients)                  gradients below 6e-5 are subnormal, spaced
                                                   2^-24 apart (measured 9e-4 at N = 512)
=========  ======================================  ===========================================

=========  ======================================  ===========================================
compute    C: value / lam / grad / d_aic           why
=========  ======================================  ===========================================
float64    12 / 500 / 100 / 250                    4 x the largest measured error * delta / u
                                                   (3, 126, 19, 62; near-cap inputs, delta =
                                                   1e-6)
float32    4 / 25 / 250 / 25                       4 x the largest measured (0.8, 5.6, 62, 5.2;
                                                   gradients at delta = 8e-3, d = 8, N = 512;
                                                   below 1e-4 float32 saturates, erring less)
=========  ======================================  ===========================================

On a further seed with N up to 2048 (NumPy, PyTorch) every error stayed below half its bound.
At the cap (delta near eps) the float32 bounds reach O(1): float32 cannot resolve ``1 - s``
there, and the test suite checks such inputs for finiteness and for agreement of the loss and
``beta_t`` with NumPy of the same dtype instead (tests/conformance/test_conformance_edges.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .config import WEINCEConfig
from .forms import nt_xent_value_and_grad
from .state import init_state

__all__ = [
    "ADAPTERS",
    "BACKEND_IDS",
    "CONDITION",
    "DTYPES",
    "GOLDEN_VARIABLES",
    "QUANTITIES",
    "RTOL_FLOAT32",
    "RTOL_FLOAT64",
    "TAIL_QUANTITIES",
    "TOLERANCES",
    "VIEW_NOISE",
    "Backend",
    "Batches",
    "Difference",
    "Golden",
    "ReferenceCache",
    "StepResult",
    "Tolerance",
    "all_backends",
    "assert_close_normwise",
    "assert_matches_golden_step",
    "compare",
    "computed_quantities",
    "difference",
    "dtype_name",
    "enable_jax_float64",
    "full_precision_matmuls",
    "generated_batches",
    "golden_directory",
    "golden_names",
    "load_golden",
    "reference_results",
    "smallest_shortfall",
    "tolerance",
]

DTYPES = ("float64", "float32", "bfloat16", "float16")

# -- tolerances --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """How closely results must agree with the float64 reference (see the module docstring).

    ``value`` bounds the loss, ``beta_t``, ``rho`` and ``rho0`` (normwise relative); ``lam``
    bounds ``lambda`` (absolute); ``grad`` both gradients (normwise relative, plus ``grad_abs``
    absolute: float16's subnormal spacing); ``d_aic`` the ``dAIC`` (relative to
    ``max(max|dAIC|, 1)``).
    """

    value: float
    lam: float
    grad: float
    d_aic: float
    grad_abs: float = 0.0

    def of(self, quantity: str, scale: float = 1.0) -> float:
        """The bound of one quantity.

        Args:
            quantity: ``"loss"``, ``"grad"``, ``"lambda"``, ``"d_aic"``, ``"rho"``, ...
            scale: the size of the reference values (the absolute part of ``grad`` is
                divided by it).

        Returns:
            The bound on the quantity's error, as the module docstring defines it.
        """
        if quantity == "grad":
            return self.grad + (self.grad_abs / scale if scale > 0 else 0.0)
        return {"d_aic": self.d_aic, "lambda": self.lam}.get(quantity, self.value)


# Floors: the bounds off the cap (measured errors times 5 to 20; the module docstring says why).
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(value=1e-12, lam=1e-12, grad=1e-12, d_aic=1e-12),
    "float32": Tolerance(value=1e-5, lam=2e-5, grad=3e-5, d_aic=5e-5),
    "bfloat16": Tolerance(value=1e-5, lam=2e-5, grad=8e-3, d_aic=5e-5),
    "float16": Tolerance(value=1e-5, lam=2e-5, grad=1e-3, d_aic=5e-5, grad_abs=2.0**-24),
}
# Near the cap a bound grows to C * u / delta: u is the unit roundoff of the compute dtype and
# delta the inputs' smallest shortfall 1 - s; 1/delta is the condition number of the shortfall
# coordinate -log(1 - s) and of its derivative 1/(1 - s). C: the largest measured
# error * delta / u, times 4, per compute dtype (half precision computes in float32).
CONDITION: dict[str, Tolerance] = {
    "float64": Tolerance(value=12.0, lam=500.0, grad=100.0, d_aic=250.0),
    "float32": Tolerance(value=4.0, lam=25.0, grad=250.0, d_aic=25.0),
}

# Normwise relative tolerance against the float64 reference vectors (docs/math.md promises
# about 1e-10).
RTOL_FLOAT64 = 1e-10
# float32 keeps about 7 digits; the worst seen against the reference vectors is 5e-6
# (gradients), from the tail fits' logs of shortfalls and the sums over 2N rows.
RTOL_FLOAT32 = 1e-5


def tolerance(dtype: str, delta: float) -> Tolerance:
    """The bounds for one dtype on given inputs: ``max(floor, C * u / delta)`` each.

    Args:
        dtype: the dtype under test, one of :data:`DTYPES`.
        delta: the inputs' smallest shortfall ``1 - s`` (:func:`smallest_shortfall`).

    Returns:
        The bounds on every quantity.
    """
    compute = "float64" if dtype == "float64" else "float32"
    unit = float(np.finfo(compute).eps) / 2
    floor, condition = astuple(TOLERANCES[dtype]), astuple(CONDITION[compute])
    return Tolerance(*(max(f, c * unit / delta) for f, c in zip(floor, condition, strict=True)))


def smallest_shortfall(
    batches: Sequence[tuple[np.ndarray, np.ndarray]], eps: float = 1e-6
) -> float:
    """The inputs' condition: ``delta = max(min over a, b != a of 1 - S_ab, eps)``.

    Args:
        batches: pairs of views ``(z_i, z_j)``; the rows of each pair are compared with each
            other.
        eps: the floor of ``delta`` (the loss's cap ``1 - eps``).

    Returns:
        ``delta`` over every batch.
    """
    delta = 1.0
    for z_i, z_j in batches:
        z = np.concatenate([z_i, z_j]).astype(np.float64)
        u = z / np.maximum(np.linalg.norm(z, axis=1), 1e-8)[:, None]
        s = u @ u.T
        np.fill_diagonal(s, -np.inf)
        delta = min(delta, 1.0 - float(np.max(s)))
    return max(delta, eps)


# -- assertions --------------------------------------------------------------------------------


def assert_close_normwise(
    actual: object, expected: object, rtol: float, what: str, *, equal_nan: bool = False
) -> None:
    """Assert ``max|actual - expected| <= rtol * max|expected|``, over whole arrays.

    Args:
        actual: the values under test (anything NumPy converts; read as float64).
        expected: the reference values, of the same shape.
        rtol: the normwise relative tolerance.
        what: names the values in the failure message.
        equal_nan: NaN is expected exactly where ``expected`` has it (a statistic a row does
            not have), and the other entries are compared.

    Raises:
        AssertionError: the shapes differ, NaNs sit elsewhere, or the error exceeds ``rtol``.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if equal_nan:
        missing = np.isnan(expected)
        assert np.array_equal(np.isnan(actual), missing), f"{what}: NaN at other entries"
        actual, expected = actual[~missing], expected[~missing]
        if expected.size == 0:
            return
    scale = max(float(np.max(np.abs(expected))), np.finfo(np.float64).tiny)
    error = float(np.max(np.abs(actual - expected))) / scale
    assert error <= rtol, f"{what}: relative error {error:.3e} > {rtol:.1e}"


def assert_matches_golden_step(
    golden: Golden,
    t: int,
    rtol: float,
    *,
    loss: object,
    grads: tuple[object, object],
    stats: Mapping[str, object],
    carried_beta_t: object,
    to_numpy: Callable[[Any], Any] = np.asarray,
) -> None:
    """Assert one step's loss, gradients, statistics and carried ``beta_t`` match a reference.

    Args:
        golden: the reference file (:func:`load_golden`).
        t: the step.
        rtol: the normwise relative tolerance of every quantity.
        loss: the loss of step ``t``.
        grads: the gradients with respect to ``z_i`` and ``z_j``.
        stats: the step's statistics (``lambda``, ``d_aic``, ``rho``, ``rho0``, ``beta_t``).
        carried_beta_t: ``beta_t`` carried to the next step.
        to_numpy: reads a backend's array as NumPy (e.g. :meth:`Backend.to_numpy`).

    Raises:
        AssertionError: a quantity is off; the message names the file, step and quantity.
    """
    ref = golden.step(t)
    checks = {
        "loss": (loss, ref["loss"]),
        "grad_zi": (grads[0], ref["grad_zi"]),
        "grad_zj": (grads[1], ref["grad_zj"]),
        "lambda": (stats["lambda"], ref["lambda"]),
        "dAIC": (stats["d_aic"], ref["dAIC"]),
        "rho": (stats["rho"], ref["rho"]),
        "rho0": (stats["rho0"], ref["rho0"]),
        "beta_t used": (stats["beta_t"], ref["beta_t"]),
        "beta_t carried": (carried_beta_t, ref["beta_t"]),
    }
    for what, (actual, expected) in checks.items():
        message = f"{golden.name} step {t} {what}"
        assert_close_normwise(to_numpy(actual), expected, rtol, message)


# -- reference vectors -------------------------------------------------------------------------

# The environment variables that point at the reference vectors, by folder name.
GOLDEN_VARIABLES = {"golden": "WEINCE_GOLDEN", "golden_forms": "WEINCE_GOLDEN_FORMS"}


@dataclass(frozen=True)
class Golden:
    """One reference file: a preset, and per-step inputs and outputs.

    ``meta`` is the file's description (the preset, the form and its options, input names).
    """

    name: str
    config: WEINCEConfig
    steps: int
    data: Any  # NpzFile
    meta: dict[str, Any]

    def step(self, t: int) -> dict[str, np.ndarray]:
        """The arrays of one step.

        Args:
            t: the step, from 0 to ``steps - 1``.

        Returns:
            Inputs and outputs by name (``zi``, ``zj``, ``loss``, ``grad_zi``, ``beta_t``...).
        """
        prefix = f"s{t}_"
        return {k[len(prefix) :]: self.data[k] for k in self.data.files if k.startswith(prefix)}


def golden_directory(kind: str, default: str | os.PathLike[str]) -> Path:
    """Where the reference vectors of one kind are: the environment's choice, else a default.

    Args:
        kind: ``"golden"`` (two views, ``WEINCE_GOLDEN``) or ``"golden_forms"`` (the pairing
            forms, ``WEINCE_GOLDEN_FORMS``).
        default: the folder used when the variable is not set.

    Returns:
        The folder.

    Raises:
        ValueError: ``kind`` is neither.
    """
    if kind not in GOLDEN_VARIABLES:
        raise ValueError(f"kind must be one of {', '.join(GOLDEN_VARIABLES)}; got {kind!r}")
    return Path(os.environ.get(GOLDEN_VARIABLES[kind]) or default)


def golden_names(directory: str | os.PathLike[str]) -> list[str]:
    """The reference files of a folder, by name (``paper_paired_n256_d64``...).

    Args:
        directory: a folder of ``<name>.npz`` and ``<name>.json`` pairs.

    Returns:
        The names, sorted.

    Raises:
        FileNotFoundError: the folder is missing or holds no ``.npz`` file; the message names
            the folder and the environment variables that choose it.
    """
    directory = Path(directory)
    names = sorted(p.stem for p in directory.glob("*.npz"))
    if not names:
        what = "does not exist" if not directory.is_dir() else "holds no reference vectors"
        variables = " and ".join(GOLDEN_VARIABLES.values())
        raise FileNotFoundError(
            f"{directory} {what} (*.npz with *.json): point {variables} at the folders of "
            f"reference vectors (the repository keeps them in tests/data/golden and "
            f"tests/data/golden_forms)"
        )
    return names


def load_golden(name: str, directory: str | os.PathLike[str]) -> Golden:
    """One reference file.

    Args:
        name: the file's name without extension (:func:`golden_names`).
        directory: the folder holding ``<name>.npz`` and ``<name>.json``.

    Returns:
        The reference, with the configuration its JSON names (preset and initial ``beta_t``).

    Raises:
        FileNotFoundError: either file is missing; the message names the folder and the
            environment variables that choose it.
    """
    directory = Path(directory)
    if not (directory / f"{name}.npz").is_file() or not (directory / f"{name}.json").is_file():
        variables = " and ".join(GOLDEN_VARIABLES.values())
        raise FileNotFoundError(
            f"no reference {name!r} (.npz and .json) in {directory}: check {variables}"
        )
    meta = json.loads((directory / f"{name}.json").read_text())
    config = WEINCEConfig.preset(meta["preset"], beta_init=meta["beta_t_initial"])
    return Golden(name, config, meta["steps"], np.load(directory / f"{name}.npz"), meta)


# -- the backend matrix ------------------------------------------------------------------------

# The adapter package of each framework, by module name: named here, imported by whoever runs
# the loss through it (never by this module).
ADAPTERS = {"torch": "weince_torch", "jax": "weince_jax", "cupy": "weince_cupy"}

Batches = Sequence[tuple[np.ndarray, np.ndarray]]


class StepResult(NamedTuple):
    """One step's outputs as float64 NumPy arrays, and the dtypes they came in."""

    loss: np.ndarray
    grad_i: np.ndarray
    grad_j: np.ndarray
    state: np.ndarray  # beta_t carried to the next step
    stats: dict[str, np.ndarray]
    loss_dtype: str
    grad_dtype: str


def dtype_name(x: Any) -> str:
    """An array's dtype as a plain name.

    Args:
        x: an array of any library.

    Returns:
        ``"float32"`` whether the library says ``float32``, ``torch.float32`` or
        ``xp.float32``.
    """
    return str(x.dtype).rpartition(".")[2]


@dataclass(frozen=True)
class Backend:
    """An array library on one device.

    ``device`` is in the library's own words: ``"cpu"``, ``"cuda:1"`` (torch, CuPy), ``"gpu:0"``
    (JAX), ``"CPU_DEVICE"`` or ``"no_float64"`` (array_api_strict). ``skip_reason`` says why the
    backend cannot run here (library missing, device absent); it is ``None`` when it can.
    """

    id: str
    module: str
    device: str | None = None
    float64: bool = True
    skip_reason: str | None = None
    dtypes: tuple[str, ...] = ("float64", "float32")

    def lib(self) -> Any:
        """The array library (imported now).

        Returns:
            The module named by ``module``.
        """
        return importlib.import_module(self.module)

    @property
    def adapter(self) -> str | None:
        """The name of the adapter package of this backend's framework, if it has one."""
        return ADAPTERS.get(self.module)

    def supports(self, dtype: str) -> bool:
        """Whether this backend has a dtype.

        Args:
            dtype: a name of :data:`DTYPES`.

        Returns:
            ``True`` when the backend makes arrays of ``dtype``.
        """
        return dtype in self.dtypes

    def describe(self) -> str:
        """The library's version and the device's name, e.g. ``torch 2.4.0, NVIDIA H100``.

        Returns:
            The description.
        """
        lib = self.lib()
        text = f"{self.module} {getattr(lib, '__version__', '?')}"
        index = self.device_index()
        if self.module == "torch" and self.device and self.device.startswith("cuda"):
            return f"{text}, {lib.cuda.get_device_name(index)}"
        if self.module == "jax":
            return f"{text}, {self.jax_device().device_kind}"
        if self.module == "cupy":
            name = lib.cuda.runtime.getDeviceProperties(index)["name"]
            return f"{text}, {name.decode() if isinstance(name, bytes) else name}"
        return f"{text}, {self.device}"

    def asarray(self, a: np.ndarray, dtype: str = "float64") -> Any:
        """NumPy data as an array of this backend.

        Args:
            a: the data.
            dtype: the dtype of the new array.

        Returns:
            ``a`` as an array of this backend's library, on its device, in ``dtype``.

        Raises:
            RuntimeError: a float64 JAX array without ``jax_enable_x64``
                (:func:`enable_jax_float64`).
        """
        a = np.asarray(a)
        if self.module == "numpy":
            return a.astype(dtype)
        if self.module == "array_api_strict":
            xp = self.lib()
            return xp.asarray(a.astype(dtype), device=xp.Device(self.device))
        if self.module == "torch":
            torch = self.lib()
            return torch.asarray(a, device=self.device).to(getattr(torch, dtype))
        if self.module == "jax":
            import jax
            import jax.numpy as jnp

            if dtype == "float64" and not jax.config.read("jax_enable_x64"):
                raise RuntimeError(
                    "float64 JAX arrays need jax_enable_x64 "
                    "(weince_core.testing.enable_jax_float64())"
                )
            return jax.device_put(jnp.asarray(a.astype(np.float64), dtype=dtype), self.jax_device())
        if self.module == "cupy":
            cupy = self.lib()
            with cupy.cuda.Device(self.device_index()):
                return cupy.asarray(a.astype(dtype))
        raise AssertionError(self.module)

    def jit(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """A function compiled where the backend compiles (JAX op by op is far slower).

        Args:
            fn: a function of this backend's arrays.

        Returns:
            ``jax.jit(fn)`` on JAX, ``fn`` itself elsewhere.
        """
        if self.module == "jax":
            import jax

            return jax.jit(fn)
        return fn

    def to_numpy(self, x: Any) -> np.ndarray:
        """An array of this backend read back as float64 NumPy (booleans, integers too).

        Args:
            x: an array of this backend.

        Returns:
            A float64 NumPy array.
        """
        if self.module == "torch":
            return x.detach().to("cpu", dtype=self.lib().float64).numpy()
        if self.module == "cupy":
            return x.get().astype(np.float64)
        if self.module == "jax":
            return np.asarray(x.astype("float32") if x.dtype.itemsize < 4 else x, dtype=np.float64)
        if self.module == "numpy":
            return np.asarray(x, dtype=np.float64)
        return np.from_dlpack(x).astype(np.float64)

    def step_result(
        self, loss: Any, grads: tuple[Any, Any], state: Any, stats: Mapping[str, Any]
    ) -> StepResult:
        """One step's outputs on this backend, read back as NumPy.

        Args:
            loss: the loss.
            grads: the gradients with respect to ``z_i`` and ``z_j``.
            state: ``beta_t`` carried to the next step.
            stats: the step's statistics.

        Returns:
            The outputs as float64 NumPy arrays, with the dtypes of the loss and gradients.
        """
        return StepResult(
            loss=self.to_numpy(loss),
            grad_i=self.to_numpy(grads[0]),
            grad_j=self.to_numpy(grads[1]),
            state=self.to_numpy(state),
            stats={key: self.to_numpy(value) for key, value in stats.items()},
            loss_dtype=dtype_name(loss),
            grad_dtype=dtype_name(grads[0]),
        )

    def run_core(self, batches: Batches, config: WEINCEConfig, dtype: str) -> list[StepResult]:
        """The core's two-view loss and gradients of each batch in turn, the state carried.

        Runs ``weince_core.nt_xent_value_and_grad`` on this backend's arrays (under
        ``jax.jit`` on JAX), in full-precision float32 products.

        Args:
            batches: pairs of views ``(z_i, z_j)`` as NumPy arrays.
            config: the loss's configuration.
            dtype: the dtype of the inputs on this backend.

        Returns:
            One result per batch.
        """
        step = self.jit_core_step() if self.module == "jax" else nt_xent_value_and_grad
        state = init_state(config, like=self.asarray(batches[0][0], dtype))
        results = []
        with full_precision_matmuls(self.module):
            for z_i, z_j in batches:
                loss, grads, state, stats = step(
                    self.asarray(z_i, dtype), self.asarray(z_j, dtype), state, config=config
                )
                results.append(self.step_result(loss, grads, state, stats))
        return results

    def jit_core_step(self) -> Callable[..., Any]:
        """The core's two-view value and gradient, compiled where the backend compiles.

        Returns:
            ``nt_xent_value_and_grad`` under ``jax.jit`` (``config`` static) on JAX, compiled
            once per process; the function itself elsewhere.
        """
        if self.module != "jax":
            return nt_xent_value_and_grad
        return _jax_core_step()

    def device_index(self) -> int:
        """The device's number (``cuda:1`` is 1); 0 for a device without one."""
        return int(self.device.rpartition(":")[2]) if self.device and ":" in self.device else 0

    def jax_device(self) -> Any:
        """This backend's device as a JAX device (JAX backends only)."""
        import jax

        platform = (self.device or "cpu").partition(":")[0]
        return jax.devices(platform)[self.device_index()]


_JAX_CORE_STEP: list[Callable[..., Any]] = []


def _jax_core_step() -> Callable[..., Any]:
    # One compiled function for the process, so that JAX compiles once per config and shape.
    if not _JAX_CORE_STEP:
        import jax

        _JAX_CORE_STEP.append(jax.jit(nt_xent_value_and_grad, static_argnames=("config",)))
    return _JAX_CORE_STEP[0]


@contextlib.contextmanager
def full_precision_matmuls(module: str) -> Iterator[None]:
    """float32 matrix products in full float32 precision (no TF32) while the block runs.

    Args:
        module: the array library, ``"torch"``, ``"jax"``, ``"cupy"``, ... (others need
            nothing).

    Yields:
        Nothing; every setting is put back on leaving the block.

    Raises:
        RuntimeError: ``module`` is ``"cupy"`` and ``CUPY_TF32`` is set.
    """
    if module == "torch":
        import torch

        with _torch_full_precision(torch):
            yield
    elif module == "jax":
        import jax

        with jax.default_matmul_precision("highest"):
            yield
    elif module == "cupy":
        if os.environ.get("CUPY_TF32", "0") != "0":
            raise RuntimeError("CUPY_TF32 is set: unset it to compare CuPy in full float32")
        yield
    else:
        yield


@contextlib.contextmanager
def _torch_full_precision(torch: Any) -> Iterator[None]:
    """PyTorch's float32 products in full precision, every setting put back afterwards.

    The global setting (``set_float32_matmul_precision``, which the core reads) is set to
    ``"highest"``; it also changes PyTorch's per-backend settings (``fp32_precision`` of
    ``torch.backends.cuda.matmul`` and of mkldnn's, PyTorch >= 2.9), which are put back
    exactly as they were afterwards, ``"none"`` included.
    """
    settings: list[Any] = [
        group
        for group in (
            getattr(torch.backends.cuda, "matmul", None),
            getattr(getattr(torch.backends, "mkldnn", None), "matmul", None),
        )
        if hasattr(group, "fp32_precision")
    ]
    saved = [group.fp32_precision for group in settings]
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
        for group, value in zip(settings, saved, strict=True):
            if group.fp32_precision != value:
                group.fp32_precision = value


def enable_jax_float64() -> None:
    """Let JAX make float64 arrays (``jax_enable_x64``); call it before any JAX array exists."""
    import jax

    jax.config.update("jax_enable_x64", True)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _torch_cuda_devices() -> list[str] | str:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [f"cuda:{i}" for i in range(count)] or "no CUDA device for torch"


def _jax_devices(platform: str) -> list[str] | str:
    import jax

    try:
        devices = jax.devices(platform)
    except RuntimeError:
        return f"no JAX {platform} device"
    return [f"{platform}:{i}" for i in range(len(devices))]


def _cupy_devices() -> list[str] | str:
    import cupy

    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        return f"no CUDA device for CuPy ({error})"
    return [f"cuda:{i}" for i in range(count)] or "no CUDA device for CuPy"


@dataclass(frozen=True)
class _Spec:
    """A backend before probing: its id, library and dtypes, and how to find its devices."""

    id: str
    module: str
    device: str | None
    dtypes: tuple[str, ...]
    devices: Callable[[], list[str] | str] | None = None  # the devices, or why there are none

    def probe(self) -> list[Backend]:
        """One backend per device of this kind (a second GPU gets the id ``torch-cuda:1``)."""
        float64 = "float64" in self.dtypes
        if not _installed(self.module):
            reason = f"{self.module} is not installed"
            return [Backend(self.id, self.module, self.device, float64, reason, self.dtypes)]
        found: Sequence[str | None] | str = [self.device]
        try:
            if self.devices is not None:
                found = self.devices()
        except Exception as error:  # e.g. a CUDA library that fails to load: skip, with why
            found = f"{self.module} cannot start: {type(error).__name__}: {error}"
        if isinstance(found, str):
            return [Backend(self.id, self.module, self.device, float64, found, self.dtypes)]
        return [
            Backend(
                self.id if i == 0 else f"{self.id}:{i}",
                self.module,
                dev,
                float64,
                None,
                self.dtypes,
            )
            for i, dev in enumerate(found)
        ]


_SPECS: tuple[_Spec, ...] = (
    _Spec("numpy", "numpy", "cpu", ("float64", "float32", "float16")),
    _Spec("strict", "array_api_strict", "CPU_DEVICE", ("float64", "float32")),
    # array_api_strict's no_x64 device is left out: its argsort is broken in 2.6.
    _Spec("strict-no_float64", "array_api_strict", "no_float64", ("float32",)),
    _Spec("torch-cpu", "torch", "cpu", DTYPES),
    _Spec("torch-cuda", "torch", "cuda:0", DTYPES, _torch_cuda_devices),
    _Spec("jax-cpu", "jax", "cpu", DTYPES),
    _Spec("jax-gpu", "jax", "gpu:0", DTYPES, lambda: _jax_devices("gpu")),
    _Spec("cupy", "cupy", "cuda:0", ("float64", "float32", "float16"), _cupy_devices),
)
# Every backend kind, in the matrix's order.
BACKEND_IDS = tuple(spec.id for spec in _SPECS)


def all_backends(ids: Sequence[str] | None = None) -> list[Backend]:
    """Every backend kind (or those asked for), one per device, each runnable or with a reason.

    Only the libraries of the kinds asked for are imported (to find their devices).

    Args:
        ids: kinds of :data:`BACKEND_IDS` to probe; ``None`` probes every kind.

    Returns:
        The backends, in the order of :data:`BACKEND_IDS`; those that cannot run here carry
        ``skip_reason``.
    """
    specs = _SPECS if ids is None else [spec for spec in _SPECS if spec.id in ids]
    return [backend for spec in specs for backend in spec.probe()]


# -- comparison with the NumPy float64 core ----------------------------------------------------

# The compared quantities, in the order of ``weince crosscheck``'s table and JSON.
QUANTITIES = ("loss", "grad", "lambda", "d_aic", "rho", "rho0", "beta_t")
# The quantities that exist only where the gate is on (NaN by design with gate "off").
TAIL_QUANTITIES = ("d_aic", "rho", "rho0")
# The second view of the generated inputs: z_j = z_i + VIEW_NOISE * noise, so that positives
# are closer than negatives, the gate opens for some anchors and beta_t moves.
VIEW_NOISE = 0.5


def generated_batches(
    n: int, d: int, steps: int, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Seeded two-view inputs: ``z_i`` standard normal, ``z_j = z_i + 0.5 * noise``.

    Args:
        n: pairs per batch.
        d: the embedding dimension.
        steps: how many batches.
        seed: the seed (with ``n`` and ``d``: each shape has its own stream).

    Returns:
        ``steps`` pairs ``(z_i, z_j)`` of float64 arrays of shape ``(n, d)``.
    """
    rng = np.random.default_rng([seed, n, d])
    batches = []
    for _ in range(steps):
        z_i = rng.standard_normal((n, d))
        batches.append((z_i, z_i + VIEW_NOISE * rng.standard_normal((n, d))))
    return tuple(batches)


@dataclass(frozen=True)
class Difference:
    """How far one quantity is from the reference, and its bound.

    ``abs``: max |x - x_ref|; ``rel``: that over max |x_ref|; ``error``: what is checked
    (``rel``, but absolute for ``lambda`` and relative to ``max(max|x_ref|, 1)`` for ``d_aic``).
    ``reference_nonfinite``: how many reference entries are NaN or infinite (counted when the
    quantity is checked strictly): such a reference cannot vouch for anything, so the quantity
    does not pass. ``computed``: False for a statistic the preset does not compute (NaN by
    design), which is left out of the verdict.
    """

    abs: float
    rel: float
    error: float
    tolerance: float
    reference_nonfinite: int = 0
    computed: bool = True

    @property
    def passed(self) -> bool:
        """Whether the quantity is within its bound (always, when it is not computed)."""
        if not self.computed:
            return True
        return self.reference_nonfinite == 0 and self.error <= self.tolerance


def _stacked(results: Sequence[StepResult], quantity: str) -> np.ndarray:
    if quantity == "loss":
        return np.stack([r.loss for r in results])
    if quantity == "grad":
        return np.stack([np.concatenate([r.grad_i, r.grad_j]) for r in results])
    if quantity == "beta_t":  # the value used in each step, then the value carried out of it
        return np.stack([np.stack([r.stats["beta_t"], r.state]) for r in results])
    return np.stack([r.stats[quantity] for r in results])


def difference(
    actual: np.ndarray,
    expected: np.ndarray,
    quantity: str,
    tol: Tolerance,
    *,
    strict: bool = False,
) -> Difference:
    """How far ``actual`` is from ``expected``.

    Args:
        actual: the values under test.
        expected: the reference values.
        quantity: the quantity's name (``lambda`` is compared absolutely, ``d_aic`` relative
            to ``max(max|expected|, 1)``, the others normwise).
        tol: the bounds.
        strict: non-finite reference entries are counted and make the quantity fail, and the
            errors are measured over the others (the crosscheck's verdict). Otherwise entries
            NaN in both are left out (statistics a preset does not compute) and any other
            non-finite gap is ``inf``.

    Returns:
        The difference; ``inf`` if the shapes differ or ``actual`` is not finite where
        ``expected`` is.
    """
    if actual.shape != expected.shape:
        return Difference(math.inf, math.inf, math.inf, tol.of(quantity))
    if strict:
        finite = np.isfinite(expected)
        skipped = ~finite
    else:
        finite = np.ones(expected.shape, bool)
        skipped = np.isnan(actual) & np.isnan(expected)
    with np.errstate(invalid="ignore", over="ignore"):
        gap = np.abs(actual - expected)
    gap = np.where(skipped, 0.0, np.where(np.isfinite(gap), gap, np.inf))
    largest_gap = float(np.max(gap)) if gap.size else 0.0
    reference = np.where(skipped, 0.0, expected)
    scale = float(np.max(np.abs(reference))) if gap.size else 0.0
    rel = largest_gap / scale if scale > 0 else (0.0 if largest_gap == 0 else math.inf)
    if quantity == "lambda":  # a weight in [0, 1]: absolute
        error = largest_gap
    elif quantity == "d_aic":  # a difference of AICs, often near 0: relative to max(scale, 1)
        error = largest_gap / max(scale, 1.0)
    else:
        error = rel
    nonfinite = int(np.sum(~finite)) if strict else 0
    return Difference(largest_gap, rel, error, tol.of(quantity, scale), nonfinite)


def computed_quantities(config: WEINCEConfig) -> tuple[str, ...]:
    """The quantities of :data:`QUANTITIES` that a configuration computes.

    Args:
        config: the loss's configuration.

    Returns:
        Every quantity, less the tail statistics when the gate is off.
    """
    if config.uses_tail_statistics:
        return QUANTITIES
    return tuple(q for q in QUANTITIES if q not in TAIL_QUANTITIES)


def compare(
    results: Sequence[StepResult],
    reference: Sequence[StepResult],
    tol: Tolerance,
    computed: Sequence[str] | None = None,
) -> dict[str, Difference]:
    """Every quantity of :data:`QUANTITIES`, over all steps, against the reference.

    Args:
        results: a backend's results, one per step.
        reference: the reference's results (:func:`reference_results`).
        tol: the bounds.
        computed: the quantities the preset computes (:func:`computed_quantities`), checked
            strictly (see :func:`difference`); the others are marked not computed. ``None``:
            every quantity, with entries NaN in both left out.

    Returns:
        The difference of each quantity.
    """
    out = {}
    for q in QUANTITIES:
        diff = difference(
            _stacked(results, q), _stacked(reference, q), q, tol, strict=computed is not None
        )
        if computed is not None and q not in computed:
            diff = Difference(diff.abs, diff.rel, diff.error, diff.tolerance, computed=False)
        out[q] = diff
    return out


def reference_results(batches: Batches, config: WEINCEConfig) -> list[StepResult]:
    """The core on NumPy float64: the results every backend is compared with.

    Args:
        batches: pairs of views ``(z_i, z_j)`` (float64), one per step; the state is carried.
        config: the loss's configuration.

    Returns:
        One result per step.
    """
    state = init_state(config, like=batches[0][0])
    results = []
    for z_i, z_j in batches:
        loss, (g_i, g_j), state, stats = nt_xent_value_and_grad(z_i, z_j, state, config)
        results.append(
            StepResult(
                loss=np.asarray(loss, np.float64),
                grad_i=g_i,
                grad_j=g_j,
                state=np.asarray(state, np.float64),
                stats={k: np.asarray(v, np.float64) for k, v in stats.items()},
                loss_dtype="float64",
                grad_dtype="float64",
            )
        )
    return results


class ReferenceCache:
    """NumPy float64 results per preset and inputs, and the inputs' smallest shortfall.

    Each is computed once (the inputs rounded to float32 and to bfloat16 differ, so each has
    its own).
    """

    def __init__(self) -> None:
        self._results: dict[tuple[str, str], list[StepResult]] = {}
        self._deltas: dict[str, float] = {}

    def get(self, batches: Batches, preset: str) -> list[StepResult]:
        """The reference results of some inputs under a preset.

        Args:
            batches: pairs of views, one per step.
            preset: a preset of ``WEINCEConfig.preset``.

        Returns:
            :func:`reference_results` of the inputs, computed once.
        """
        key = (preset, _digest(batches))
        if key not in self._results:
            self._results[key] = reference_results(batches, WEINCEConfig.preset(preset))
        return self._results[key]

    def delta(self, batches: Batches) -> float:
        """The inputs' smallest shortfall (:func:`smallest_shortfall`), computed once.

        Args:
            batches: pairs of views.

        Returns:
            ``delta``.
        """
        key = _digest(batches)
        if key not in self._deltas:
            self._deltas[key] = smallest_shortfall(batches)
        return self._deltas[key]


def _digest(batches: Batches) -> str:
    digest = hashlib.sha1()
    for z_i, z_j in batches:
        digest.update(repr((z_i.shape, z_i.dtype.str)).encode())
        digest.update(np.ascontiguousarray(z_i).tobytes())
        digest.update(np.ascontiguousarray(z_j).tobytes())
    return digest.hexdigest()
