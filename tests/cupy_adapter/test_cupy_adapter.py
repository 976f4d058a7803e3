"""The CuPy adapter on a GPU: reference vectors, equality with NumPy, devices, DLPack.

Run on a CUDA machine with ``pytest -m gpu``; without CuPy or a GPU every test skips.
"""

from __future__ import annotations

import numpy as np
import pytest

import weince_core as wc
from weince_core.testing import (
    RTOL_FLOAT32,
    RTOL_FLOAT64,
    assert_close_normwise,
    assert_matches_golden_step,
)

cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
try:
    GPUS = cupy.cuda.runtime.getDeviceCount()
except cupy.cuda.runtime.CUDARuntimeError:
    GPUS = 0
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(GPUS == 0, reason="no CUDA device for CuPy"),
]
weince_cupy = pytest.importorskip("weince_cupy")

PRESETS = ["paper", "blend", "infonce"]


def random_pair(n=96, d=16, seed=0):
    rng = np.random.default_rng(seed)
    z_i = rng.normal(size=(n, d))
    return z_i, z_i + 0.5 * rng.normal(size=(n, d))


def test_reference_vectors_with_state_carried(golden):
    state = weince_cupy.init_state(golden.config)
    for t in range(golden.steps):
        ref = golden.step(t)
        z_i, z_j = cupy.asarray(ref["zi"]), cupy.asarray(ref["zj"])
        loss, (g_i, g_j), state, stats = weince_cupy.value_and_grad(z_i, z_j, state, golden.config)
        assert all(isinstance(a, cupy.ndarray) for a in (loss, g_i, g_j, state, *stats.values()))
        assert_matches_golden_step(
            golden,
            t,
            RTOL_FLOAT64,
            loss=loss,
            grads=(g_i, g_j),
            stats=stats,
            carried_beta_t=state,
            to_numpy=cupy.asnumpy,
        )


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_equals_the_numpy_core(preset, dtype):
    config = wc.WEINCEConfig.preset(preset)
    z_i, z_j = (z.astype(dtype) for z in random_pair())
    expected = wc.nt_xent_value_and_grad(z_i, z_j, np.asarray(config.beta_init), config)
    loss, (g_i, g_j), state, stats = weince_cupy.value_and_grad(
        cupy.asarray(z_i), cupy.asarray(z_j), weince_cupy.init_state(config), config
    )
    rtol = RTOL_FLOAT64 if dtype == "float64" else RTOL_FLOAT32
    assert g_i.dtype == z_i.dtype
    assert_close_normwise(loss.get(), expected[0], rtol, "loss")
    assert_close_normwise(g_i.get(), expected[1][0], rtol, "grad_i")
    assert_close_normwise(g_j.get(), expected[1][1], rtol, "grad_j")
    assert_close_normwise(state.get(), expected[2], rtol, "beta_t")
    assert_close_normwise(stats["lambda"].get(), expected[3]["lambda"], rtol, "lambda")


def test_forward_only_equals_value_and_grad():
    z_i, z_j = (cupy.asarray(z) for z in random_pair())
    state = weince_cupy.init_state()
    loss, new_state, _ = weince_cupy.weince_loss(z_i, z_j, state)
    loss2, _, new_state2, _ = weince_cupy.value_and_grad(z_i, z_j, state)
    assert float(loss) == float(loss2) and float(new_state) == float(new_state2)


