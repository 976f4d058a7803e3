"""Every array backend and device of this machine, and how to run the WEINCE loss on each.

One registry for ``weince crosscheck`` and for the test suite's backend matrix. A backend is an
array library on one device: it builds arrays from NumPy data, runs the loss and its gradient
for a few steps with the state carried, and reads the results back as float64 NumPy arrays.
Nothing here imports a framework until that framework's backend is asked for: listing the
backends only looks the libraries up (``importlib.util.find_spec``), and a probe for a device
imports the one library it probes.

``run_steps`` uses the framework's adapter where there is one (``weince_torch``: autograd through
``weince_loss``; ``weince_jax``: ``jax.value_and_grad`` of ``weince_loss`` under ``jax.jit``;
``weince_cupy``: ``value_and_grad``) and the core (``weince_core.nt_xent_value_and_grad``) on the
framework's arrays otherwise; the path taken is returned with the results.

Matrix multiplications run in full float32 precision: TF32, which keeps 10 bits of mantissa and
would cost three decimal digits in ``S = U U^T``, is switched off for the duration of a run
(PyTorch: ``torch.set_float32_matmul_precision("highest")``, which also governs
``torch.backends.cuda.matmul``; JAX: ``jax.default_matmul_precision("highest")``, since XLA uses
TF32 for float32 dots on recent NVIDIA GPUs by default; CuPy uses TF32 only when ``CUPY_TF32=1``
is set, which a run refuses).

Tolerances against the NumPy float64 reference
----------------------------------------------
These bounds depend on the inputs (they widen near the cap) and serve the test suite's
conformance matrix, which knows its inputs. ``weince crosscheck`` does not use them for its
verdict: it holds every row to a fixed tolerance per dtype (``weince.crosscheck.VERDICT``).

The reference is the core on NumPy float64 arrays holding the *same* inputs, that is the inputs
after rounding to the dtype under test: what is measured is the computation, not the rounding of
the inputs (which for bfloat16 alone moves the loss by about 1e-3). Errors are normwise,
``max|x - x_ref| / max|x_ref|`` over a whole array and every step, except ``lambda``, a weight in
[0, 1], whose error is absolute, and ``dAIC``, taken relative to ``max(max|dAIC_ref|, 1)`` (it
is often near 0). ``value`` bounds the loss, ``beta_t`` (used and carried), ``rho`` and ``rho0``;
``lam`` bounds ``lambda``; ``grad`` both gradients; ``d_aic`` the ``dAIC``.

A bound is ``max(floor, C * u / delta)``. ``u`` is the unit roundoff of the dtype the loss is
computed in (2^-53 for float64; 2^-24 otherwise, since half precision computes in float32,
SPEC.md section 7) and ``delta`` the inputs' smallest shortfall ``1 - s`` over all pairs of
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
                                                   SPEC.md promises 1e-10 against the
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
import functools
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import astuple, dataclass
from typing import Any, NamedTuple

import numpy as np

import weince_core as wc
from weince_core import WEINCEConfig

DTYPES = ("float64", "float32", "bfloat16", "float16")
PATHS = ("adapter", "core")


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
        """The bound of ``quantity`` (``loss``, ``grad``, ...) for values of size ``scale``."""
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


def tolerance(dtype: str, delta: float) -> Tolerance:
    """The bounds for ``dtype`` on inputs whose smallest shortfall ``1 - s`` is ``delta``."""
    compute = "float64" if dtype == "float64" else "float32"
    unit = float(np.finfo(compute).eps) / 2
    floor, condition = astuple(TOLERANCES[dtype]), astuple(CONDITION[compute])
    return Tolerance(*(max(f, c * unit / delta) for f, c in zip(floor, condition, strict=True)))


def smallest_shortfall(
    batches: Sequence[tuple[np.ndarray, np.ndarray]], eps: float = 1e-6
) -> float:
    """``delta = max(min over rows a and columns b != a of 1 - S_ab, eps)`` over every batch."""
    delta = 1.0
    for z_i, z_j in batches:
        z = np.concatenate([z_i, z_j]).astype(np.float64)
        u = z / np.maximum(np.linalg.norm(z, axis=1), 1e-8)[:, None]
        s = u @ u.T
        np.fill_diagonal(s, -np.inf)
        delta = min(delta, 1.0 - float(np.max(s)))
    return max(delta, eps)


class StepResult(NamedTuple):
    """One step's outputs as float64 NumPy arrays, and the dtypes they came in."""

    loss: np.ndarray
    grad_i: np.ndarray
    grad_j: np.ndarray
    state: np.ndarray  # beta_t carried to the next step
    stats: dict[str, np.ndarray]
    loss_dtype: str
    grad_dtype: str


