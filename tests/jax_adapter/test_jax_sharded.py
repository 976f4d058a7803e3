"""Sharded WEINCE gives the single-device loss, gradients, statistics and state (issue 7).

The test session has one CPU device, so ``sharded_worker.py`` runs every case once, in a
subprocess with four host devices, and reports how far each sharded run is from the
single-device one (max relative differences, see the worker). A worker that fails fails every
test that reads it, with its stderr. The ``axis_name`` checks and a one-device mesh run here.

Tolerances: float64 1e-10 everywhere. float32 1e-6 on the loss, ``beta_t`` and the summary
statistics; gradients are sums with cancellation whose terms a sharded run adds in another
order, and differ by up to ~3e-6 of their largest entry (float64: ~1e-14), so 1e-5 on arrays.
Over Auto mesh axes XLA's partitioner rearranges the arithmetic more, and the gate ``lambda``
magnifies it: 1e-5 and 2e-4 there, below float32's own error on one device (its gradients and
``lambda`` are up to ~1e-4 from the float64 result).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytestmark = pytest.mark.slow  # starts processes
from jax.sharding import PartitionSpec as P  # noqa: E402

import weince_jax  # noqa: E402

WORKER = Path(__file__).with_name("sharded_worker.py")
FORMS = ["shard_map", "jit_explicit", "jit_auto"]
SCALARS = ["loss", "new_beta_t", "final_beta_t", "beta_t", "rho0", "lambda_mean", "loss_blend"]
ARRAYS = ["grad_z_i", "grad_z_j", "grad_params", "lambda"]  # lambda: per anchor


@pytest.fixture(scope="module")
def measured() -> dict[str, dict]:
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    try:
        result = subprocess.run(
            [sys.executable, str(WORKER)], capture_output=True, text=True, timeout=600, env=env
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{WORKER.name} timed out:\n{(error.stderr or b'')[-4000:]!r}")
    if result.returncode != 0:
        # An XLA abort prints its stack frames ("    @ 0x..."): keep the message above them.
        stderr = "\n".join(x for x in result.stderr.splitlines() if not x.lstrip().startswith("@ "))
        pytest.fail(f"{WORKER.name} exited with {result.returncode}:\n{stderr[-6000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def tolerances(form: str, dtype: str) -> tuple[float, float]:
    """``(scalars, arrays)``."""
    if dtype == "float64":
        return 1e-10, 1e-10
    return (1e-5, 2e-4) if form == "jit_auto" else (1e-6, 1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("form", FORMS)
def test_sharded_run_equals_one_device(measured, form, world_size, dtype):
    case = measured[f"{form}-{world_size}-{dtype}"]
    scalars, arrays = tolerances(form, dtype)
    too_far = {k: case[k] for k in SCALARS if not case[k] <= scalars}
    too_far.update({k: case[k] for k in ARRAYS if not case[k] <= arrays})
    assert not too_far, f"relative differences above {scalars} / {arrays}: {too_far}"
    # The statistics were not trivial: beta_t moved, some anchors' lambda is far from 0.
    assert case["beta_updated_steps"] >= 1
    assert case["lambda_scale"] > 0.1


@pytest.mark.parametrize("form", FORMS)
def test_sharded_computation_keeps_rows_on_their_devices(measured, form):
    for world_size in (2, 4):
        case = measured[f"{form}-{world_size}-float32"]
        assert case["collectives"] > 0, "compiled to one device's program"
        assert case["grad_z_rows"] == "data", case["grad_z_rows"]


@pytest.mark.parametrize("world_size", [2, 4])
def test_rows_on_the_wrong_device_give_another_loss(measured, world_size):
    # z_j's blocks rotated by one device: the comparison above could have failed.
    assert measured[f"shard_map-{world_size}-float64"]["misordered_loss"] > 1e-3


# In this session (one device): the axis_name checks, and a one-device mesh.


def one_device_case():
    config = weince_jax.WEINCEConfig.paper(min_tail=8, top_m=5, beta_min_tail=16)
    rng = np.random.default_rng(0)
    z_i = rng.normal(size=(12, 5))
    z_j = z_i + 0.5 * rng.normal(size=z_i.shape)
    return jax.numpy.asarray(z_i), jax.numpy.asarray(z_j), weince_jax.init_state(config), config


def test_axis_name_needs_shard_map_over_that_axis():
    z_i, z_j, state, config = one_device_case()
    with pytest.raises(ValueError, match=r"not bound here.*inside jax\.shard_map"):
        weince_jax.weince_loss(z_i, z_j, state, config, axis_name="data")
    with pytest.raises(ValueError, match="not bound here"):
        jax.jit(lambda a, b: weince_jax.weince_loss(a, b, state, config, axis_name="data"))(
            z_i, z_j
        )
    mesh = jax.make_mesh((1,), ("data",))
    rows = jax.sharding.NamedSharding(mesh, P("data", None))
    z_i, z_j = jax.device_put(z_i, rows), jax.device_put(z_j, rows)

    def local(axis_name, check_vma=True):
        return jax.shard_map(
            lambda a, b: weince_jax.weince_loss(a, b, state, config, axis_name=axis_name)[0],
            mesh=mesh,
            in_specs=(P("data"), P("data")),
            out_specs=P(),
            check_vma=check_vma,
        )

    with pytest.raises(ValueError, match="'model' is not bound here"):
        local("model")(z_i, z_j)
    with pytest.raises(TypeError, match="mesh axis name or a tuple"):
        local({"data"})(z_i, z_j)
    # Without shard_map's type checks JAX would transpose the replicated loss wrongly.
    with pytest.raises(ValueError, match="check_vma=True"):
        local("data", check_vma=False)(z_i, z_j)


def test_a_one_device_mesh_gives_the_plain_result():
    z_i, z_j, state, config = one_device_case()
    grad = jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True)
    (loss, (new_state, _)), (g_i, g_j) = grad(z_i, z_j, state, config)
    mesh = jax.make_mesh((1,), ("data",))

    def global_loss(a, b):
        return jax.shard_map(
            lambda a, b: weince_jax.weince_loss(a, b, state, config, axis_name=("data",))[0],
            mesh=mesh,
            in_specs=(P("data"), P("data")),
            out_specs=P(),
        )(a, b)

    rows = jax.sharding.NamedSharding(mesh, P("data", None))
    sharded_loss, (s_i, s_j) = jax.jit(jax.value_and_grad(global_loss, argnums=(0, 1)))(
        jax.device_put(z_i, rows), jax.device_put(z_j, rows)
    )
    np.testing.assert_allclose(sharded_loss, loss, rtol=1e-12)
    np.testing.assert_allclose(s_i, g_i, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(s_j, g_j, rtol=1e-10, atol=1e-14)
    # The plain call on rows split over a one-device Explicit axis takes the shard_map path.
    z_i, z_j = jax.device_put(z_i, rows), jax.device_put(z_j, rows)
    jaxpr = jax.make_jaxpr(weince_jax.weince_loss, static_argnums=3)(z_i, z_j, state, config)
    assert "shard_map" in str(jaxpr)
    (r_loss, (r_state, _)), (r_i, _) = jax.jit(grad, static_argnums=3)(z_i, z_j, state, config)
    np.testing.assert_allclose(r_loss, loss, rtol=1e-12)
    np.testing.assert_allclose(r_state.beta_t, new_state.beta_t, rtol=1e-12)
    np.testing.assert_allclose(r_i, g_i, rtol=1e-10, atol=1e-14)
