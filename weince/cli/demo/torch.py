"""The demo's encoder and training loop in PyTorch, with ``weince_torch.WEINCELoss``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from weince_core import WEINCEConfig
from weince_torch import WEINCELoss

from .data import Split
from .protocol import (
    CURVE_KEYS,
    Protocol,
    TrainResult,
    UsageError,
    init_params,
    learning_rates,
    steps_per_epoch,
    train_epochs,
)

FEATURE_CHUNK = 1024  # images per forward pass when extracting features


class Encoder(nn.Module):
    """The protocol's CNN (``features``) and projection head (``forward`` = head(features))."""

    def __init__(self, channels: int, protocol: Protocol) -> None:
        super().__init__()
        w = protocol.width
        self.conv1 = nn.Conv2d(channels, w, 3, padding=1)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1)
        self.head1 = nn.Linear(4 * w, 4 * w)
        self.head2 = nn.Linear(4 * w, protocol.projection_dim)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The features (before the head): three convolutions, ReLU, average pool.

        Args:
            x: the images, ``(n, c, h, w)``.

        Returns:
            The features, ``(n, 4 width)``.
        """
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The projection head on the features: what the loss sees.

        Args:
            x: the images.

        Returns:
            The projections, ``(n, projection_dim)``.
        """
        return self.head2(torch.relu(self.head1(self.features(x))))


def resolve_device(name: str) -> torch.device:
    """``--device`` as a torch device; a clear error where it is absent.

    Args:
        name: the ``--device`` text.

    Returns:
        The device.
    """
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device {name!r} is not a torch device ({error})") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: this torch ({torch.__version__}) sees no CUDA device")
    return device


def build_encoder(channels: int, protocol: Protocol, seed: int, device: torch.device) -> Encoder:
    """The encoder with the seed's initial weights (``init_params``, shared with JAX).

    Args:
        channels: the images' channels.
        protocol: the shapes.
        seed: the seed of the weights.
        device: where the encoder lives.

    Returns:
        The encoder.
    """
    model = Encoder(channels, protocol)
    params = init_params(channels, protocol, seed)
    model.load_state_dict({name: torch.from_numpy(value) for name, value in params.items()})
    return model.to(device)


@torch.no_grad()
def extract_features(
    model: Encoder, x: np.ndarray, device: torch.device, *, projected: bool = False
) -> np.ndarray:
    """The encoder's features (before the head; after it with ``projected``) of un-augmented
    images, as float32 NumPy.

    Args:
        model: the encoder.
        x: the images.
        device: where to compute.
        projected: after the head rather than before it.

    Returns:
        The features, float32.
    """
    model.eval()
    encode = model if projected else model.features
    chunks = [
        encode(torch.from_numpy(x[start : start + FEATURE_CHUNK]).to(device)).cpu()
        for start in range(0, len(x), FEATURE_CHUNK)
    ]
    return torch.cat(chunks).numpy()


def initial_features(split: Split, protocol: Protocol, seed: int, device_name: str) -> TrainResult:
    """The untrained encoder's features: the reference a trained encoder must beat.

    Args:
        split: the images.
        protocol: the shapes and evaluation.
        seed: the seed of the initial weights.
        device_name: the ``--device`` text.

    Returns:
        A ``TrainResult`` with the features and no curves.
    """
    device = resolve_device(device_name)
    model = build_encoder(split.x_train.shape[1], protocol, seed, device)
    return TrainResult(
        extract_features(model, split.x_train, device),
        extract_features(model, split.x_test, device),
        curves={},
        seconds=0.0,
    )


def train_run(
    split: Split,
    config: WEINCEConfig,
    seed: int,
    protocol: Protocol,
    device_name: str,
    progress: Any = None,
) -> TrainResult:
    """Train the encoder with ``WEINCELoss(config)`` and return its frozen features and curves.

    Args:
        split: the images.
        config: the loss's configuration.
        seed: the seed of the weights and of the batches.
        protocol: the training protocol.
        device_name: the ``--device`` text.
        progress: the ``update`` of ``weince.cli.output.progress_bar``, or ``None``.

    Returns:
        The frozen features, the per-step curves, the seconds and the test projections.
    """
    device = resolve_device(device_name)
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build_encoder(split.x_train.shape[1], protocol, seed, device)
    criterion = WEINCELoss(config=config).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=protocol.lr, weight_decay=protocol.weight_decay
    )
    total_steps = protocol.epochs * steps_per_epoch(len(split.x_train), protocol.batch_size)
    lrs = learning_rates(protocol, total_steps)
    model.train()
    criterion.train()

    def step(index: int, view_1: np.ndarray, view_2: np.ndarray) -> dict[str, torch.Tensor]:
        for group in optimizer.param_groups:
            group["lr"] = float(lrs[index])
        # One forward pass for both views: the same as two, since nothing mixes the rows.
        z_i, z_j = model(torch.from_numpy(np.concatenate([view_1, view_2])).to(device)).chunk(2)
        loss = criterion(z_i, z_j)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        stats = criterion.last_stats
        return {"loss": loss.detach(), **{key: stats[key].detach() for key in CURVE_KEYS[1:]}}

    records = train_epochs(split.x_train, protocol, seed, step, progress)
    curves = {
        key: torch.stack([r[key] for r in records]).float().cpu().numpy() for key in CURVE_KEYS
    }
    curves["lr"] = lrs
    return TrainResult(
        extract_features(model, split.x_train, device),
        extract_features(model, split.x_test, device),
        curves,
        seconds=time.perf_counter() - start,
        embeddings_test=extract_features(model, split.x_test, device, projected=True),
    )
