"""Half precision and ``torch.autocast``: finite loss and gradients, collapsed inputs included.

The core computes half-precision inputs in float32 (docs/math.md section 7) and the adapter runs it
outside autocast, so autocast changes nothing about the loss of given embeddings; gradients come
back in each input's dtype.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from weince_torch import WEINCEConfig, WEINCELoss  # noqa: E402

PRESETS = ["paper", "blend", "infonce"]
HALF = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def views(n, d, spread, scale=1.0, seed=0, dtype=torch.float32):
    """Two views around one direction: ``spread = 0`` is fully collapsed (every cosine 1)."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=generator)
    z_i = scale * (direction + spread * torch.randn(n, d, generator=generator))
    z_j = scale * (direction + spread * torch.randn(n, d, generator=generator))
    return z_i.to(dtype).requires_grad_(True), z_j.to(dtype).requires_grad_(True)


def assert_finite_step(criterion, z_i, z_j):
    loss = criterion(z_i, z_j)
    loss.backward()
    assert loss.dtype == torch.float32
    assert z_i.grad.dtype == z_i.dtype and z_j.grad.dtype == z_j.dtype
    assert torch.isfinite(loss), f"loss {loss}"
    assert torch.isfinite(z_i.grad).all() and torch.isfinite(z_j.grad).all()
    assert torch.isfinite(criterion.beta_t).all()
    return loss


@pytest.mark.parametrize("dtype", list(HALF))
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("spread", [0.0, 1e-4, 1e-2, 1.0], ids=lambda s: f"spread{s:g}")
def test_half_precision_inputs_give_finite_loss_and_gradients(dtype, preset, spread):
    criterion = WEINCELoss(WEINCEConfig.preset(preset))
    for scale in (1e-2, 1.0, 30.0):
        assert_finite_step(criterion, *views(64, 32, spread, scale, dtype=HALF[dtype]))


@pytest.mark.parametrize("dtype", list(HALF))
def test_half_precision_loss_is_the_float32_loss_of_the_same_values(dtype):
    z_i, z_j = views(64, 32, 0.5, dtype=HALF[dtype])
    half = WEINCELoss()(z_i, z_j)
    full = WEINCELoss()(z_i.detach().float(), z_j.detach().float())
    assert torch.equal(half, full)


@pytest.mark.parametrize("dtype", list(HALF))
@pytest.mark.parametrize("spread", [0.0, 1e-3, 1.0], ids=lambda s: f"spread{s:g}")
def test_autocast_training_step_with_a_linear_encoder(dtype, spread):
    torch.manual_seed(0)
    encoder = torch.nn.Linear(16, 32)
    criterion = WEINCELoss()
    x_i, x_j = views(64, 16, spread)
    with torch.autocast("cpu", dtype=HALF[dtype]):
        z_i, z_j = encoder(x_i.detach()), encoder(x_j.detach())
        assert z_i.dtype == HALF[dtype]
        loss = criterion(z_i, z_j)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())


def test_autocast_does_not_lower_the_precision_of_float32_embeddings():
    z_i, z_j = views(64, 32, 0.5)
    expected = WEINCELoss()(z_i, z_j)
    expected.backward()
    grads = z_i.grad.clone(), z_j.grad.clone()
    z_i.grad = z_j.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = WEINCELoss()(z_i, z_j)
    actual.backward()
    assert torch.equal(actual, expected)
    assert torch.equal(z_i.grad, grads[0]) and torch.equal(z_j.grad, grads[1])
