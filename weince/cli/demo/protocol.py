"""What every training run of the demo shares, whatever the loss and the backend.

The hyperparameters (``Protocol``), the encoder's shapes and its initial weights (drawn in NumPy
from the seed, so the PyTorch and JAX runs of one seed start from the same weights), the
learning-rate schedule, and the stream of augmented view pairs (also NumPy, so both backends
see the same batches).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .augment import Augmentation, augment


@dataclass(frozen=True)
class Protocol:
    """The training and evaluation protocol, the same for every loss compared.

    The encoder is three 3 x 3 convolutions (``width``, ``2 width`` and ``4 width`` channels,
    the second with stride 2), ReLU, then a global average pool: its ``4 width`` outputs are the
    features that are evaluated. The projection head (``4 width -> 4 width -> projection_dim``,
    ReLU between) feeds the loss only.
    """

    # Tuned for InfoNCE alone, on a validation split carved out of the training images (see
    # the demo's docs); WEINCE then runs with these values and its published defaults.
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-2
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1
    temperature: float = 0.2  # a field every preset shares: the same value for every loss
    width: int = 32
    projection_dim: int = 64
    knn_ks: tuple[int, ...] = (1, 5, 20)
    augmentation: Augmentation = field(default_factory=Augmentation)

    @property
    def feature_dim(self) -> int:
        return 4 * self.width


def init_params(channels: int, protocol: Protocol, seed: int) -> dict[str, np.ndarray]:
    """The encoder's and head's initial weights, float32, named as the PyTorch module names them.

    Weights are He-uniform (``U(-b, b)``, ``b = sqrt(6 / fan_in)``, suited to ReLU), biases 0.
    Convolution weights are ``(out, in, 3, 3)``, linear weights ``(out, in)``.

    Args:
        channels: the images' channels.
        protocol: the shapes.
        seed: the seed of the draw.

    Returns:
        The weights by name.
    """
    rng = np.random.default_rng([seed, 0])
    w = protocol.width
    shapes = {
        "conv1": (w, channels, 3, 3),
        "conv2": (2 * w, w, 3, 3),
        "conv3": (4 * w, 2 * w, 3, 3),
        "head1": (4 * w, 4 * w),
        "head2": (protocol.projection_dim, 4 * w),
    }
    params = {}
    for name, shape in shapes.items():
        bound = math.sqrt(6.0 / math.prod(shape[1:]))
        params[f"{name}.weight"] = rng.uniform(-bound, bound, shape).astype(np.float32)
        params[f"{name}.bias"] = np.zeros(shape[0], dtype=np.float32)
    return params


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Full batches per epoch (the last partial batch is dropped: the loss wants a fixed N).

    Args:
        num_train: the training images.
        batch_size: pairs per batch.

    Returns:
        The number of steps.
    """
    return num_train // batch_size


def learning_rates(protocol: Protocol, total_steps: int) -> np.ndarray:
    """The learning rate of every step: linear warm-up, then a cosine decay towards 0.

    Args:
        protocol: the peak rate and the warm-up share.
        total_steps: the steps of the run.

    Returns:
        The rates, float32, one per step.
    """
    warmup = max(1, round(protocol.warmup_fraction * total_steps))
    step = np.arange(total_steps, dtype=np.float64)
    ramp = (step + 1) / warmup
    progress = np.clip((step - warmup + 1) / (total_steps - warmup + 1), 0.0, 1.0)
    cosine = 0.5 * (1.0 + np.cos(np.pi * progress))
    return (protocol.lr * np.where(step < warmup, ramp, cosine)).astype(np.float32)


def view_pairs(
    x_train: np.ndarray, protocol: Protocol, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of ``(view_1, view_2)`` batches: a random permutation, two views per image.

    Args:
        x_train: the training images.
        protocol: the batch size and augmentation.
        rng: the generator of the order and of the views.

    Yields:
        The pairs of views, each ``(batch_size, c, h, w)``.
    """
    order = rng.permutation(len(x_train))
    for step in range(steps_per_epoch(len(x_train), protocol.batch_size)):
        batch = x_train[order[step * protocol.batch_size : (step + 1) * protocol.batch_size]]
        yield augment(batch, rng, protocol.augmentation), augment(batch, rng, protocol.augmentation)


def data_rng(seed: int) -> np.random.Generator:
    """The generator of a run's batch order and augmentations (independent of the weights').

    Args:
        seed: the run's seed.

    Returns:
        The generator.
    """
    return np.random.default_rng([seed, 1])


def train_epochs(
    x_train: np.ndarray,
    protocol: Protocol,
    seed: int,
    step: Callable[[int, np.ndarray, np.ndarray], dict[str, Any]],
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Every training step of a run: ``step(index, view_1, view_2)`` on the seed's batches.

    ``step`` returns the step's record (``CURVE_KEYS`` to device arrays, read back by the caller
    once the run is over, so that steps do not wait on the host). ``progress`` is called once
    per step (``advance=1``) and shows the last loss at the end of each epoch (``note=``).

    Args:
        x_train: the training images.
        protocol: the epochs, batch size and augmentation.
        seed: the run's seed.
        step: one training step.
        progress: the ``update`` of ``weince.cli.output.progress_bar``, or ``None``.

    Returns:
        The records of every step.
    """
    rng = data_rng(seed)
    records: list[dict[str, Any]] = []
    for _ in range(protocol.epochs):
        for view_1, view_2 in view_pairs(x_train, protocol, rng):
            records.append(step(len(records), view_1, view_2))
            if progress is not None:
                progress(advance=1)
        if progress is not None and records:
            progress(note=f"loss {float(records[-1]['loss']):.3f}")
    return records


CURVE_KEYS = ("loss", "loss_blend", "lambda_mean", "frac_lambda_above_half", "beta_t")
"""The per-step training curves each backend records (``last_stats`` keys, plus the loss)."""


class UsageError(ValueError):
    """A flag's value cannot be used on this machine (a missing device or library)."""


@dataclass
class TrainResult:
    """One training run: the frozen features of the train and test images, and its curves."""

    features_train: np.ndarray
    features_test: np.ndarray
    curves: dict[str, np.ndarray]  # CURVE_KEYS and "lr", one value per step
    seconds: float
    # The trained encoder's projections of the test images (what the loss sees), float32.
    embeddings_test: np.ndarray | None = None
