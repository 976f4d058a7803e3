"""The two-tower form on 2 host CPU devices against one device; run by test_jax_forms.py.

Needs ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` before JAX starts, hence a
subprocess. Two steps (``beta_t`` carried), float64: the loss, the gradients of ``x``, ``y``
and ``logit_scale``, the state and the statistics, sharded (``shard_map`` with ``axis_name``;
``jit`` on rows sharded over an Explicit mesh axis) against one device. Prints one JSON line:
``{how: {"differences": {quantity: max relative difference}, ...}}``.
"""

from __future__ import annotations

import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import weince_jax
from weince_jax import WEINCEConfig

CONFIG = WEINCEConfig.paper(min_tail=8, top_m=6, beta_min_tail=64)
N, D, STEPS, WORLD = 16, 6, 2, 2
SUMMARY = ("lambda_mean", "rho0", "beta_t", "loss_blend", "loss_weibit")
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def batches():
    rng = np.random.default_rng(3)
    out = []
    for _ in range(STEPS):
        x = rng.normal(size=(N, D))
        out.append((jnp.asarray(x), jnp.asarray(x + 0.5 * rng.normal(size=(N, D)))))
    return out


def one_device(x, y, logit_scale, state):
    def loss(x, y, logit_scale):
        return weince_jax.two_tower(x, y, state, CONFIG, scale=jnp.exp(logit_scale))

    (value, (new_state, stats)), grads = jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(
        x, y, logit_scale
    )
    return value, new_state, stats, grads


def shard_map_step(mesh):
    rows = P("data")

    def global_loss(x, y, logit_scale, state):
        def local(x, y, logit_scale, state):
            value, (new_state, stats) = weince_jax.two_tower(
                x, y, state, CONFIG, scale=jnp.exp(logit_scale), axis_name="data"
            )
            summary = {k: v for k, v in stats.items() if v.ndim == 0}
            return value, (new_state, summary, stats["lambda"])

        return jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(rows, rows, P(), P()),
            out_specs=(P(), (P(), P(), rows)),
        )(x, y, logit_scale, state)

    def step(x, y, logit_scale, state):
        (value, (new_state, summary, lam)), grads = jax.value_and_grad(
            global_loss, (0, 1, 2), has_aux=True
        )(x, y, logit_scale, state)
        return value, new_state, {**summary, "lambda": lam}, grads

    return step


def device_order(per_row):
    """One device's per-row values in shard_map's order: device 0's x rows, its y rows, ..."""
    n = per_row.shape[0] // 2 // WORLD
    return np.asarray(per_row).reshape(2, WORLD, n).transpose(1, 0, 2).reshape(-1)


def difference(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    keep = ~np.isnan(b)
    if not keep.any():
        return 0.0
    return float(np.max(np.abs(a[keep] - b[keep])) / max(float(np.max(np.abs(b[keep]))), 1e-300))


def main() -> None:
    if jax.device_count() < WORLD:
        raise SystemExit(f"needs {WORLD} devices (XLA_FLAGS); got {jax.devices()}")
    jax.config.update("jax_enable_x64", True)
    mesh = jax.make_mesh((WORLD,), ("data",), devices=jax.devices()[:WORLD])
    replicated, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data", None))
    logit_scale = jnp.asarray(2.0)
    reference, state, updated = [], weince_jax.init_state(CONFIG), False
    single = jax.jit(one_device)
    for x, y in batches():
        out = jax.device_get(single(x, y, logit_scale, state))
        state = out[1]
        updated = updated or bool(out[2]["beta_updated"])
        reference.append(out)
    results = {}
    for how, step in (("shard_map", shard_map_step(mesh)), ("jit_explicit", one_device)):
        step = jax.jit(step)
        state = jax.device_put(weince_jax.init_state(CONFIG), replicated)
        scale = jax.device_put(logit_scale, replicated)
        worst: dict[str, float] = {}
        collectives = 0
        for t, (x, y) in enumerate(batches()):
            x, y = jax.device_put(x, rows), jax.device_put(y, rows)
            value, state, stats, grads = step(x, y, scale, state)
            ref_value, ref_state, ref_stats, ref_grads = reference[t]
            lam = device_order(ref_stats["lambda"]) if how == "shard_map" else ref_stats["lambda"]
            measured = {
                "loss": difference(value, ref_value),
                "beta_t carried": difference(state.beta_t, ref_state.beta_t),
                "grad_x": difference(grads[0], ref_grads[0]),
                "grad_y": difference(grads[1], ref_grads[1]),
                "grad_logit_scale": difference(grads[2], ref_grads[2]),
                "lambda": difference(stats["lambda"], lam),
                **{k: difference(stats[k], ref_stats[k]) for k in SUMMARY},
            }
            for key, value in measured.items():
                worst[key] = max(worst.get(key, 0.0), value)
            if t == 0:
                text = step.lower(x, y, scale, state).compile().as_text()
                collectives = sum(len(re.findall(rf"\b{c}\b", text)) for c in COLLECTIVES)
        results[how] = {"differences": worst, "beta_updated": updated, "collectives": collectives}
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
