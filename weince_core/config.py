"""Configuration and presets of the WEINCE loss (SPEC.md section 5)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

GateMode = Literal["both", "rho", "aic", "off"]
GATE_MODES: tuple[str, ...] = ("both", "rho", "aic", "off")


@dataclass(frozen=True)
class WEINCEConfig:
    """Every number of the loss. The defaults are the ``paper`` preset.

    Frozen and hashable, so it can be a static argument of ``jax.jit``.

    Attributes:
        temperature: ``tau``, the softmax temperature of ``S / tau``.
        quantile: ``q``; ``rho0`` is this quantile of ``rho`` over the anchors.
        kappa_rho: slope of the ``rho`` gate.
        kappa_aic: slope of the AIC gate.
        aic_margin: ``dAIC`` at which the AIC gate is one half.
        gate: ``"both"`` (``lam_rho * lam_aic``), ``"rho"``, ``"aic"``, or ``"off"``
            (``lambda = 0``: plain NT-Xent, nothing else computed).
        tail_fraction: the per-anchor tail holds this fraction of the negatives ...
        min_tail: ... but at least this many.
        eps: shortfall floor; ``clip_s(s) = min(s, 1 - eps)``.
        beta_w: slope of the shortfall coordinate in the blended logits.
        weibit_weight: weight of the Weibit top-M term (0 turns it off).
        softmax_weight: weight of the softmax top-M term (0 turns it off).
        top_m: ``M``, the hard negatives per anchor in the top-M terms.
        estimate_beta: update ``beta_t`` online from the global negative tail.
        beta_init: the initial ``beta_t``.
        beta_tail_fraction: the global tail holds this fraction of all negatives ...
        beta_min_tail: ... but at least this many.
        beta_momentum: ``beta_t <- m * beta_t + (1 - m) * clip(beta_hat)``.
        beta_min_r2: the fit's ``R2`` needed for an update.
        beta_clip: the range ``beta_hat`` is clipped to before it enters the average.
    """

    temperature: float = 0.5
    quantile: float = 0.2
    kappa_rho: float = 10.0
    kappa_aic: float = 1.0
    aic_margin: float = 2.0
    gate: GateMode = "both"
    tail_fraction: float = 0.1
    min_tail: int = 32
    eps: float = 1e-6
    beta_w: float = 1.0
    weibit_weight: float = 0.5
    softmax_weight: float = 0.5
    top_m: int = 50
    estimate_beta: bool = True
    beta_init: float = 4.0
    beta_tail_fraction: float = 0.05
    beta_min_tail: int = 1024
    beta_momentum: float = 0.9
    beta_min_r2: float = 0.85
    beta_clip: tuple[float, float] = (0.5, 16.0)

    @classmethod
    def paper(cls, **overrides: Any) -> WEINCEConfig:
        """The published experimental objective: blend + both top-M terms + online ``beta_t``."""
        return cls(**overrides)

    @classmethod
    def blend(cls, **overrides: Any) -> WEINCEConfig:
        """The formula of the paper's abstract: the blended main term alone."""
        settings: dict[str, Any] = dict(weibit_weight=0.0, softmax_weight=0.0, estimate_beta=False)
        return cls(**{**settings, **overrides})

    @classmethod
    def infonce(cls, **overrides: Any) -> WEINCEConfig:
        """The baseline: ``lambda = 0`` for every anchor, i.e. NT-Xent."""
        settings: dict[str, Any] = dict(
            gate="off", weibit_weight=0.0, softmax_weight=0.0, estimate_beta=False
        )
        return cls(**{**settings, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> WEINCEConfig:
        """A preset by name: ``"paper"``, ``"blend"`` or ``"infonce"``."""
        presets = {"paper": cls.paper, "blend": cls.blend, "infonce": cls.infonce}
        if name not in presets:
            raise ValueError(f"preset must be one of {sorted(presets)}; got {name!r}")
        return presets[name](**overrides)

    def replace(self, **changes: Any) -> WEINCEConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def uses_tail_statistics(self) -> bool:
        return self.gate != "off"

    @property
    def uses_top_m(self) -> bool:
        return self.weibit_weight > 0 or self.softmax_weight > 0

    def __post_init__(self) -> None:
        # Accept a list for beta_clip (from JSON, say) but store a hashable tuple.
        object.__setattr__(self, "beta_clip", tuple(self.beta_clip))
        for field in dataclasses.fields(self):
            _check_type(field.name, getattr(self, field.name))
        _require(self.gate in GATE_MODES, "gate", f"one of {GATE_MODES}", self.gate)
        _require(self.temperature > 0, "temperature", "> 0", self.temperature)
        _require(0 <= self.quantile <= 1, "quantile", "in [0, 1]", self.quantile)
        _require(self.kappa_rho >= 0, "kappa_rho", ">= 0", self.kappa_rho)
        _require(self.kappa_aic >= 0, "kappa_aic", ">= 0", self.kappa_aic)
        _require(0 < self.tail_fraction <= 1, "tail_fraction", "in (0, 1]", self.tail_fraction)
        _require(self.min_tail >= 1, "min_tail", ">= 1", self.min_tail)
        _require(0 < self.eps < 1, "eps", "in (0, 1)", self.eps)
        _require(self.beta_w > 0, "beta_w", "> 0", self.beta_w)
        _require(self.weibit_weight >= 0, "weibit_weight", ">= 0", self.weibit_weight)
        _require(self.softmax_weight >= 0, "softmax_weight", ">= 0", self.softmax_weight)
        _require(self.top_m >= 1, "top_m", ">= 1", self.top_m)
        _require(self.beta_init > 0, "beta_init", "> 0", self.beta_init)
        _require(
            0 < self.beta_tail_fraction <= 1,
            "beta_tail_fraction",
            "in (0, 1]",
            self.beta_tail_fraction,
        )
        _require(self.beta_min_tail >= 1, "beta_min_tail", ">= 1", self.beta_min_tail)
        _require(0 <= self.beta_momentum <= 1, "beta_momentum", "in [0, 1]", self.beta_momentum)
        _require(0 <= self.beta_min_r2 <= 1, "beta_min_r2", "in [0, 1]", self.beta_min_r2)
        _require(
            0 < self.beta_clip[0] <= self.beta_clip[1],
            "beta_clip",
            "a pair (low, high) with 0 < low <= high",
            self.beta_clip,
        )


_INT_FIELDS = ("min_tail", "top_m", "beta_min_tail")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_type(name: str, value: object) -> None:
    if name == "gate":
        ok, expected = isinstance(value, str), "str"
    elif name == "estimate_beta":
        ok, expected = isinstance(value, bool), "bool"
    elif name == "beta_clip":
        ok = isinstance(value, tuple) and len(value) == 2 and all(map(_is_number, value))
        expected = "pair of finite numbers"
    elif name in _INT_FIELDS:
        ok, expected = isinstance(value, int) and not isinstance(value, bool), "int"
    else:
        ok, expected = _is_number(value), "finite number"
    if not ok:
        raise TypeError(f"WEINCEConfig.{name} must be a {expected}; got {value!r}")


def _require(ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise ValueError(f"WEINCEConfig.{name} must be {expected}; got {value!r}")
