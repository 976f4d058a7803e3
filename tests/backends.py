"""Every installed array backend and device, for tests that run one property everywhere.

The registry itself is ``weince.cli.backends`` (shared with ``weince crosscheck``): a backend builds
arrays from NumPy data on one device, runs the loss there and reads results back. Backends whose
library is missing, or whose device is absent, carry the reason they are skipped.
"""

from __future__ import annotations

from weince.cli.backends import (
    BACKEND_IDS,
    TOLERANCES,
    Backend,
    StepResult,
    Tolerance,
    all_backends,
)

__all__ = ["BACKEND_IDS", "TOLERANCES", "Backend", "StepResult", "Tolerance", "all_backends"]
