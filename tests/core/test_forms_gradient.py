"""The pairing forms' analytic gradients (docs/math.md sections 6 and 9), ``dL/dscale`` included,
against finite differences of the loss with its statistics frozen, in float64."""

from __future__ import annotations

import numpy as np
import pytest
from forms_cases import GRADIENTS, call_form
from reference import form_rows, frozen_rows_loss, numeric_gradient

import weince_core as wc


def _config(preset: str) -> wc.WEINCEConfig:
    # Small tails so that the hard-negative selection matters at this size.
    return wc.WEINCEConfig.preset(preset, min_tail=8, top_m=5, beta_min_tail=16)


def _cases(rng: np.random.Generator) -> list[tuple[str, dict, dict]]:
    return [
        ("two_tower", {"x": rng.normal(size=(7, 3)), "y": rng.normal(size=(7, 3)),
                       "scale": np.asarray(3.0)}, {}),
        ("explicit_negatives", {"q": rng.normal(size=(5, 3)), "k": rng.normal(size=(5, 3)),
                                "n": rng.normal(size=(9, 3))}, {}),
        ("explicit_negatives", {"q": rng.normal(size=(5, 3)), "k": rng.normal(size=(5, 3)),
                                "n": rng.normal(size=(5, 4, 3))}, {"in_batch_negatives": True}),
        ("multi_positive", {"z": rng.normal(size=(12, 3)),
                            "labels": np.array([3, 3, 3, 7, 7, 1, 9, 9, 9, 9, 4, 4])}, {}),
    ]  # fmt: skip


@pytest.mark.parametrize("preset", ["paper", "blend", "infonce"])
@pytest.mark.parametrize("case", range(4), ids=["two_tower", "queue", "paired", "multi"])
def test_gradients_match_finite_differences_of_the_frozen_loss(preset, case):
    form, inputs, options = _cases(np.random.default_rng(10 + case))[case]
    config = _config(preset)
    state = wc.init_state(config, like=inputs[next(iter(inputs))])
    _, grads, _, _ = call_form(form, inputs, state, config, **options)
    _, _, stats, residuals = call_form(form, inputs, state, config, suffix="_forward", **options)
    rows = residuals.rows
    lam, beta_t = np.asarray(stats["lambda"]), float(rows.beta_t)
    hard = None if rows.top_index is None else np.asarray(rows.top_index)
    if hard is not None:  # a row's slots past its own number of negatives are padding
        _, positive, candidates = form_rows(form, inputs, **options)
        negative = candidates & ~positive
        hard = np.where(np.take_along_axis(negative, hard, axis=1), hard, -1)

    def loss_at(name: str, value: np.ndarray) -> float:
        changed = {**inputs, name: value}
        sim, positive, candidates = form_rows(form, changed, **options)
        scale = changed.get("scale")
        scale = None if scale is None else float(scale)
        return frozen_rows_loss(sim, positive, candidates, lam, beta_t, hard, config, scale)

    for name, grad in zip(GRADIENTS[form], grads, strict=True):
        numeric = numeric_gradient(lambda v, name=name: loss_at(name, v), inputs[name])
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9, err_msg=name)


def test_the_loss_is_the_frozen_transcription_of_the_spec():
    rng = np.random.default_rng(20)
    config = _config("paper")
    for form, inputs, options in _cases(rng):
        state = wc.init_state(config, like=inputs[next(iter(inputs))])
        loss, _, stats, residuals = call_form(
            form, inputs, state, config, suffix="_forward", **options
        )
        sim, positive, candidates = form_rows(form, inputs, **options)
        hard = np.asarray(residuals.rows.top_index)
        hard = np.where(np.take_along_axis(candidates & ~positive, hard, axis=1), hard, -1)
        scale = float(inputs["scale"]) if "scale" in inputs else None
        expected = frozen_rows_loss(
            sim, positive, candidates, np.asarray(stats["lambda"]),
            float(residuals.rows.beta_t), hard, config, scale,
        )  # fmt: skip
        assert abs(float(loss) - expected) <= 1e-12 * abs(expected), form
