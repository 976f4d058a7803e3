"""The degenerate two-view batches of the math page's exact-arithmetic section.

Duplicated, tied, collapsed and non-finite batches: the inputs on which backends used to
disagree (a rounded slope's sign switched a penalty, a framework's top-k kept other tied
columns, a matrix product rounded copies apart). Every batch is float64 and reproducible; most
have N = 40 pairs and d = 8, so that JAX and ``torch.compile`` compile once for all of them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

Batch = tuple[np.ndarray, np.ndarray]
N, D = 40, 8


def _views(seed: int, n: int = N, d: int = D) -> Batch:
    rng = np.random.default_rng(seed)
    z_i = rng.standard_normal((n, d))
    return z_i, z_i + 0.3 * rng.standard_normal((n, d))


def many_duplicates(seed: int) -> Batch:
    """Most of one view copies of one row (the hardest negatives clamp at the cap)."""
    z_i, _ = _views(seed)
    z_i[: 5 * N // 8] = z_i[0]
    rng = np.random.default_rng(seed + 100)
    return z_i, z_i + 0.3 * rng.standard_normal(z_i.shape)


def duplicates_across_views(seed: int) -> Batch:
    """Positives equal to their anchors, and rows of one view copied into the other."""
    z_i, z_j = _views(seed)
    z_j[:10] = z_i[:10]
    z_j[10:20] = z_i[20:30]
    return z_i, z_j


def all_rows_identical(seed: int) -> Batch:
    row = np.random.default_rng(seed).standard_normal(D)
    return np.tile(row, (N, 1)), np.tile(row, (N, 1))


def zero_rows(seed: int) -> Batch:
    """A few duplicated rows and zero rows (whose similarities are all 0: ties everywhere)."""
    z_i, z_j = _views(seed)
    z_i[1:4] = z_i[0]
    z_j[5] = 0.0
    z_i[7] = 0.0
    return z_i, z_j


def exact_ties(seed: int) -> Batch:
    """Rows drawn from unit vectors whose similarities are exact multiples of 1/4: ties are
    real ties on every backend, at the top-M cut and at the tail's cut."""
    rng = np.random.default_rng(seed)
    pool = _quarter_vectors()
    return pool[rng.integers(0, len(pool), N)], pool[rng.integers(0, len(pool), N)]


def copies_below_the_cap(seed: int) -> Batch:
    """34 bitwise copies of one row in ``z_j``: for the anchors whose hardest negatives they
    are, the kept tail is constant below the cap (an all-equal tail, not a clamped one)."""
    z_i, z_j = _views(seed)
    z_j[:34] = np.random.default_rng(seed + 200).standard_normal(D)
    z_i[34:] = z_j[0] + 0.5 * np.random.default_rng(seed + 300).standard_normal((N - 34, D))
    return z_i, z_j


def near_duplicates(seed: int) -> Batch:
    """Rows 1e-7 apart: genuinely different values, ordered by value."""
    z_i, z_j = _views(seed)
    noise = np.random.default_rng(seed + 400).standard_normal((20, D))
    z_i[:20] = z_i[0] + 1e-7 * noise
    return z_i, z_j


def two_pairs(seed: int) -> Batch:
    return _views(seed, n=2)


def three_pairs(seed: int) -> Batch:
    return _views(seed, n=3)


def nan_row(seed: int) -> Batch:
    z_i, z_j = _views(seed)
    z_i[3, 0] = np.nan
    return z_i, z_j


def _quarter_vectors() -> np.ndarray:
    """Unit vectors of R^8 with entries 0 and +-1/2 (four of them non-zero), and +-e_k."""
    vectors = [np.eye(D)[k] * sign for k in range(D) for sign in (1.0, -1.0)]
    for support in itertools.combinations(range(D), 4):
        for signs in itertools.product((0.5, -0.5), repeat=4):
            v = np.zeros(D)
            v[list(support)] = signs
            vectors.append(v)
    return np.array(vectors)


CASES: dict[str, Callable[[int], Batch]] = {
    f.__name__: f
    for f in (
        many_duplicates,
        duplicates_across_views,
        all_rows_identical,
        zero_rows,
        exact_ties,
        copies_below_the_cap,
        near_duplicates,
        two_pairs,
        three_pairs,
        nan_row,
    )
}


def batches(case: str) -> tuple[Batch, Batch]:
    """Two steps of ``case`` (so that ``beta_t`` is carried once)."""
    return CASES[case](0), CASES[case](1)
