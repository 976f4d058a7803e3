"""The reference vectors of the pairing forms, ``../shared/golden_forms`` (SPEC.md section 9).

Each file is a form, a preset, options and per-step float64 inputs and outputs; ``load`` turns
one into a ``weince.forms_check.FormCase`` (the inputs, under the argument names of the core's
forms) and the expected results of each step.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from weince.forms_check import FormCase, FormResult, differentiable
from weince_core import WEINCEConfig

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_FORMS_DIR = Path(
    os.environ.get("WEINCE_GOLDEN_FORMS", ROOT.parent / "shared" / "golden_forms")
)
# The two-view files name the views zi and zj; the core's arguments are z_i and z_j.
RENAMED = {"zi": "z_i", "zj": "z_j"}


@dataclass(frozen=True)
class GoldenForm:
    name: str
    config: WEINCEConfig
    case: FormCase
    expected: list[FormResult]


def names() -> list[str]:
    found = sorted(p.stem for p in GOLDEN_FORMS_DIR.glob("*.npz"))
    if not found:
        raise FileNotFoundError(
            f"no reference vectors in {GOLDEN_FORMS_DIR}: the tests need ../shared/golden_forms "
            "beside the checkout, or WEINCE_GOLDEN_FORMS set to their folder"
        )
    return found


def load(name: str) -> GoldenForm:
    meta = json.loads((GOLDEN_FORMS_DIR / f"{name}.json").read_text())
    data = np.load(GOLDEN_FORMS_DIR / f"{name}.npz")
    form = meta["form"]
    options = {}
    if "in_batch_negatives" in meta["options"]:
        options["in_batch_negatives"] = bool(meta["options"]["in_batch_negatives"])
    batches, expected = [], []
    for t in range(meta["steps"]):
        step = {k[len(f"s{t}_") :]: data[k] for k in data.files if k.startswith(f"s{t}_")}
        batches.append({RENAMED.get(k, k): step[k] for k in meta["inputs"]})
        grads = {RENAMED.get(k, k): step[f"grad_{k}"] for k in meta["grads"]}
        assert tuple(grads) == differentiable(form), (name, tuple(grads))
        stats = {k: step[k] for k in ("lambda", "beta_t", "rho", "d_aic", "rho0")}
        expected.append(FormResult(step["loss"], grads, step["beta_t"], stats))
    config = WEINCEConfig.preset(meta["preset"], beta_init=meta["beta_t_initial"])
    case = FormCase(form, name, tuple(options.items()), tuple(batches))
    return GoldenForm(name, config, case, expected)
