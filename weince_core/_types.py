"""Type aliases shared by the core's modules.

The core is written against the Array API standard, which has no static types for its arrays
or namespaces: these names say what a value is for the reader (and for the API reference),
while the type checker treats them as ``Any``.
"""

from __future__ import annotations

from typing import Any

Array = Any  # an array of any Array API library (NumPy, PyTorch, JAX, CuPy, array_api_strict)
Namespace = Any  # its namespace, ``xp``: ``array_api_compat.array_namespace(x)``
DType = Any  # a dtype of that namespace
Device = Any  # a device of that namespace
Stats = dict[str, Array]  # the statistics a loss returns, by the names in ``STAT_KEYS``
