"""Sharded WEINCE on 4 host CPU devices against one device; run by test_jax_sharded.py.

Needs ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (and ``JAX_PLATFORMS=cpu``) set
before JAX starts, hence a subprocess. Every case runs ``STEPS`` training steps of a small
encoder on one device and on ``W`` devices, and measures how far the sharded run is from the
single-device one: printed as one JSON line, ``{case: {quantity: max relative difference}}``,
the difference ``max|sharded - single| / max|single|`` (NaNs must match).

Cases: ``form`` x ``W`` x ``dtype``, with the forms

* ``shard_map``: ``weince_loss(..., axis_name="data")`` inside ``jax.shard_map``; the gradient
  with respect to the sharded ``z`` is taken outside the ``shard_map`` (its loss output is
  ``P()``), the parameters' gradient inside it, as in data-parallel training, with no ``psum``.
* ``jit_explicit``: the plain ``weince_loss`` under ``jax.jit`` on arrays sharded
  ``P("data", None)`` over a mesh of Explicit axes (``jax.make_mesh``'s default).
* ``jit_auto``: the same over a mesh of Auto axes (XLA's partitioner shards the computation).
"""

from __future__ import annotations

import json
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import weince_jax
from weince_jax import WEINCEConfig

CONFIG = WEINCEConfig.paper().replace(min_tail=8, top_m=6, beta_min_tail=64)
N, D_IN, D_HIDDEN, D_OUT = 32, 5, 8, 6
STEPS = 3
SUMMARY = ("lambda_mean", "rho0", "beta_t", "loss_blend")
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def encode(params, x):
    return jnp.tanh(x @ params["w1"]) @ params["w2"]


def loss_of(params, x_i, x_j, state, **kwargs):
    return weince_jax.weince_loss(encode(params, x_i), encode(params, x_j), state, CONFIG, **kwargs)


def one_device_step(params, x_i, x_j, state):
    """``(loss, new_state, stats, (dL/dz_i, dL/dz_j), dL/dparams)``; on one device, or under
    ``jax.jit`` on sharded arrays (the forms ``jit_explicit`` and ``jit_auto``)."""
    z_i, z_j = encode(params, x_i), encode(params, x_j)
    (loss, (new_state, stats)), z_grads = jax.value_and_grad(
        weince_jax.weince_loss, argnums=(0, 1), has_aux=True
    )(z_i, z_j, state, CONFIG)
    param_grads = jax.grad(lambda p: loss_of(p, x_i, x_j, state)[0])(params)
    return loss, new_state, stats, z_grads, param_grads


def shard_map_step(mesh):
    """The same results from the ``shard_map`` form over the mesh axis ``"data"``."""
    rows = P("data")

    def local(params, x_i, x_j, state):
        # Data-parallel training: the gradient inside shard_map is already that of the global
        # loss (JAX sums the replicated parameters' cotangents itself), no psum or pmean.
        (loss, (new_state, stats)), grads = jax.value_and_grad(loss_of, has_aux=True)(
            params, x_i, x_j, state, axis_name="data"
        )
        summary = {k: v for k, v in stats.items() if v.ndim == 0}
        return loss, new_state, summary, stats["lambda"], grads

    train = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(), rows, rows, P()),
        out_specs=(P(), P(), P(), rows, P()),
    )

    def global_loss(z_i, z_j, state):
        return jax.shard_map(
            lambda a, b, s: weince_jax.weince_loss(a, b, s, CONFIG, axis_name="data")[0],
            mesh=mesh,
            in_specs=(rows, rows, P()),
            out_specs=P(),
        )(z_i, z_j, state)

    def step(params, x_i, x_j, state):
        loss, new_state, summary, lam, param_grads = train(params, x_i, x_j, state)
        # The gradient with respect to the sharded global z, taken outside the shard_map.
        z_grads = jax.grad(global_loss, argnums=(0, 1))(
            encode(params, x_i), encode(params, x_j), state
        )
        return loss, new_state, {**summary, "lambda": lam}, z_grads, param_grads

    return step


def difference(sharded, single) -> float:
    sharded, single = np.asarray(sharded, np.float64), np.asarray(single, np.float64)
    if not np.array_equal(np.isnan(sharded), np.isnan(single)):
        return float("inf")
    keep = ~np.isnan(single)
    if not keep.any():
        return 0.0
    scale = max(float(np.max(np.abs(single[keep]))), 1e-300)
    return float(np.max(np.abs(sharded[keep] - single[keep])) / scale)


def device_order(per_anchor, world_size: int):
    """Single-device per-anchor values in the order shard_map returns them with out_specs
    P("data"): device 0's z_i rows, its z_j rows, device 1's z_i rows, ..."""
    n = per_anchor.shape[0] // 2 // world_size
    return np.asarray(per_anchor).reshape(2, world_size, n).transpose(1, 0, 2).reshape(-1)


