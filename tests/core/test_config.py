"""Configuration: presets, hashing for jit, validation of every field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from weince_core import WEINCEConfig
from weince_core.config import BETA_MAX, COUNT_MAX, EPS_MIN, RANGES

ROOT = Path(__file__).resolve().parents[2]


def test_presets_match_the_spec_table():
    paper, blend, infonce = WEINCEConfig.paper(), WEINCEConfig.blend(), WEINCEConfig.infonce()
    assert (paper.weibit_weight, paper.softmax_weight, paper.top_m) == (0.5, 0.5, 50)
    assert paper.estimate_beta and paper.gate == "both"
    assert (blend.weibit_weight, blend.softmax_weight, blend.estimate_beta) == (0, 0, False)
    assert blend.gate == "both"
    assert infonce.gate == "off" and not infonce.uses_top_m and not infonce.estimate_beta
    for config in (paper, blend, infonce):
        assert (config.temperature, config.quantile, config.aic_margin) == (0.5, 0.2, 2.0)
        assert (config.kappa_rho, config.kappa_aic, config.eps, config.beta_w) == (10, 1, 1e-6, 1)
        assert (config.tail_fraction, config.min_tail, config.beta_init) == (0.1, 32, 4.0)


def test_preset_by_name_takes_overrides_and_rejects_unknown_names():
    assert WEINCEConfig.preset("blend", temperature=0.2) == WEINCEConfig.blend(temperature=0.2)
    with pytest.raises(ValueError, match="preset must be one of"):
        WEINCEConfig.preset("simclr")


def test_configs_are_hashable_and_equal_by_value():
    assert hash(WEINCEConfig.paper()) == hash(WEINCEConfig())
    assert WEINCEConfig(beta_clip=[0.5, 16.0]) == WEINCEConfig()
    assert WEINCEConfig().replace(temperature=0.1).temperature == 0.1


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("temperature", -0.5, r"temperature must be in \[0.01, 10000\]; got -0.5"),
        ("temperature", 0.0, r"temperature must be in \[0.01, 10000\]"),
        ("temperature", 1e-4, r"temperature must be in \[0.01, 10000\]; got 0.0001"),
        ("temperature", 1e5, r"temperature must be in \[0.01, 10000\]"),
        ("quantile", 1.5, r"quantile must be in \[0, 1\]; got 1.5"),
        ("quantile", -0.1, r"quantile must be in \[0, 1\]"),
        ("kappa_rho", -1.0, r"kappa_rho must be in \[0, 100\]"),
        ("kappa_rho", 1e308, r"kappa_rho must be in \[0, 100\]; got 1e\+308"),
        ("kappa_aic", 101.0, r"kappa_aic must be in \[0, 100\]"),
        ("aic_margin", 1e7, r"aic_margin must be in \[-1e6, 1e6\]"),
        ("aic_margin", -1e300, r"aic_margin must be in \[-1e6, 1e6\]"),
        ("tail_fraction", 0.0, r"tail_fraction must be in \(0, 1\]"),
        ("tail_fraction", 1.5, r"tail_fraction must be in \(0, 1\]"),
        ("min_tail", 0, r"min_tail must be in \[1, 2147483647\]"),
        ("min_tail", 2**31, r"min_tail must be in \[1, 2147483647\]; got 2147483648"),
        ("eps", 0.0, r"eps must be in \[2\*\*-21 \(4.77e-07\), 0.5\]"),
        ("eps", 2e-8, r"eps must be in \[2\*\*-21 \(4.77e-07\), 0.5\]; got 2e-08"),
        ("eps", 1e-7, r"eps must be in \[2\*\*-21 \(4.77e-07\), 0.5\]; got 1e-07"),
        ("eps", 2.0**-21 * (1 - 2**-52), r"eps must be in \[2\*\*-21"),
        ("eps", 0.999, r"eps must be in \[2\*\*-21 \(4.77e-07\), 0.5\]; got 0.999"),
        ("beta_w", 0.0, r"beta_w must be in \(0, 100\]"),
        ("beta_w", 1e3, r"beta_w must be in \(0, 100\]"),
        ("weibit_weight", -1.0, r"weibit_weight must be in \[0, 100\]"),
        ("softmax_weight", 1e30, r"softmax_weight must be in \[0, 100\]"),
        ("top_m", 0, r"top_m must be in \[1, 2147483647\]"),
        ("top_m", 2**40, r"top_m must be in \[1, 2147483647\]"),
        ("beta_init", 0.0, r"beta_init must be in \(0, 32\]"),
        ("beta_init", 1e10, r"beta_init must be in \(0, 32\]; got 10000000000.0"),
        ("beta_tail_fraction", 0.0, r"beta_tail_fraction must be in \(0, 1\]"),
        ("beta_min_tail", 0, r"beta_min_tail must be in \[1, 2147483647\]"),
        ("beta_momentum", 1.5, r"beta_momentum must be in \[0, 1\]"),
        ("beta_min_r2", -0.5, r"beta_min_r2 must be in \[0, 1\]"),
        ("gate", "sometimes", "gate must be one of"),
        ("beta_clip", (16.0, 0.5), r"beta_clip must be a pair \(low, high\) with low <= high"),
        ("beta_clip", (0.0, 16.0), r"beta_clip must be a pair .* both in \(0, 32\]"),
        ("beta_clip", (0.5, 1e3), r"beta_clip must be a pair .* both in \(0, 32\]"),
    ],
)
def test_out_of_range_values_raise_value_error_naming_field_range_and_value(field, value, message):
    with pytest.raises(ValueError, match=f"^WEINCEConfig.{message}"):
        WEINCEConfig(**{field: value})


def test_every_numeric_field_has_a_documented_range():
    numeric = {
        f.name for f in dataclasses.fields(WEINCEConfig) if f.name not in ("gate", "estimate_beta")
    }
    assert set(RANGES) == numeric
    doc = WEINCEConfig.__doc__ or ""
    guide = (ROOT / "docs" / "configuration.md").read_text()
    for name, limits in RANGES.items():
        # The range as the error message words it, in the docstring and in the guide's table.
        words = limits.text().removeprefix("in ").replace(" (4.77e-07)", "")
        row = next(line for line in guide.splitlines() if line.startswith(f"| `{name}` |"))
        assert words.replace("2147483647", "2**31 - 1") in doc.replace("\n", " "), name
        assert words.replace("2147483647", "2**31 - 1") in row, (name, row)


@pytest.mark.parametrize(
    "field, value",
    [
        ("top_m", 50.0),
        ("top_m", True),
        ("top_m", np.bool_(True)),
        ("temperature", "0.5"),
        ("temperature", float("nan")),
        ("temperature", float("inf")),
        ("temperature", np.float32("nan")),
        ("temperature", True),
        ("estimate_beta", 1),
        ("gate", 1),
        ("beta_clip", (0.5,)),
        ("beta_clip", 5),
        ("beta_clip", "ab"),
        ("beta_clip", (0.5, float("inf"))),
    ],
)
def test_wrong_types_raise_type_error_naming_the_field(field, value):
    with pytest.raises(TypeError, match=f"^WEINCEConfig.{field} must be"):
        WEINCEConfig(**{field: value})


def test_a_number_for_beta_clip_says_a_pair_is_expected():
    with pytest.raises(TypeError, match=r"beta_clip must be a pair \(low, high\) .*; got 5$"):
        WEINCEConfig(beta_clip=5)


def test_numpy_scalars_are_stored_as_python_numbers():
    config = WEINCEConfig(
        temperature=np.float64(0.5),
        eps=np.float32(2.0**-20),
        top_m=np.int64(50),
        min_tail=np.int32(32),
        estimate_beta=np.bool_(True),
        beta_clip=np.array([0.5, 16.0]),
        kappa_rho=np.int64(10),
    )
    plain = WEINCEConfig(eps=2.0**-20, kappa_rho=10.0)
    assert config == plain and hash(config) == hash(plain)
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        assert type(value) is type(getattr(plain, field.name)), field.name
    assert all(type(x) is float for x in config.beta_clip)
    assert type(WEINCEConfig(temperature=1).temperature) is float  # ints become floats too


def test_replace_validates_again():
    with pytest.raises(ValueError, match="eps must be in"):
        WEINCEConfig().replace(eps=1.0)


# Settings at the ends of the ranges, grouped so that each group still exercises every value
# (the gate open where the slopes matter); each must give finite results the backends agree on.
EDGES = {
    "low ends": dict(
        eps=EPS_MIN,
        temperature=0.01,
        quantile=0.0,
        kappa_rho=0.0,
        aic_margin=-1e6,
        beta_momentum=0.0,
        beta_min_r2=0.0,
        beta_min_tail=1,
        min_tail=1,
        top_m=1,
    ),
    "high slopes": dict(
        beta_init=BETA_MAX,
        beta_clip=(BETA_MAX, BETA_MAX),
        beta_w=100.0,
        kappa_rho=100.0,
        kappa_aic=100.0,
        aic_margin=-1e6,
        weibit_weight=100.0,
        softmax_weight=100.0,
    ),
    "high rest": dict(
        eps=0.5,
        temperature=1e4,
        aic_margin=1e6,
        top_m=COUNT_MAX,
        min_tail=COUNT_MAX,
        beta_min_tail=COUNT_MAX,
        quantile=1.0,
        tail_fraction=1.0,
        beta_tail_fraction=1.0,
        beta_momentum=1.0,
        beta_min_r2=1.0,
    ),
}


def edge_batches() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Two steps: paired views, then identical views (the logits at their largest, and every
    positive at the cap)."""
    rng = np.random.default_rng(0)
    z_i = rng.normal(size=(12, 128))
    z_j = z_i + 0.3 * rng.normal(size=z_i.shape)
    return ((z_i, z_j), (z_i, z_i.copy()))


