"""The demo's encoder and training loop in JAX (optax AdamW), with ``weince_jax.weince_loss``.

The same network, initial weights, batches, optimiser and schedule as ``demo_torch``: only the
framework differs. One training step is one ``jax.jit``-compiled function.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import weince_jax
from weince_core import WEINCEConfig

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

Params = dict[str, jax.Array]
FEATURE_CHUNK = 1024  # images per forward pass when extracting features (the last is padded)


def _conv(x: jax.Array, params: Params, name: str, stride: int) -> jax.Array:
    y = jax.lax.conv_general_dilated(
        x,
        params[f"{name}.weight"],
        window_strides=(stride, stride),
        padding=((1, 1), (1, 1)),
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )
    return y + params[f"{name}.bias"][None, :, None, None]


def _linear(h: jax.Array, params: Params, name: str) -> jax.Array:
    return h @ params[f"{name}.weight"].T + params[f"{name}.bias"]


def features(params: Params, x: jax.Array) -> jax.Array:
    """The encoder's features (before the head): three convolutions, ReLU, average pool.

    Args:
        params: the weights, named as ``init_params`` names them.
        x: the images, ``(n, c, h, w)``.

    Returns:
        The features, ``(n, 4 width)``.
    """
    h = jax.nn.relu(_conv(x, params, "conv1", 1))
    h = jax.nn.relu(_conv(h, params, "conv2", 2))
    h = jax.nn.relu(_conv(h, params, "conv3", 1))
    return jnp.mean(h, axis=(2, 3))


def projection(params: Params, x: jax.Array) -> jax.Array:
    """The projection head on the features: what the loss sees.

    Args:
        params: the weights.
        x: the images.

    Returns:
        The projections, ``(n, projection_dim)``.
    """
    return _linear(jax.nn.relu(_linear(features(params, x), params, "head1")), params, "head2")


_features_jit = jax.jit(features)
_projection_jit = jax.jit(projection)


def resolve_device(name: str) -> jax.Device:
    """``--device`` as a JAX device (``cuda`` and ``cuda:1`` name JAX's GPUs).

    Args:
        name: the ``--device`` text.

    Returns:
        The device.
    """
    platform, _, index = name.partition(":")
    platform = "gpu" if platform == "cuda" else platform
    try:
        devices = jax.devices(platform)
    except RuntimeError as error:
        raise UsageError(f"--device {name}: JAX has no {platform} device ({error})") from error
    position = int(index) if index.isdigit() else 0
    if position >= len(devices):
        raise UsageError(f"--device {name}: JAX sees {len(devices)} {platform} device(s)")
    return devices[position]


def _device_params(channels: int, protocol: Protocol, seed: int, device: jax.Device) -> Params:
    return {
        name: jax.device_put(value, device)
        for name, value in init_params(channels, protocol, seed).items()
    }


def extract_features(
    params: Params, x: np.ndarray, device: jax.Device, *, projected: bool = False
) -> np.ndarray:
    """The features (before the head; after it with ``projected``) of un-augmented images, as
    float32 NumPy (fixed-size chunks: one compile).

    Args:
        params: the weights.
        x: the images.
        device: where to compute.
        projected: after the head rather than before it.

    Returns:
        The features, float32.
    """
    encode = _projection_jit if projected else _features_jit
    chunk = min(FEATURE_CHUNK, len(x))
    out = []
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk]
        padded = np.concatenate([part, np.zeros((chunk - len(part), *x.shape[1:]), x.dtype)])
        out.append(np.asarray(encode(params, jax.device_put(padded, device)))[: len(part)])
    return np.concatenate(out).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _training_step(
    config: WEINCEConfig, protocol: Protocol, total_steps: int
) -> tuple[optax.GradientTransformation, Any]:
    """AdamW with the protocol's schedule, and the jitted step; cached, so seeds share a compile."""
    lrs = learning_rates(protocol, total_steps)  # a constant of the compiled step
    optimizer = optax.adamw(
        lambda count: jnp.asarray(lrs)[jnp.minimum(count, total_steps - 1)],
        b1=0.9,
        b2=0.999,
        eps=1e-8,
        weight_decay=protocol.weight_decay,
    )  # the defaults of torch.optim.AdamW

    def loss_fn(params: Params, views: jax.Array, loss_state: Any) -> Any:
        z_i, z_j = jnp.split(projection(params, views), 2)
        return weince_jax.weince_loss(z_i, z_j, loss_state, config=config)

    @jax.jit
    def train_step(params: Params, opt_state: Any, loss_state: jax.Array, views: jax.Array) -> Any:
        (loss, (loss_state, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, views, loss_state
        )
        updates, opt_state = optimizer.update(grads, opt_state, params)
        record = {"loss": loss, **{key: stats[key] for key in CURVE_KEYS[1:]}}
        return optax.apply_updates(params, updates), opt_state, loss_state, record

    return optimizer, train_step


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
    params = _device_params(split.x_train.shape[1], protocol, seed, device)
    return TrainResult(
        extract_features(params, split.x_train, device),
        extract_features(params, split.x_test, device),
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
    """Train the encoder with ``weince_jax.weince_loss`` and return its features and curves.

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
    start = time.perf_counter()
    params = _device_params(split.x_train.shape[1], protocol, seed, device)
    total_steps = protocol.epochs * steps_per_epoch(len(split.x_train), protocol.batch_size)
    optimizer, train_step = _training_step(config, protocol, total_steps)
    opt_state = optimizer.init(params)
    loss_state = weince_jax.init_state(config, like=jax.tree_util.tree_leaves(params)[0])

    def step(index: int, view_1: np.ndarray, view_2: np.ndarray) -> dict[str, jax.Array]:
        nonlocal params, opt_state, loss_state
        views = jax.device_put(np.concatenate([view_1, view_2]), device)
        params, opt_state, loss_state, record = train_step(params, opt_state, loss_state, views)
        return record

    host = jax.device_get(train_epochs(split.x_train, protocol, seed, step, progress))
    curves = {key: np.array([r[key] for r in host], dtype=np.float32) for key in CURVE_KEYS}
    curves["lr"] = learning_rates(protocol, total_steps)
    return TrainResult(
        extract_features(params, split.x_train, device),
        extract_features(params, split.x_test, device),
        curves,
        seconds=time.perf_counter() - start,
        embeddings_test=extract_features(params, split.x_test, device, projected=True),
    )
