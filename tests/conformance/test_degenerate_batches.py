"""Every backend and path gives the same numbers on degenerate batches (the math page's
exact-arithmetic rules): float64 to 1e-9 against the NumPy float64 core, and float32 within
1e-3 of it, with no penalty flipped."""

from __future__ import annotations

import numpy as np
import pytest
from degenerate_cases import CASES, D, N, batches

from weince_core import WEINCEConfig
from weince_core.testing import reference_results

PRESETS = ("paper", "blend")
FLOAT64 = 1e-9  # the bound: float64 backends agree to 1e-9 relative
FLOAT32 = 1e-3  # float32 against the float64 reference on these batches


def _normwise(got: np.ndarray, ref: np.ndarray) -> float:
    scale = max(float(np.max(np.abs(ref))), 1e-300)
    return float(np.max(np.abs(got - ref))) / scale


def assert_same_steps(got, ref, inputs, bound: float, where: str, *, quantities=None) -> None:
    """Loss, gradients, lambda, rho, dAIC and beta_t of every step within ``bound``.

    Gradients are compared relative to the larger of their own size and a typical gradient,
    ``1 / (2N tau |z|)``: where rows collapse the true gradient is 0 and only rounding is left.
    """
    config = WEINCEConfig()
    for t, (g, r, batch) in enumerate(zip(got, ref, inputs, strict=True)):
        z = np.concatenate(batch)
        norm = float(np.median(np.linalg.norm(z, axis=1)))
        typical = 1.0 / (z.shape[0] * config.temperature * max(norm, 1e-8))
        at = f"{where}, step {t}"
        if np.isnan(r.loss):  # a NaN input: the loss is NaN and beta_t stays, everywhere
            assert np.isnan(g.loss), f"{at}: loss {g.loss} where the reference is NaN"
            assert float(g.state) == float(r.state), f"{at}: beta_t moved to {g.state}"
            assert not np.any(g.stats["beta_updated"]), at
            continue
        errors = {
            "loss": abs(float(g.loss) - float(r.loss)) / abs(float(r.loss)),
            "grad": max(
                float(np.max(np.abs(g.grad_i - r.grad_i))) / max(np.max(np.abs(r.grad_i)), typical),
                float(np.max(np.abs(g.grad_j - r.grad_j))) / max(np.max(np.abs(r.grad_j)), typical),
            ),
            "lambda": float(np.max(np.abs(g.stats["lambda"] - r.stats["lambda"]))),
            "beta_t": abs(float(g.state) - float(r.state)) / float(r.state),
            "rho": _normwise(g.stats["rho"], r.stats["rho"]),
            "d_aic": float(np.max(np.abs(g.stats["d_aic"] - r.stats["d_aic"])))
            / max(float(np.max(np.abs(r.stats["d_aic"]))), 1.0),
        }
        for name in quantities or errors:
            assert errors[name] <= bound, f"{at}: {name} off by {errors[name]:.2e} > {bound:.0e}"


@pytest.fixture(scope="module")
def references():
    cache: dict = {}

    def get(case: str, preset: str, dtype: str = "float64"):
        key = (case, preset, dtype)
        if key not in cache:
            inputs = [tuple(z.astype(dtype).astype(np.float64) for z in b) for b in batches(case)]
            cache[key] = (inputs, reference_results(inputs, WEINCEConfig.preset(preset)))
        return cache[key]

    return get


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("path", ["adapter", "core"])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the NaN row
def test_float64_backends_agree_on_degenerate_batches(backend, path, case, preset, references):
    if not backend.float64:
        pytest.skip(f"{backend.id} has no float64")
    if path == "adapter" and backend.adapter is None:
        pytest.skip(f"{backend.id} has no adapter: its path is the core's")
    inputs, reference = references(case, preset)
    taken, results = backend.run_steps(inputs, WEINCEConfig.preset(preset), "float64", path=path)
    assert taken == path
    assert_same_steps(results, reference, inputs, FLOAT64, f"{backend.id} {path} {case} {preset}")


FLOAT32_CASES = sorted(set(CASES) - {"near_duplicates"})


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("case", FLOAT32_CASES)
def test_float32_backends_stay_near_float64_on_degenerate_batches(
    backend, case, preset, references
):
    """float32 clamps at its own ceiling, ``fl32(1 - eps) = 1 - 1.0133e-6`` for the default
    ``eps`` (``1 - 1e-6`` is no float32 number), the same on every backend; the reference is
    float64 on the same float32 inputs. Near-duplicates 1e-7 apart are left out: float32
    cannot tell them from copies."""
    inputs, reference = references(case, preset, "float32")
    _, results = backend.run_steps(inputs, WEINCEConfig.preset(preset), "float32")
    assert_same_steps(
        results,
        reference,
        inputs,
        FLOAT32,
        f"{backend.id} float32 {case} {preset}",
        quantities=("loss", "grad", "lambda"),
    )


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_compiled_torch_criterion_agrees_on_degenerate_batches(preset, references):
    torch = pytest.importorskip("torch")
    from weince_torch import WEINCELoss

    torch._dynamo.reset()
    config = WEINCEConfig.preset(preset)
    criterion = WEINCELoss(config)
    compiled = torch.compile(criterion, fullgraph=True)
    for case in ("many_duplicates", "zero_rows", "exact_ties", "copies_below_the_cap"):
        inputs, reference = references(case, preset)
        criterion.reset_state()
        for t, ((z_i, z_j), ref) in enumerate(zip(inputs, reference, strict=True)):
            t_i, t_j = (torch.tensor(z, requires_grad=True) for z in (z_i, z_j))
            loss = compiled(t_i, t_j)
            loss.backward()
            where = f"compiled {case} {preset} step {t}"
            assert abs(float(loss) - float(ref.loss)) <= FLOAT64 * abs(float(ref.loss)), where
            assert _normwise(t_i.grad.numpy(), ref.grad_i) <= FLOAT64, where
            assert _normwise(t_j.grad.numpy(), ref.grad_j) <= FLOAT64, where
            lam = criterion.last_stats["lambda"].numpy()
            assert np.max(np.abs(lam - ref.stats["lambda"])) <= FLOAT64, where
            assert abs(float(criterion.beta_t[0]) - float(ref.state)) <= FLOAT64 * 4, where


def test_the_catalogue_holds_the_cases_it_names(references):
    """The batches are degenerate in the ways they claim (else the tests above prove little)."""
    _, paper = references("copies_below_the_cap", "paper")
    d_aic = paper[0].stats["d_aic"]
    # A constant kept tail: both fits are penalised, and dAIC is the difference of two sums
    # of squares of about 1e6 each, a number near 0 (a single penalty would give |dAIC| > 100).
    assert np.any(np.abs(d_aic) < 1.0), d_aic
    _, nan = references("nan_row", "paper")
    assert np.isnan(nan[0].loss) and float(nan[0].state) == WEINCEConfig().beta_init
    z_i, _ = CASES["exact_ties"](0)
    s = z_i @ z_i.T
    assert np.array_equal(s * 4, np.round(s * 4)), "similarities are multiples of 1/4"
    assert z_i.shape == (N, D)