def test_equals_the_torch_and_jax_adapters_through_dlpack():
    torch = pytest.importorskip("torch")
    weince_torch = pytest.importorskip("weince_torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    z_i, z_j = (cupy.asarray(z) for z in random_pair())
    loss, (g_i, _), _, _ = weince_cupy.value_and_grad(z_i, z_j, weince_cupy.init_state())
    t_i = torch.from_dlpack(z_i).clone().requires_grad_(True)
    t_j = torch.from_dlpack(z_j).clone().requires_grad_(True)
    criterion = weince_torch.WEINCELoss().to("cuda")
    t_loss = criterion(t_i, t_j)
    t_loss.backward()
    assert_close_normwise(t_loss.detach().cpu().numpy(), loss.get(), RTOL_FLOAT64, "torch loss")
    assert_close_normwise(t_i.grad.cpu().numpy(), g_i.get(), RTOL_FLOAT64, "torch grad")

    jax = pytest.importorskip("jax")
    weince_jax = pytest.importorskip("weince_jax")
    try:
        jax.devices("gpu")
    except RuntimeError:
        pytest.skip("JAX has no GPU device")
    j_i, j_j = jax.dlpack.from_dlpack(z_i), jax.dlpack.from_dlpack(z_j)
    config = wc.WEINCEConfig.paper()

    def loss_fn(a, b):
        return weince_jax.weince_loss(a, b, weince_jax.init_state(config), config=config)

    (j_loss, _), j_grad = jax.value_and_grad(loss_fn, has_aux=True)(j_i, j_j)
    assert_close_normwise(np.asarray(j_loss), loss.get(), RTOL_FLOAT64, "jax loss")
    assert_close_normwise(np.asarray(j_grad), g_i.get(), RTOL_FLOAT64, "jax grad")


def test_results_are_handed_to_torch_and_jax_without_copies():
    z_i, z_j = (cupy.asarray(z) for z in random_pair())
    _, (g_i, _), _, _ = weince_cupy.value_and_grad(z_i, z_j, weince_cupy.init_state())
    torch = pytest.importorskip("torch")
    as_torch = torch.from_dlpack(g_i)
    assert as_torch.data_ptr() == g_i.data.ptr
    jax = pytest.importorskip("jax")
    try:
        jax.devices("gpu")
    except RuntimeError:
        pytest.skip("JAX has no GPU device")
    as_jax = jax.dlpack.from_dlpack(g_i)
    assert as_jax.unsafe_buffer_pointer() == g_i.data.ptr
    back = cupy.from_dlpack(as_torch)
    assert back.data.ptr == g_i.data.ptr


def test_runs_on_the_inputs_device_and_stream():
    device = GPUS - 1  # a non-zero device where the machine has more than one
    if device == 0:
        pytest.skip("one GPU only: a non-zero device cannot be tested on this machine")
    with cupy.cuda.Device(device):
        z_i, z_j = (cupy.asarray(z) for z in random_pair())
        state = weince_cupy.init_state()
    loss, (g_i, _), new_state, _ = weince_cupy.value_and_grad(z_i, z_j, state)
    assert loss.device.id == device and g_i.device.id == device and new_state.device.id == device


def test_a_non_default_stream_gives_the_same_result():
    z_i, z_j = (cupy.asarray(z) for z in random_pair())
    state = weince_cupy.init_state()
    loss, _, _, _ = weince_cupy.value_and_grad(z_i, z_j, state)
    with cupy.cuda.Stream(non_blocking=True) as stream:
        loss2, _, _, _ = weince_cupy.value_and_grad(z_i, z_j, state)
        stream.synchronize()
    assert float(loss2) == float(loss)


def test_host_arrays_are_refused():
    z_i, z_j = random_pair()
    with pytest.raises(TypeError, match=r"z_i must be a cupy\.ndarray"):
        weince_cupy.value_and_grad(z_i, cupy.asarray(z_j), weince_cupy.init_state())
    with pytest.raises(TypeError, match=r"state must be a cupy\.ndarray"):
        weince_cupy.value_and_grad(cupy.asarray(z_i), cupy.asarray(z_j), np.asarray(4.0))


def test_init_state_takes_the_device_of_like_and_stays_float64():
    like = cupy.ones(3, dtype=cupy.float32)
    state = weince_cupy.init_state(like=like)
    assert state.shape == () and state.dtype == cupy.float64 and state.device == like.device
    with pytest.raises(TypeError, match=r"^like must be a cupy\.ndarray .*; got list$"):
        weince_cupy.init_state(like=[1.0])
