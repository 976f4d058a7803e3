"""Every installed array backend and device, for tests that run one property everywhere.

A backend is a way to build arrays from NumPy data on one device and read them back. Backends
whose library is missing, or whose device is absent, are listed with the reason they are skipped.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Backend:
    id: str
    module: str
    device: str | None = None
    float64: bool = True
    skip_reason: str | None = None

    def lib(self) -> Any:
        return importlib.import_module(self.module)

    def asarray(self, a: np.ndarray, dtype: str = "float64") -> Any:
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

            device = jax.devices(self.device)[0]
            return jax.device_put(jnp.asarray(a.astype(np.float64), dtype=dtype), device)
        if self.module == "cupy":
            return self.lib().asarray(a).astype(dtype)
        raise AssertionError(self.module)

    def jit(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` compiled where the backend compiles (JAX runs op by op far slower than jitted)."""
        if self.module == "jax":
            import jax

            return jax.jit(fn)
        return fn

    def to_numpy(self, x: Any) -> np.ndarray:
        if self.module == "torch":
            return x.detach().to("cpu", dtype=self.lib().float64).numpy()
        if self.module == "cupy":
            return x.get().astype(np.float64)
        if self.module == "jax":
            return np.asarray(x.astype("float32") if x.dtype.itemsize < 4 else x, dtype=np.float64)
        if self.module == "numpy":
            return np.asarray(x, dtype=np.float64)
        return np.from_dlpack(x).astype(np.float64)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _torch_cuda() -> str | None:
    import torch

    return None if torch.cuda.is_available() else "no CUDA device for torch"


def _jax_platform(platform: str) -> str | None:
    import jax

    try:
        jax.devices(platform)
    except RuntimeError:
        return f"no JAX {platform} device"
    return None


def _cupy_device() -> str | None:
    import cupy

    try:
        return None if cupy.cuda.runtime.getDeviceCount() > 0 else "no CUDA device for CuPy"
    except cupy.cuda.runtime.CUDARuntimeError as error:
        return f"no CUDA device for CuPy ({error})"


def _backend(
    id: str,
    module: str,
    device: str | None = None,
    *,
    float64: bool = True,
    probe: Callable[[], str | None] | None = None,
) -> Backend:
    if not _installed(module):
        return Backend(id, module, device, float64, f"{module} is not installed")
    reason = probe() if probe is not None else None
    return Backend(id, module, device, float64, reason)


def all_backends() -> list[Backend]:
    return [
        _backend("numpy", "numpy"),
        _backend("strict", "array_api_strict", "CPU_DEVICE"),
        _backend("strict-no_float64", "array_api_strict", "no_float64", float64=False),
        _backend("torch-cpu", "torch", "cpu"),
        _backend("torch-cuda", "torch", "cuda", probe=_torch_cuda if _installed("torch") else None),
        _backend("jax-cpu", "jax", "cpu", probe=lambda: _jax_platform("cpu")),
        _backend("jax-gpu", "jax", "gpu", probe=lambda: _jax_platform("gpu")),
        _backend("cupy", "cupy", "cuda", probe=_cupy_device if _installed("cupy") else None),
    ]