def _close(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> bool:
    """Normwise: max |actual - expected| <= rtol * max |expected| + atol, all finite."""
    if not (np.all(np.isfinite(actual)) and np.all(np.isfinite(expected))):
        return False
    return float(np.max(np.abs(actual - expected))) <= rtol * float(np.max(np.abs(expected))) + atol


@pytest.mark.parametrize("edge", EDGES)
def test_settings_at_the_ends_of_the_ranges_are_finite_and_agree_across_backends(edge):
    from weince.testing import all_backends
    from weince_core.testing import enable_jax_float64

    if any(b.module == "jax" and not b.skip_reason for b in all_backends(["jax-cpu"])):
        enable_jax_float64()
    config = WEINCEConfig.paper(**EDGES[edge])
    batches = edge_batches()
    backends = [b for b in all_backends(["numpy", "strict", "torch-cpu", "jax-cpu"])]
    runnable = [b for b in backends if not b.skip_reason]
    numpy = next(b for b in runnable if b.id == "numpy")
    # float64 to 1e-9 (docs/math.md section 8); float32 within 1e-3 of NumPy float32 (the identical
    # views at temperature 0.01 hold a loss of 1e-6 that float32 resolves to about 1e-6 absolute).
    for dtype, rtol, atol in (("float64", 1e-9, 1e-12), ("float32", 1e-3, 1e-5)):
        inputs = tuple(tuple(z.astype(dtype).astype(np.float64) for z in b) for b in batches)
        _, expected = numpy.run_steps(inputs, config, dtype)
        for backend in runnable:
            _, got = backend.run_steps(inputs, config, dtype)
            for step, (g, e) in enumerate(zip(got, expected, strict=True)):
                where = f"{backend.id} {dtype} step {step}"
                assert _close(g.loss, e.loss, rtol, atol), (where, g.loss, e.loss)
                for grad, ref in ((g.grad_i, e.grad_i), (g.grad_j, e.grad_j)):
                    assert _close(grad, ref, rtol, atol), (where, "grad")
                assert _close(g.stats["lambda"], e.stats["lambda"], 0.0, max(atol, 1e-9)), where
                assert _close(g.state, e.state, rtol, atol), (where, g.state, e.state)
    assert len(runnable) >= 2, "needs a second backend besides NumPy"
