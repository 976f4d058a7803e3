"""Configuration and presets of the WEINCE loss (docs/math.md section 5)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import numpy as np

GateMode = Literal["both", "rho", "aic", "off"]
GATE_MODES: tuple[str, ...] = ("both", "rho", "aic", "off")


@dataclass(frozen=True)
class WEINCEConfig:
    """Every number of the loss. The defaults are the ``paper`` preset.

    Frozen and hashable, so it can be a static argument of ``jax.jit``. Every field is checked
    when a config is made (``TypeError`` for a wrong type, ``ValueError`` for a value out of its
    range; both name the field, what it expects and the value). NumPy scalars are accepted and
    stored as plain Python ``float``, ``int`` or ``bool``.

    Attributes:
        temperature: ``tau``, the softmax temperature of ``S / tau``; in [0.01, 10000]. The
            logits ``S / tau`` reach ``1 / tau``: below 0.01 float32 holds them to worse than
            1e-5, and with near-identical views ``lse - logit`` cancels to rounding noise (a
            negative loss).
        quantile: ``q``; ``rho0`` is this quantile of ``rho`` over the anchors; in [0, 1].
        kappa_rho: slope of the ``rho`` gate; in [0, 100]. Its argument is at most
            ``kappa_rho * log(1 / eps) <= 1.7e3``: finite in float32 (no ``inf * 0``), and a
            rounding error in ``rho`` moves ``lambda`` by at most ``kappa_rho / 4`` times it.
        kappa_aic: slope of the AIC gate; in [0, 100] (as ``kappa_rho``).
        aic_margin: ``dAIC`` at which the AIC gate is one half; in [-1e6, 1e6] (finite in
            float32 whatever ``kappa_aic``).
        gate: ``"both"`` (``lam_rho * lam_aic``), ``"rho"``, ``"aic"``, or ``"off"``
            (``lambda = 0``: plain NT-Xent, nothing else computed).
        tail_fraction: the per-anchor tail holds this fraction of the negatives ...; in (0, 1].
        min_tail: ... but at least this many; an int in [1, 2**31 - 1].
        eps: shortfall floor; ``clip_s(s) = min(s, 1 - eps)``; in [2**-21, 0.5]. Below
            ``2**-24``, ``1 - eps`` rounds to 1 in float32 (the shortfall becomes 0 and its log
            ``-inf``); below ``2**-21`` (8 float32 steps under 1) the rounding error of a
            float32 cosine of two equal rows decides whether they clamp, and the backends
            disagree (measured: gradients 1-16% apart at 1e-7 and 2**-24). Above 0.5 the cap
            ``1 - eps`` falls into the bulk of the similarities, where it is meant for
            near-duplicates: ordinary pairs would clamp, and rounding would decide which.
        beta_w: slope of the shortfall coordinate in the blended logits; in (0, 100].
        weibit_weight: weight of the Weibit top-M term (0 turns it off); in [0, 100].
        softmax_weight: weight of the softmax top-M term (0 turns it off); in [0, 100].
        top_m: ``M``, the hard negatives per anchor in the top-M terms; an int in
            [1, 2**31 - 1].
        estimate_beta: update ``beta_t`` online from the global negative tail.
        beta_init: the initial ``beta_t``; in (0, 32]. The Weibit logits
            ``beta * log(1 / shortfall)`` reach ``beta * log(1 / eps)``: at 1e10 that is 1.7e11,
            which float32 holds to 1e4, and the backends' losses differ. Measured in float32,
            every backend stays within 2e-5 of float64 up to 32 (twice the default clip
            high); at 50 JAX's gradient is 7e-4 off, at 100 3e-3.
        beta_tail_fraction: the global tail holds this fraction of all negatives ...; in (0, 1].
        beta_min_tail: ... but at least this many; an int in [1, 2**31 - 1].
        beta_momentum: ``beta_t <- m * beta_t + (1 - m) * clip(beta_hat)``; in [0, 1].
        beta_min_r2: the fit's ``R2`` needed for an update; in [0, 1].
        beta_clip: the range ``(low, high)`` ``beta_hat`` is clipped to before it enters the
            average; ``0 < low <= high <= 32`` (as ``beta_init``).
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
        """The published experimental objective: blend + both top-M terms + online ``beta_t``
        (docs/math.md section 5); the default configuration everywhere.

        Args:
            **overrides: fields to change.

        Returns:
            The configuration.

        Raises:
            TypeError: a field of a wrong type.
            ValueError: a field out of its range.
        """
        return cls(**overrides)

    @classmethod
    def blend(cls, **overrides: Any) -> WEINCEConfig:
        """The formula of the paper's abstract: the blended main term alone (docs/math.md
        section 5).

        Args:
            **overrides: fields to change.

        Returns:
            The configuration.

        Raises:
            TypeError: a field of a wrong type.
            ValueError: a field out of its range.
        """
        settings: dict[str, Any] = dict(weibit_weight=0.0, softmax_weight=0.0, estimate_beta=False)
        return cls(**{**settings, **overrides})

    @classmethod
    def infonce(cls, **overrides: Any) -> WEINCEConfig:
        """The baseline: ``lambda = 0`` for every anchor, i.e. NT-Xent (docs/math.md section 5).

        Args:
            **overrides: fields to change.

        Returns:
            The configuration.

        Raises:
            TypeError: a field of a wrong type.
            ValueError: a field out of its range.
        """
        settings: dict[str, Any] = dict(
            gate="off", weibit_weight=0.0, softmax_weight=0.0, estimate_beta=False
        )
        return cls(**{**settings, **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> WEINCEConfig:
        """A preset by name.

        Args:
            name: ``"paper"``, ``"blend"`` or ``"infonce"``.
            **overrides: fields to change.

        Returns:
            The configuration.

        Raises:
            ValueError: an unknown name, or a field out of its range.
        """
        presets = {"paper": cls.paper, "blend": cls.blend, "infonce": cls.infonce}
        if name not in presets:
            raise ValueError(f"preset must be one of {sorted(presets)}; got {name!r}")
        return presets[name](**overrides)

    def replace(self, **changes: Any) -> WEINCEConfig:
        """A copy with some fields changed (validated again).

        Args:
            **changes: the fields to change.

        Returns:
            The new configuration.

        Raises:
            TypeError: a field of a wrong type.
            ValueError: a field out of its range.
        """
        return dataclasses.replace(self, **changes)

    @property
    def uses_tail_statistics(self) -> bool:
        """Whether the gate is on, so that the tail statistics are computed.

        Returns:
            ``gate != "off"``.
        """
        return self.gate != "off"

    @property
    def uses_top_m(self) -> bool:
        """Whether either top-M term has a weight.

        Returns:
            ``weibit_weight > 0 or softmax_weight > 0``.
        """
        return self.weibit_weight > 0 or self.softmax_weight > 0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = _checked_value(field.name, getattr(self, field.name))
            object.__setattr__(self, field.name, value)
        _require(self.gate in GATE_MODES, "gate", f"one of {GATE_MODES}", self.gate)
        for name, limits in RANGES.items():
            if name == "beta_clip":
                continue
            value = getattr(self, name)
            _require(limits.contains(value), name, limits.text(), value)
        low, high = self.beta_clip
        clip = RANGES["beta_clip"]
        _require(
            clip.contains(low) and clip.contains(high) and low <= high,
            "beta_clip",
            f"a pair (low, high) with low <= high, both {clip.text()}",
            self.beta_clip,
        )


@dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: ``low`` to ``high``, each end open or closed."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in the range.

        Args:
            value: the number.

        Returns:
            ``True`` inside, ``False`` outside.
        """
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def text(self) -> str:
        """The range as an error message writes it.

        Returns:
            E.g. ``"in (0, 1]"``.
        """
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        low = "2**-21 (4.77e-07)" if self.low == EPS_MIN else _number(self.low)
        return f"in {left}{low}, {_number(self.high)}{right}"


def _number(x: float) -> str:
    """``10000``, ``0.01``, ``1e6``: as a range reads in the docs."""
    if isinstance(x, int) or (x.is_integer() and abs(x) < 1e5):
        return str(int(x))
    return f"{x:g}".replace("e+0", "e").replace("e+", "e").replace("e-0", "e-")


# The smallest eps: the cap 1 - eps lies 8 float32 steps (2**-24 each) below 1, beyond the
# rounding error of a float32 cosine of two equal rows, so that copies clamp on every backend.
EPS_MIN = 2.0**-21
# The largest slope or weight of a logit (beta_w, the top-M weights): logits up to
# 100 * log(1 / eps) <= 1.7e3, which float32 holds to about 1e-4 (absolute).
SLOPE_MAX = 100.0
# The largest beta_t (beta_init, beta_clip): twice the default clip. Measured in float32: every
# backend within 2e-5 of NumPy float64 up to 32; at 50 JAX's gradient is 7e-4 off, at 100 3e-3.
BETA_MAX = 32.0
# The largest count (tail sizes, M): shape arithmetic stays within int32 on every backend.
COUNT_MAX = 2**31 - 1

# Every numeric field's range; the reasons are in the class docstring and docs/configuration.md.
RANGES: dict[str, Range] = {
    "temperature": Range(1e-2, 1e4),
    "quantile": Range(0.0, 1.0),
    "kappa_rho": Range(0.0, 100.0),
    "kappa_aic": Range(0.0, 100.0),
    "aic_margin": Range(-1e6, 1e6),
    "tail_fraction": Range(0.0, 1.0, low_open=True),
    "min_tail": Range(1, COUNT_MAX),
    "eps": Range(EPS_MIN, 0.5),
    "beta_w": Range(0.0, SLOPE_MAX, low_open=True),
    "weibit_weight": Range(0.0, SLOPE_MAX),
    "softmax_weight": Range(0.0, SLOPE_MAX),
    "top_m": Range(1, COUNT_MAX),
    "beta_init": Range(0.0, BETA_MAX, low_open=True),
    "beta_tail_fraction": Range(0.0, 1.0, low_open=True),
    "beta_min_tail": Range(1, COUNT_MAX),
    "beta_momentum": Range(0.0, 1.0),
    "beta_min_r2": Range(0.0, 1.0),
    "beta_clip": Range(0.0, BETA_MAX, low_open=True),
}

_INT_FIELDS = ("min_tail", "top_m", "beta_min_tail")


def _checked_value(name: str, value: Any) -> Any:
    """``value`` as the plain Python type of field ``name`` (NumPy scalars welcome), or a
    ``TypeError`` naming the field and what it expects."""
    if name == "gate":
        if isinstance(value, str):
            return str(value)
        _wrong_type(name, "str", value)
    if name == "estimate_beta":
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        _wrong_type(name, "bool", value)
    if name == "beta_clip":
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            _wrong_type(name, "pair (low, high) of finite numbers, e.g. (0.5, 16.0)", value)
        pair = tuple(value)
        if len(pair) != 2 or not all(_is_real(v) for v in pair):
            _wrong_type(name, "pair (low, high) of finite numbers, e.g. (0.5, 16.0)", value)
        return (float(pair[0]), float(pair[1]))
    if name in _INT_FIELDS:
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
            return int(value)
        _wrong_type(name, "int", value)
    if _is_real(value):
        return float(value)
    _wrong_type(name, "finite number", value)


def _is_real(value: object) -> bool:
    """A finite real number: Python's or NumPy's, not a bool."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, (bool, np.bool_))
        and math.isfinite(value)
    )


def _wrong_type(name: str, expected: str, value: object) -> NoReturn:
    article = "an" if expected[0] in "aeiou" else "a"
    raise TypeError(f"WEINCEConfig.{name} must be {article} {expected}; got {value!r}")


def _require(ok: bool, name: str, expected: str, value: object) -> None:
    if not ok:
        raise ValueError(f"WEINCEConfig.{name} must be {expected}; got {value!r}")
