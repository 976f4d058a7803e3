"""The comparison of a backend's results with the core on NumPy float64 arrays."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import WEINCEConfig
from ..forms import two_view_value_and_grad
from ..state import init_state
from ._matrix import Batches, StepResult
from ._tolerances import Tolerance, smallest_shortfall

# -- comparison with the NumPy float64 core ----------------------------------------------------

# The compared quantities, in the order of ``weince crosscheck``'s table and JSON.
QUANTITIES = ("loss", "grad", "lambda", "d_aic", "rho", "rho0", "beta_t")
# The quantities that exist only where the gate is on (NaN by design with gate "off").
TAIL_QUANTITIES = ("d_aic", "rho", "rho0")
# The second view of the generated inputs: z_j = z_i + VIEW_NOISE * noise, so that positives
# are closer than negatives, the gate opens for some anchors and beta_t moves.
VIEW_NOISE = 0.5


def generated_batches(
    n: int, d: int, steps: int, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Seeded two-view inputs: ``z_i`` standard normal, ``z_j = z_i + 0.5 * noise``.

    Args:
        n: pairs per batch.
        d: the embedding dimension.
        steps: how many batches.
        seed: the seed (with ``n`` and ``d``: each shape has its own stream).

    Returns:
        ``steps`` pairs ``(z_i, z_j)`` of float64 arrays of shape ``(n, d)``.
    """
    rng = np.random.default_rng([seed, n, d])
    batches = []
    for _ in range(steps):
        z_i = rng.standard_normal((n, d))
        batches.append((z_i, z_i + VIEW_NOISE * rng.standard_normal((n, d))))
    return tuple(batches)


@dataclass(frozen=True)
class Difference:
    """How far one quantity is from the reference, and its bound.

    ``abs``: max |x - x_ref|; ``rel``: that over max |x_ref|; ``error``: what is checked
    (``rel``, but absolute for ``lambda`` and relative to ``max(max|x_ref|, 1)`` for ``d_aic``).
    ``reference_nonfinite``: how many reference entries are NaN or infinite (counted when the
    quantity is checked strictly): such a reference cannot vouch for anything, so the quantity
    does not pass. ``computed``: False for a statistic the preset does not compute (NaN by
    design), which is left out of the verdict.
    """

    abs: float
    rel: float
    error: float
    tolerance: float
    reference_nonfinite: int = 0
    computed: bool = True

    @property
    def passed(self) -> bool:
        """Whether the quantity is within its bound (always, when it is not computed)."""
        if not self.computed:
            return True
        return self.reference_nonfinite == 0 and self.error <= self.tolerance


def _stacked(results: Sequence[StepResult], quantity: str) -> np.ndarray:
    if quantity == "loss":
        return np.stack([r.loss for r in results])
    if quantity == "grad":
        return np.stack([np.concatenate([r.grad_i, r.grad_j]) for r in results])
    if quantity == "beta_t":  # the value used in each step, then the value carried out of it
        return np.stack([np.stack([r.stats["beta_t"], r.state]) for r in results])
    return np.stack([r.stats[quantity] for r in results])


def difference(
    actual: np.ndarray,
    expected: np.ndarray,
    quantity: str,
    tol: Tolerance,
    *,
    strict: bool = False,
) -> Difference:
    """How far ``actual`` is from ``expected``.

    Args:
        actual: the values under test.
        expected: the reference values.
        quantity: the quantity's name (``lambda`` is compared absolutely, ``d_aic`` relative
            to ``max(max|expected|, 1)``, the others normwise).
        tol: the bounds.
        strict: non-finite reference entries are counted and make the quantity fail, and the
            errors are measured over the others (the crosscheck's verdict). Otherwise entries
            NaN in both are left out (statistics a preset does not compute) and any other
            non-finite gap is ``inf``.

    Returns:
        The difference; ``inf`` if the shapes differ or ``actual`` is not finite where
        ``expected`` is.
    """
    if actual.shape != expected.shape:
        return Difference(math.inf, math.inf, math.inf, tol.of(quantity))
    if strict:
        finite = np.isfinite(expected)
        skipped = ~finite
    else:
        finite = np.ones(expected.shape, bool)
        skipped = np.isnan(actual) & np.isnan(expected)
    with np.errstate(invalid="ignore", over="ignore"):
        gap = np.abs(actual - expected)
    gap = np.where(skipped, 0.0, np.where(np.isfinite(gap), gap, np.inf))
    largest_gap = float(np.max(gap)) if gap.size else 0.0
    reference = np.where(skipped, 0.0, expected)
    scale = float(np.max(np.abs(reference))) if gap.size else 0.0
    rel = largest_gap / scale if scale > 0 else (0.0 if largest_gap == 0 else math.inf)
    if quantity == "lambda":  # a weight in [0, 1]: absolute
        error = largest_gap
    elif quantity == "d_aic":  # a difference of AICs, often near 0: relative to max(scale, 1)
        error = largest_gap / max(scale, 1.0)
    else:
        error = rel
    nonfinite = int(np.sum(~finite)) if strict else 0
    return Difference(largest_gap, rel, error, tol.of(quantity, scale), nonfinite)


