"""Triton kernels for the loss's hot spots on NVIDIA GPUs (see docs/performance.md).

``select``: the per-row top-k selection with the tie rule; ``rowpass``: the fused row pass
(blended logits, logsumexp, softmax and the dense gradient). ``library`` registers them as
``torch.library`` custom ops and hooks them into the core, which then uses them for CUDA
tensors. Where Triton is not installed, or ``WEINCE_KERNELS=0``, nothing is registered and
the core's framework path runs. ``WEINCE_KERNELS=cpu`` (with ``TRITON_INTERPRET=1``) serves
CPU tensors too, through Triton's interpreter: how the tests run the wiring without a GPU.
"""

import importlib.util
import os

import torch


def enable_from_environment() -> bool:
    """Register the kernels as ``WEINCE_KERNELS`` asks; return whether they are registered."""
    setting = os.environ.get("WEINCE_KERNELS", "1").strip().lower()
    if setting in ("0", "off", "false", "no") or importlib.util.find_spec("triton") is None:
        return False
    if setting == "cpu":
        devices: tuple[str, ...] = ("cuda", "cpu")
    elif torch.cuda.is_available() and torch.version.hip is None:
        devices = ("cuda",)
    else:
        return False
    try:
        from .library import register
    except ImportError:  # a Triton that does not load: the framework path
        return False
    register(devices)
    return True