Batches = Sequence[tuple[np.ndarray, np.ndarray]]


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
        return importlib.import_module(self.module)

    @property
    def adapter(self) -> str | None:
        """The adapter package of this backend's framework, if it has one."""
        return {"torch": "weince_torch", "jax": "weince_jax", "cupy": "weince_cupy"}.get(
            self.module
        )

    def supports(self, dtype: str) -> bool:
        return dtype in self.dtypes

    def describe(self) -> str:
        """The library's version and the device's name, e.g. ``torch 2.4.0, NVIDIA H100``."""
        lib = self.lib()
        text = f"{self.module} {getattr(lib, '__version__', '?')}"
        index = self._device_index()
        if self.module == "torch" and self.device and self.device.startswith("cuda"):
            return f"{text}, {lib.cuda.get_device_name(index)}"
        if self.module == "jax":
            return f"{text}, {self._jax_device().device_kind}"
        if self.module == "cupy":
            name = lib.cuda.runtime.getDeviceProperties(index)["name"]
            return f"{text}, {name.decode() if isinstance(name, bytes) else name}"
        return f"{text}, {self.device}"

    def asarray(self, a: np.ndarray, dtype: str = "float64") -> Any:
        """``a`` as an array of this backend, on its device, in ``dtype``."""
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
                    "float64 JAX arrays need jax_enable_x64 (weince.backends.enable_jax_float64())"
                )
            return jax.device_put(
                jnp.asarray(a.astype(np.float64), dtype=dtype), self._jax_device()
            )
        if self.module == "cupy":
            cupy = self.lib()
            with cupy.cuda.Device(self._device_index()):
                return cupy.asarray(a.astype(dtype))
        raise AssertionError(self.module)

    def jit(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` compiled where the backend compiles (JAX runs op by op far slower than jitted)."""
        if self.module == "jax":
            import jax

            return jax.jit(fn)
        return fn

    def to_numpy(self, x: Any) -> np.ndarray:
        """``x`` as a float64 NumPy array (booleans and integers converted too)."""
        if self.module == "torch":
            return x.detach().to("cpu", dtype=self.lib().float64).numpy()
        if self.module == "cupy":
            return x.get().astype(np.float64)
        if self.module == "jax":
            return np.asarray(x.astype("float32") if x.dtype.itemsize < 4 else x, dtype=np.float64)
        if self.module == "numpy":
            return np.asarray(x, dtype=np.float64)
        return np.from_dlpack(x).astype(np.float64)

    def run_steps(
        self, batches: Batches, config: WEINCEConfig, dtype: str, *, path: str = "adapter"
    ) -> tuple[str, list[StepResult]]:
        """Loss, gradients, statistics and state of each batch in turn, the state carried.

        ``path="adapter"`` uses the framework's adapter when it is importable and the core
        otherwise; ``path="core"`` always uses the core. Returns the path taken and the results.
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
            return "core", self._run_core(batches, config, dtype)

    # -- the paths ---------------------------------------------------------------------------

    def _results(self, loss: Any, grads: tuple[Any, Any], state: Any, stats: Any) -> StepResult:
        return StepResult(
            loss=self.to_numpy(loss),
            grad_i=self.to_numpy(grads[0]),
            grad_j=self.to_numpy(grads[1]),
            state=self.to_numpy(state),
            stats={key: self.to_numpy(value) for key, value in stats.items()},
            loss_dtype=_dtype_name(loss),
            grad_dtype=_dtype_name(grads[0]),
        )

    def _run_core(self, batches: Batches, config: WEINCEConfig, dtype: str) -> list[StepResult]:
        step = _jax_core_step() if self.module == "jax" else wc.nt_xent_value_and_grad
        state = wc.init_state(config, like=self.asarray(batches[0][0], dtype))
        results = []
        for z_i, z_j in batches:
            loss, grads, state, stats = step(
                self.asarray(z_i, dtype), self.asarray(z_j, dtype), state, config=config
            )
            results.append(self._results(loss, grads, state, stats))
        return results

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
            results.append(self._results(loss, (t_i.grad, t_j.grad), state, stats))
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
            results.append(self._results(loss, grads, state.beta_t, stats))
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
            results.append(self._results(loss, grads, state, stats))
        return results

    def _device_index(self) -> int:
        return int(self.device.rpartition(":")[2]) if self.device and ":" in self.device else 0

    def _jax_device(self) -> Any:
        import jax

        platform = (self.device or "cpu").partition(":")[0]
        return jax.devices(platform)[self._device_index()]


def _dtype_name(x: Any) -> str:
    """``float32``, whether NumPy, JAX or CuPy say so or ``torch.float32``, ``xp.float32``."""
    return str(x.dtype).rpartition(".")[2]


def _import_adapter(name: str) -> Any | None:
    """The adapter module, or ``None`` when it is not installed or fails to import."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@functools.cache
def _jax_core_step() -> Callable[..., Any]:
    """The core's value and gradient under ``jax.jit`` (compiled once per config and shape)."""
    import jax

    return jax.jit(wc.nt_xent_value_and_grad, static_argnames=("config",))


@functools.cache
def _jax_adapter_step() -> Callable[..., Any]:
    """``jax.value_and_grad`` of ``weince_jax.weince_loss`` under ``jax.jit``."""
    import jax

    import weince_jax

    return jax.jit(jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True))


@contextlib.contextmanager
def full_precision_matmuls(module: str) -> Iterator[None]:
    """float32 matrix products in full float32 precision (no TF32) while the block runs."""
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
    settings = [
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
    """Let JAX make float64 arrays (``jax_enable_x64``), before any JAX array is made."""
    import jax

    jax.config.update("jax_enable_x64", True)


# -- the registry ----------------------------------------------------------------------------


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
        try:
            found = self.devices() if self.devices is not None else [self.device]
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


SPECS: tuple[_Spec, ...] = (
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
BACKEND_IDS = tuple(spec.id for spec in SPECS)


def all_backends(ids: Sequence[str] | None = None) -> list[Backend]:
    """Every backend kind (or those of ``ids``), one per device, each runnable or with a reason.

    Only the libraries of the kinds asked for are imported (to find their devices).
    """
    specs = SPECS if ids is None else [spec for spec in SPECS if spec.id in ids]
    return [backend for spec in specs for backend in spec.probe()]
