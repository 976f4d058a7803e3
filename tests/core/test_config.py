"""Configuration: presets, hashing for jit, validation of every field."""

from __future__ import annotations

import pytest

from weince_core import WEINCEConfig


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
        ("temperature", -0.5, "temperature must be > 0"),
        ("temperature", 0.0, "temperature must be > 0"),
        ("quantile", 1.5, r"quantile must be in \[0, 1\]"),
        ("quantile", -0.1, r"quantile must be in \[0, 1\]"),
        ("top_m", 0, "top_m must be >= 1"),
        ("min_tail", 0, "min_tail must be >= 1"),
        ("eps", 0.0, r"eps must be in \(0, 1\)"),
        ("gate", "sometimes", "gate must be one of"),
        ("tail_fraction", 0.0, r"tail_fraction must be in \(0, 1\]"),
        ("beta_clip", (16.0, 0.5), "beta_clip must be a pair"),
        ("beta_momentum", 1.5, r"beta_momentum must be in \[0, 1\]"),
        ("weibit_weight", -1.0, "weibit_weight must be >= 0"),
    ],
)
def test_out_of_range_values_raise_value_error_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        WEINCEConfig(**{field: value})


@pytest.mark.parametrize(
    "field, value",
    [
        ("top_m", 50.0),
        ("top_m", True),
        ("temperature", "0.5"),
        ("temperature", float("nan")),
        ("estimate_beta", 1),
        ("beta_clip", (0.5,)),
    ],
)
def test_wrong_types_raise_type_error_naming_the_field(field, value):
    with pytest.raises(TypeError, match=f"WEINCEConfig.{field} must be"):
        WEINCEConfig(**{field: value})
