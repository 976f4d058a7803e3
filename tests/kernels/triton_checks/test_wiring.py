"""The kernels wired into the core: the PyTorch loss through them equals the NumPy float64 core."""

from __future__ import annotations

import numpy as np
import pytest

import weince_core as wc
from weince_core import WEINCEConfig, _fast_torch, ops
from weince_core.testing import assert_close_normwise


def _torch_step(z_i, z_j, config, device):
    import torch

    import weince_torch

    a = torch.tensor(z_i, dtype=torch.float32, device=device, requires_grad=True)
    b = torch.tensor(z_j, dtype=torch.float32, device=device, requires_grad=True)
    state = weince_torch.init_state(config, like=a)
    loss, beta_t, stats = weince_torch.weince_loss(a, b, state, config)
    loss.backward()
    return [x.detach().cpu().numpy() for x in (loss, a.grad, b.grad, beta_t, stats["lambda"])]


@pytest.mark.parametrize("preset", ["paper", "infonce"])
@pytest.mark.parametrize("copies", [False, True])
def test_loss_and_gradient_through_the_kernels(kernel_hooks, preset, copies):
    """Without copies, equal to the NumPy float64 core; with copies (similarities at the cap,
    ties in the selection), equal to the framework path in float32, the kernels' dtype (float32
    and float64 differ there by more than float32's tolerance on either path)."""
    calls: list[str] = []
    for name, hooks in ops._KERNELS.items():

        def counted(*args, _hooks=tuple(hooks), _name=name):
            result = next((r for r in (h(*args) for h in _hooks) if r is not None), None)
            calls.append(_name if result is not None else "")
            return result

        ops._KERNELS[name] = [counted]

    rng = np.random.default_rng(7)
    z_i, z_j = rng.normal(size=(12, 5)), rng.normal(size=(12, 5))
    if copies:
        z_j[:3] = z_i[:3]
        z_j[5] = z_j[4]
    config = WEINCEConfig.preset(preset)
    got = _torch_step(z_i, z_j, config, kernel_hooks.device)
    assert "row_pass" in calls and ("top_k" in calls or preset == "infonce"), calls
    if copies:
        hooks = {name: list(kernels) for name, kernels in ops._KERNELS.items()}
        ops._KERNELS.clear()
        want = _torch_step(z_i, z_j, config, kernel_hooks.device)
        ops._KERNELS.update(hooks)
    else:
        state = np.asarray(config.beta_init)
        loss, (g_i, g_j), beta_t, stats = wc.nt_xent_value_and_grad(z_i, z_j, state, config)
        want = [loss, g_i, g_j, beta_t, stats["lambda"]]
    for what, actual, expected in zip(
        ["loss", "dL/dz_i", "dL/dz_j", "beta_t", "lambda"], got, want, strict=True
    ):
        assert_close_normwise(actual, expected, 1e-5, what)


def test_hooks_decline_what_the_kernels_do_not_handle(kernel_hooks):
    import torch

    x = torch.rand((4, 10), dtype=torch.float64, device=kernel_hooks.device)
    assert ops.kernel_result("top_k", x, 3, None, 0.999) is None  # float64: the framework path
    assert ops.kernel_result("top_k", np.zeros((4, 10)), 3, None, 0.999) is None  # not torch


def test_the_kernels_trace_under_torch_compile_fullgraph(kernel_hooks, monkeypatch):
    """Dynamo traces the custom ops (their fake versions give the shapes) with no graph break;
    the compiled step equals the eager one.

    The core's check of PyTorch's matmul precision settings
    (``_fast_torch.reduced_precision``, which Dynamo cannot trace at this commit) is fixed to
    full precision: this test is about the kernels; the compiled float32 criterion has its own
    test in tests/torch_adapter.
    """
    import torch

    import weince_torch

    monkeypatch.setattr(_fast_torch, "reduced_precision", lambda like: False)

    config = WEINCEConfig.preset("paper")
    device = kernel_hooks.device
    z = torch.tensor(np.random.default_rng(3).normal(size=(2, 12, 5)), dtype=torch.float32)
    z = z.to(device)
    state = weince_torch.init_state(config, like=z)

    def step(z_i, z_j):
        return weince_torch.weince_loss(z_i, z_j, state, config)[0]

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    assert_close_normwise(compiled(z[0], z[1]).cpu(), step(z[0], z[1]).cpu(), 1e-6, "loss")