def batches(dtype, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {
        "w1": jnp.asarray(rng.normal(size=(D_IN, D_HIDDEN)) / D_IN**0.5, dtype),
        "w2": jnp.asarray(rng.normal(size=(D_HIDDEN, D_OUT)) / D_HIDDEN**0.5, dtype),
    }
    steps = []
    for _ in range(STEPS):
        x_i = rng.normal(size=(N, D_IN))
        x_j = x_i + 0.3 * rng.normal(size=x_i.shape)
        steps.append((jnp.asarray(x_i, dtype), jnp.asarray(x_j, dtype)))
    return params, steps


def run_case(form: str, world_size: int, dtype, reference) -> dict[str, float | str | bool]:
    axis_type = AxisType.Auto if form == "jit_auto" else AxisType.Explicit
    mesh = jax.make_mesh(
        (world_size,), ("data",), axis_types=(axis_type,), devices=jax.devices()[:world_size]
    )
    params, steps = batches(dtype)
    replicated, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data", None))
    params = jax.device_put(params, replicated)
    state = jax.device_put(weince_jax.init_state(CONFIG), replicated)
    step = jax.jit(shard_map_step(mesh) if form == "shard_map" else one_device_step)
    result: dict[str, float | str | bool] = {}
    worst: dict[str, float] = {}
    for t, (x_i, x_j) in enumerate(steps):
        x_i, x_j = jax.device_put(x_i, rows), jax.device_put(x_j, rows)
        loss, state, stats, (g_i, g_j), g_params = step(params, x_i, x_j, state)
        ref_loss, ref_state, ref_stats, (ref_i, ref_j), ref_params = reference[t]
        lam = ref_stats["lambda"]
        measured = {
            "loss": difference(loss, ref_loss),
            "new_beta_t": difference(state.beta_t, ref_state.beta_t),
            "grad_z_i": difference(g_i, ref_i),
            "grad_z_j": difference(g_j, ref_j),
            "grad_params": max(difference(g_params[k], ref_params[k]) for k in ref_params),
            "lambda": difference(
                stats["lambda"], device_order(lam, world_size) if form == "shard_map" else lam
            ),
            **{k: difference(stats[k], ref_stats[k]) for k in SUMMARY},
        }
        for key, value in measured.items():
            worst[key] = max(worst.get(key, 0.0), value)
        if t == 0:
            # The gradient is split like z: rows over "data", columns whole.
            spec = tuple(g_i.sharding.spec) + (None,) * g_i.ndim
            result["grad_z_rows"] = spec[0] if spec[1] is None else str(spec[:2])
            lowered = step.lower(params, x_i, x_j, state).compile().as_text()
            result["collectives"] = sum(len(re.findall(rf"\b{c}\b", lowered)) for c in COLLECTIVES)
    result.update(worst)
    result["final_beta_t"] = difference(state.beta_t, reference[-1][1].beta_t)
    result["lambda_scale"] = float(np.max(np.abs(np.asarray(reference[0][2]["lambda"]))))
    if form == "shard_map":
        # The comparison can fail: z_j's blocks on the wrong devices give another loss.
        x_i, x_j = steps[0]
        x_j = jnp.roll(x_j, N // world_size, axis=0)
        shuffled_loss = step(params, *(jax.device_put(x, rows) for x in (x_i, x_j)), state)[0]
        result["misordered_loss"] = difference(shuffled_loss, reference[0][0])
    return result


def run_dtype(dtype) -> dict[str, dict]:
    params, steps = batches(dtype)
    state = weince_jax.init_state(CONFIG)  # float32, or float64 with x64 (main turns it on)
    single = jax.jit(one_device_step)
    reference, updated = [], []
    for x_i, x_j in steps:
        out = jax.device_get(single(params, x_i, x_j, state))
        state = out[1]
        reference.append(out)
        updated.append(bool(out[2]["beta_updated"]))
    results = {}
    for form in ("shard_map", "jit_explicit", "jit_auto"):
        for world_size in (2, 4):
            case = run_case(form, world_size, dtype, reference)
            case["beta_updated_steps"] = sum(updated)
            results[f"{form}-{world_size}-{jnp.dtype(dtype).name}"] = case
    return results


def main() -> None:
    if jax.device_count() < 4:
        raise SystemExit(f"needs 4 devices (XLA_FLAGS); got {jax.devices()}")
    jax.config.update("jax_default_matmul_precision", "highest")
    results = run_dtype(jnp.float32)  # JAX's default: x64 off
    jax.config.update("jax_enable_x64", True)
    results.update(run_dtype(jnp.float64))
    sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
    main()
