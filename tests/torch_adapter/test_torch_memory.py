"""Between forward and backward only O(N d) tensors are kept: nothing of size (2N)^2.

Every tensor autograd saves for the backward pass goes through ``saved_tensors_hooks``; the
largest must be no bigger than the unit rows (2N x d) or the hard-negative columns (2N x M).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from weince_torch import WEINCEConfig, WEINCELoss  # noqa: E402


@pytest.mark.parametrize("preset", ["paper", "blend", "infonce"])
def test_saved_tensors_are_linear_in_the_batch(preset):
    n, d = 256, 8
    config = WEINCEConfig.preset(preset)
    z_i = torch.randn(n, d, requires_grad=True)
    z_j = torch.randn(n, d, requires_grad=True)
    saved: list[int] = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = WEINCELoss(config)(z_i, z_j)
    loss.backward()
    assert saved, "the loss should save its residuals"
    assert max(saved) <= 2 * n * max(d, config.top_m) < (2 * n) ** 2


@pytest.mark.parametrize("preset", ["paper", "blend", "infonce"])
def test_forward_and_backward_run_on_fake_tensors(preset):
    # Memory planners trace a step under FakeTensorMode: no value may be read on the way.
    from torch._subclasses.fake_tensor import FakeTensorMode

    criterion = WEINCELoss(WEINCEConfig.preset(preset))
    with FakeTensorMode(allow_non_fake_inputs=True):
        z_i = torch.randn(512, 16, requires_grad=True)
        z_j = torch.randn(512, 16, requires_grad=True)
        loss = criterion(z_i, z_j)
        loss.backward()
        assert z_i.grad.shape == z_i.shape and loss.shape == ()
