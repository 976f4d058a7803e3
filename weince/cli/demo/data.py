"""The demo's images: scikit-learn's digits or the user's ``.npz``, scaled and split.

Images are held as ``(n, c, h, w)`` float32 in ``[0, 1]`` (min-max over the whole set, so the
digits' 0..16 become 0..1 and uint8 images their usual 0..1), labels as ``0 .. C-1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_SEED = 0  # the train/test split never changes with the training seeds
TEST_FRACTION = 0.2


class DataError(ValueError):
    """The images given with ``--data`` cannot be used; the message says why."""


@dataclass(frozen=True)
class Dataset:
    """Images ``x`` ``(n, c, h, w)`` in ``[0, 1]``, integer labels ``y`` ``(n,)`` in ``0..C-1``."""

    name: str
    x: np.ndarray
    y: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class Split:
    """A fixed, stratified train/test split of one ``Dataset``."""

    dataset: Dataset
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_dataset() -> Dataset:
    """scikit-learn's handwritten digits: 1,797 images of 8 x 8, 10 classes, no download.

    Returns:
        The dataset, scaled to ``[0, 1]``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None, :, :]
    return _scaled("digits (scikit-learn)", x, digits.target, digits.target_names)


def load_npz_dataset(path: str | Path) -> Dataset:
    """Images from an ``.npz`` holding ``x`` ``(n, h, w)`` or ``(n, h, w, c)`` and labels ``y``.

    Args:
        path: the ``.npz`` file.

    Returns:
        The dataset, scaled to ``[0, 1]``, channels first.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{path} is not a readable .npz file ({error})") from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path} holds one array, not an .npz archive of 'x' and 'y'")
    with archive:
        missing = [key for key in ("x", "y") if key not in archive.files]
        if missing:
            raise DataError(
                f"{path} has no array named {missing[0]!r} (it holds {sorted(archive.files)}); "
                "it needs 'x' (n, h, w) or (n, h, w, c) images and 'y' (n,) labels"
            )
        try:
            x, y = archive["x"], archive["y"]
        except ValueError as error:  # object arrays: loading them would need pickle
            raise DataError(f"'x' and 'y' must be numeric (or string) arrays ({error})") from error
    if x.ndim not in (3, 4):
        raise DataError(f"'x' must have shape (n, h, w) or (n, h, w, c); got {x.shape}")
    if not (np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)):
        raise DataError(f"'x' must hold real numbers; got dtype {x.dtype}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"'y' must have shape ({x.shape[0]},), one label per image; got {y.shape}")
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError("'x' holds NaN or infinite values")
    x = x[:, None, :, :] if x.ndim == 3 else np.moveaxis(x, 3, 1)
    classes, y = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"'y' must hold at least 2 classes; got {len(classes)}")
    return _scaled(path.name, x, y, classes)


def _scaled(name: str, x: np.ndarray, y: np.ndarray, classes: np.ndarray) -> Dataset:
    low, high = float(x.min()), float(x.max())
    x = (x - low) / (high - low) if high > low else np.zeros_like(x)
    class_names = tuple(str(c) for c in classes)
    return Dataset(name, np.ascontiguousarray(x, np.float32), y.astype(np.int64), class_names)


def split_dataset(dataset: Dataset, test_fraction: float = TEST_FRACTION) -> Split:
    """A stratified train/test split with a fixed seed (``SPLIT_SEED``).

    Args:
        dataset: the images and labels.
        test_fraction: the share of the images held out for the test.

    Returns:
        The split.
    """
    from sklearn.model_selection import train_test_split

    counts = np.bincount(dataset.y, minlength=dataset.num_classes)
    if counts.min() < 2:
        rare = dataset.class_names[int(np.argmin(counts))]
        raise DataError(f"every class needs 2 images or more to be split; class {rare!r} has 1")
    n_test = max(round(test_fraction * len(dataset.y)), dataset.num_classes)
    if len(dataset.y) - n_test < dataset.num_classes:
        raise DataError(
            f"{len(dataset.y)} images are too few to split {dataset.num_classes} classes"
        )
    x_train, x_test, y_train, y_test = train_test_split(
        dataset.x, dataset.y, test_size=n_test, random_state=SPLIT_SEED, stratify=dataset.y
    )
    return Split(dataset, x_train, y_train, x_test, y_test)
