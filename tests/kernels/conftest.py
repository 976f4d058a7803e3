"""``triton_checks`` runs where its kernels can: on a CUDA device, or in a process started with
``TRITON_INTERPRET=1`` (``test_kernels.py`` starts one); any other run leaves it out."""

from __future__ import annotations

import os


def _kernels_run_here() -> bool:
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


collect_ignore = [] if _kernels_run_here() else ["triton_checks"]
