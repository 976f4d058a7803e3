"""``weince_jax`` gives the numbers of the core on NumPy and of PyTorch, on random inputs, float64.

Two steps per preset, the state carried: loss, both gradients, every statistic and the new state.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")

import weince_core as wc  # noqa: E402
import weince_jax  # noqa: E402
from weince_core.testing import RTOL_FLOAT64, assert_close_normwise  # noqa: E402
from weince_jax import WEINCEConfig  # noqa: E402

PRESETS = ["paper", "blend", "infonce"]
STAT_KEYS = sorted(wc.nt_xent(np.ones((2, 1)), np.ones((2, 1)), np.float64(4.0), WEINCEConfig())[2])


def batches(seed: int, n: int = 40, d: int = 7, steps: int = 2) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        z_i = rng.normal(size=(n, d))
        out.append((z_i, z_i + 0.6 * rng.normal(size=(n, d))))
    return out


# One compiled step for every test (one compilation per config and shape).
STEP = jax.jit(jax.value_and_grad(weince_jax.weince_loss, argnums=(0, 1), has_aux=True))


def jax_steps(config: WEINCEConfig, data) -> list[dict[str, np.ndarray]]:
    state, results = weince_jax.init_state(config), []
    for z_i, z_j in data:
        (loss, (state, stats)), (g_i, g_j) = STEP(jnp.asarray(z_i), jnp.asarray(z_j), state, config)
        results.append(record(loss, g_i, g_j, state.beta_t, stats, np.asarray))
    return results


def record(loss, g_i, g_j, state, stats, to_numpy) -> dict[str, np.ndarray]:
    out = {"loss": loss, "grad_i": g_i, "grad_j": g_j, "state": state}
    out.update({f"stats[{key}]": stats[key] for key in STAT_KEYS})
    return {key: np.asarray(to_numpy(value), dtype=np.float64) for key, value in out.items()}


def assert_same_results(actual: list[dict], expected: list[dict], what: str) -> None:
    for t, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.keys() == e.keys()
        for key in e:
            where = f"{what}, step {t}, {key}"
            np.testing.assert_array_equal(np.isnan(a[key]), np.isnan(e[key]), err_msg=where)
            finite = ~np.isnan(e[key])
            if finite.any():
                assert_close_normwise(a[key][finite], e[key][finite], RTOL_FLOAT64, where)


def core_steps(config: WEINCEConfig, data, asarray, to_numpy) -> list[dict[str, np.ndarray]]:
    state, results = wc.init_state(config, like=asarray(data[0][0])), []
    for z_i, z_j in data:
        loss, (g_i, g_j), state, stats = wc.nt_xent_value_and_grad(
            asarray(z_i), asarray(z_j), state, config
        )
        results.append(record(loss, g_i, g_j, state, stats, to_numpy))
    return results


@pytest.mark.parametrize("preset", PRESETS)
def test_jax_equals_the_core_on_numpy(preset):
    config = WEINCEConfig.preset(preset)
    data = batches(seed=PRESETS.index(preset))
    expected = core_steps(config, data, np.asarray, np.asarray)
    if preset == "paper":
        assert expected[0]["stats[beta_updated]"] == 1, "these inputs should move beta_t"
    assert_same_results(jax_steps(config, data), expected, f"{preset} vs NumPy")


@pytest.mark.parametrize("preset", PRESETS)
def test_jax_equals_the_core_on_torch_tensors(preset):
    torch = pytest.importorskip("torch")
    config = WEINCEConfig.preset(preset)
    data = batches(seed=10 + PRESETS.index(preset))
    expected = core_steps(
        config, data, lambda a: torch.asarray(a, dtype=torch.float64), lambda t: t.numpy()
    )
    assert_same_results(jax_steps(config, data), expected, f"{preset} vs the core on torch")


@pytest.mark.parametrize("preset", PRESETS)
def test_jax_equals_the_pytorch_adapter(preset):
    torch = pytest.importorskip("torch")
    weince_torch = pytest.importorskip("weince_torch")
    if not hasattr(weince_torch, "weince_loss"):
        pytest.skip("weince_torch has no weince_loss yet (the PyTorch adapter is in progress)")
    config = WEINCEConfig.preset(preset)
    data = batches(seed=20 + PRESETS.index(preset))
    state, expected = weince_torch.init_state(config), []
    for z_i, z_j in data:
        t_i = torch.tensor(z_i, requires_grad=True)
        t_j = torch.tensor(z_j, requires_grad=True)
        loss, state, stats = weince_torch.weince_loss(t_i, t_j, state, config)
        loss.backward()
        expected.append(
            record(loss, t_i.grad, t_j.grad, state, stats, lambda t: t.detach().numpy())
        )
    assert_same_results(jax_steps(config, data), expected, f"{preset} vs weince_torch")
