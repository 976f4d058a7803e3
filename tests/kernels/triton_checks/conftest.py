"""The Triton kernels' fixtures: natively on a CUDA device, or in Triton's interpreter on the CPU.

The interpreter must be on (``TRITON_INTERPRET=1``) before Triton is first imported, so on a
machine without a GPU these tests run in a subprocess started by ``tests/kernels/test_kernels.py``
with the variable set; ``tests/kernels/conftest.py`` leaves this folder out of any other run.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="session")
def kernels() -> SimpleNamespace:
    """The kernel modules and the device they run on (``"cuda"``, or ``"cpu"`` interpreted)."""
    pytest.importorskip("triton", reason="Triton is not installed (the `kernels` extra)")
    torch = pytest.importorskip("torch")
    from weince_torch._triton import library, rowpass, select

    device = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device and TRITON_INTERPRET is not set")
    return SimpleNamespace(select=select, rowpass=rowpass, library=library, device=device)


@pytest.fixture
def kernel_hooks(kernels):
    """The core's kernel hooks registered for the fixture's device, restored afterwards."""
    from weince_core import ops

    saved = {name: list(hooks) for name, hooks in ops._KERNELS.items()}
    ops._KERNELS.clear()  # only this test's hooks (a GPU session may have registered its own)
    kernels.library.register((kernels.device,))
    yield kernels
    ops._KERNELS.clear()
    ops._KERNELS.update(saved)
