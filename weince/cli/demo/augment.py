"""The two-view augmentation for small images, in NumPy so every backend sees the same views.

Each view is a random affine warp (rotation, scale, shift, sampled bilinearly with zero
padding) followed by intensity jitter (contrast, brightness), Gaussian pixel noise and a
random square cut-out. Crops and flips, SimCLR's usual choices, suit 8 x 8 digits badly: a crop
leaves a few pixels, and a flip turns a 2 into something else. Sub-pixel shifts, small
rotations and a cut-out change the pixels a lot while keeping the digit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """Strengths of the random transforms (shifts and cut-out in fractions of the image side)."""

    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_shift: float = 0.125  # one pixel of an 8 x 8 image
    contrast_range: tuple[float, float] = (0.7, 1.3)
    max_brightness: float = 0.1
    noise_std: float = 0.05
    cutout_prob: float = 0.5
    cutout_size: float = 0.375  # three pixels of an 8 x 8 image


def augment(x: np.ndarray, rng: np.random.Generator, aug: Augmentation) -> np.ndarray:
    """One random view of each image of ``x`` ``(n, c, h, w)`` in ``[0, 1]``; same shape, float32.

    The draws come from ``rng`` alone, so a seeded generator gives the same views every time.

    Args:
        x: the images, ``(n, c, h, w)`` in ``[0, 1]``.
        rng: the generator of every draw.
        aug: the strengths of the transforms.

    Returns:
        The views, float32, of ``x``'s shape.
    """
    if x.ndim != 4:
        raise ValueError(f"x must have shape (n, c, h, w); got {x.shape}")
    n, _, h, w = x.shape
    angle = np.deg2rad(rng.uniform(-aug.max_rotation_deg, aug.max_rotation_deg, size=n))
    scale = np.asarray(rng.uniform(*aug.scale_range, size=n))
    shift = np.asarray(rng.uniform(-aug.max_shift, aug.max_shift, size=(n, 2))) * [h, w]
    views = _affine(x, angle, scale, shift)

    contrast = rng.uniform(*aug.contrast_range, size=(n, 1, 1, 1))
    brightness = rng.uniform(-aug.max_brightness, aug.max_brightness, size=(n, 1, 1, 1))
    views = views * contrast + brightness + aug.noise_std * rng.standard_normal(views.shape)
    views = np.clip(views, 0.0, 1.0)

    side_h = max(1, round(aug.cutout_size * h))
    side_w = max(1, round(aug.cutout_size * w))
    top = rng.integers(0, h - side_h + 1, n)
    left = rng.integers(0, w - side_w + 1, n)
    erase = np.asarray(rng.random(n) < aug.cutout_prob)
    rows, cols = np.arange(h), np.arange(w)
    in_row = (rows[None, :] >= top[:, None]) & (rows[None, :] < top[:, None] + side_h)
    in_col = (cols[None, :] >= left[:, None]) & (cols[None, :] < left[:, None] + side_w)
    hole = erase[:, None, None] & in_row[:, :, None] & in_col[:, None, :]
    views = np.where(hole[:, None, :, :], 0.0, views)
    return views.astype(np.float32)


def _affine(x: np.ndarray, angle: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Rotate by ``angle`` and scale about the centre, then shift by ``shift`` (rows, cols).

    Each output pixel samples the input at the inverse-mapped point, bilinearly; points outside
    the image read 0 (the digits' background).
    """
    n, c, h, w = x.shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)
    offset = grid[None, :, :] - centre - shift[:, None, :]  # (n, h*w, 2)
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]
    # Inverse map: rotate by -angle and divide by scale.
    src_r = (cos * offset[..., 0] + sin * offset[..., 1]) / scale[:, None] + centre[0]
    src_c = (-sin * offset[..., 0] + cos * offset[..., 1]) / scale[:, None] + centre[1]

    r0, c0 = np.floor(src_r).astype(np.int64), np.floor(src_c).astype(np.int64)
    fr, fc = src_r - r0, src_c - c0
    flat = x.reshape(n, c, h * w)
    out = np.zeros((n, c, h * w), dtype=np.float64)
    for dr, dc, weight in (
        (0, 0, (1 - fr) * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 0, fr * (1 - fc)),
        (1, 1, fr * fc),
    ):
        r, col = r0 + dr, c0 + dc
        inside = (r >= 0) & (r < h) & (col >= 0) & (col < w)
        index = np.where(inside, r * w + col, 0)
        values = np.take_along_axis(flat, index[:, None, :], axis=2)
        out += np.where(inside, weight, 0.0)[:, None, :] * values
    return out.reshape(n, c, h, w)
