"""The backend matrix: every array library and device of this machine, and how to use it."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from ._tolerances import DTYPES

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

    def device_index(self) -> int:
        """The device's number (``cuda:1`` is 1); 0 for a device without one."""
        return int(self.device.rpartition(":")[2]) if self.device and ":" in self.device else 0

    def jax_device(self) -> Any:
        """This backend's device as a JAX device (JAX backends only)."""
        import jax

        platform = (self.device or "cpu").partition(":")[0]
        return jax.devices(platform)[self.device_index()]


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
