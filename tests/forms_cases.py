"""Calling the core's pairing forms (docs/math.md section 9) by name, for the tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

import weince_core as wc

# The differentiable inputs of each form, in the order of its gradients.
GRADIENTS = {
    "two_view": ("z_i", "z_j"),
    "two_tower": ("x", "y", "scale"),
    "explicit_negatives": ("q", "k", "n"),
    "multi_positive": ("z",),
}
# The reference files name the two views zi and zj.
GOLDEN_NAMES = {"z_i": "zi", "z_j": "zj"}


def form_function(form: str, suffix: str = "_value_and_grad") -> Callable[..., Any]:
    """``form``'s core function: ``""`` (forward only), ``"_forward"``, ``"_value_and_grad"``."""
    return getattr(wc, form + suffix)


def call_form(
    form: str,
    inputs: dict[str, Any],
    state: Any,
    config: wc.WEINCEConfig,
    *,
    suffix: str = "_value_and_grad",
    **options: Any,
) -> Any:
    """``form``'s function on ``inputs`` (by argument name; ``scale`` a keyword)."""
    inputs = dict(inputs)
    keywords = {"scale": inputs.pop("scale")} if "scale" in inputs else {}
    return form_function(form, suffix)(*inputs.values(), state, config, **keywords, **options)


def golden_inputs(golden: Any, t: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Step ``t``'s inputs of a golden_forms file under the core's argument names, and the
    form's options."""
    step = golden.step(t)
    names = golden.meta["inputs"]
    inputs = {
        next((k for k, v in GOLDEN_NAMES.items() if v == name), name): step[name] for name in names
    }
    options = {}
    if "in_batch_negatives" in golden.meta["options"]:
        options["in_batch_negatives"] = bool(golden.meta["options"]["in_batch_negatives"])
    return inputs, options