def computed_quantities(config: WEINCEConfig) -> tuple[str, ...]:
    """The quantities of :data:`QUANTITIES` that a configuration computes.

    Args:
        config: the loss's configuration.

    Returns:
        Every quantity, less the tail statistics when the gate is off.
    """
    if config.uses_tail_statistics:
        return QUANTITIES
    return tuple(q for q in QUANTITIES if q not in TAIL_QUANTITIES)


def compare(
    results: Sequence[StepResult],
    reference: Sequence[StepResult],
    tol: Tolerance,
    computed: Sequence[str] | None = None,
) -> dict[str, Difference]:
    """Every quantity of :data:`QUANTITIES`, over all steps, against the reference.

    Args:
        results: a backend's results, one per step.
        reference: the reference's results (:func:`reference_results`).
        tol: the bounds.
        computed: the quantities the preset computes (:func:`computed_quantities`), checked
            strictly (see :func:`difference`); the others are marked not computed. ``None``:
            every quantity, with entries NaN in both left out.

    Returns:
        The difference of each quantity.
    """
    out = {}
    for q in QUANTITIES:
        diff = difference(
            _stacked(results, q), _stacked(reference, q), q, tol, strict=computed is not None
        )
        if computed is not None and q not in computed:
            diff = Difference(diff.abs, diff.rel, diff.error, diff.tolerance, computed=False)
        out[q] = diff
    return out


def reference_results(batches: Batches, config: WEINCEConfig) -> list[StepResult]:
    """The core on NumPy float64: the results every backend is compared with.

    Args:
        batches: pairs of views ``(z_i, z_j)`` (float64), one per step; the state is carried.
        config: the loss's configuration.

    Returns:
        One result per step.
    """
    state = init_state(config, like=batches[0][0])
    results = []
    for z_i, z_j in batches:
        loss, (g_i, g_j), state, stats = two_view_value_and_grad(z_i, z_j, state, config)
        results.append(
            StepResult(
                loss=np.asarray(loss, np.float64),
                grad_i=g_i,
                grad_j=g_j,
                state=np.asarray(state, np.float64),
                stats={k: np.asarray(v, np.float64) for k, v in stats.items()},
                loss_dtype="float64",
                grad_dtype="float64",
            )
        )
    return results


class ReferenceCache:
    """NumPy float64 results per preset and inputs, and the inputs' smallest shortfall.

    Each is computed once (the inputs rounded to float32 and to bfloat16 differ, so each has
    its own).
    """

    def __init__(self) -> None:
        self._results: dict[tuple[str, str], list[StepResult]] = {}
        self._deltas: dict[str, float] = {}

    def get(self, batches: Batches, preset: str) -> list[StepResult]:
        """The reference results of some inputs under a preset.

        Args:
            batches: pairs of views, one per step.
            preset: a preset of ``WEINCEConfig.preset``.

        Returns:
            :func:`reference_results` of the inputs, computed once.
        """
        key = (preset, _digest(batches))
        if key not in self._results:
            self._results[key] = reference_results(batches, WEINCEConfig.preset(preset))
        return self._results[key]

    def delta(self, batches: Batches) -> float:
        """The inputs' smallest shortfall (:func:`smallest_shortfall`), computed once.

        Args:
            batches: pairs of views.

        Returns:
            ``delta``.
        """
        key = _digest(batches)
        if key not in self._deltas:
            self._deltas[key] = smallest_shortfall(batches)
        return self._deltas[key]


def _digest(batches: Batches) -> str:
    digest = hashlib.sha1()
    for z_i, z_j in batches:
        digest.update(repr((z_i.shape, z_i.dtype.str)).encode())
        digest.update(np.ascontiguousarray(z_i).tobytes())
        digest.update(np.ascontiguousarray(z_j).tobytes())
    return digest.hexdigest()
