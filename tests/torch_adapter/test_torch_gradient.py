"""The gradient through autograd is the core's analytic gradient, and it is right.

- ``torch.autograd.gradcheck`` in float64, on configurations where the statistics are constant
  (``lambda`` and ``beta_t`` are constants of the loss, docs/math.md sections 1-4, so finite
  differences see the analytic gradient only where they do not move);
- equality with the core on NumPy arrays (loss, gradients, state, statistics) on random inputs;
- gradient flows to both inputs, and only there.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import weince_core as wc  # noqa: E402
from weince_core.testing import RTOL_FLOAT64, assert_close_normwise  # noqa: E402
from weince_torch import STAT_KEYS, WEINCEConfig, WEINCELoss, init_state, weince_loss  # noqa: E402

# Every term of the gradient with the gate frozen at lambda = 1/4 (both slopes zero) and beta_t
# frozen at beta_init: the blended main term, both top-M terms, and plain NT-Xent.
FROZEN = {
    "paper-frozen-gate": WEINCEConfig.paper(kappa_rho=0.0, kappa_aic=0.0, estimate_beta=False),
    "blend-frozen-gate": WEINCEConfig.blend(kappa_rho=0.0, kappa_aic=0.0),
    "infonce": WEINCEConfig.infonce(),
}


def pair(n, d, seed, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    z_i = torch.randn(n, d, generator=generator, dtype=dtype)
    z_j = z_i + 0.6 * torch.randn(n, d, generator=generator, dtype=dtype)
    return z_i.requires_grad_(True), z_j.requires_grad_(True)


@pytest.mark.parametrize("name", list(FROZEN))
def test_gradcheck_in_float64(name):
    config = FROZEN[name].replace(top_m=5, min_tail=8)
    z_i, z_j = pair(8, 5, seed=1)
    state = init_state(config)

    def loss_of(a, b):
        return weince_loss(a, b, state, config)[0]

    assert torch.autograd.gradcheck(loss_of, (z_i, z_j), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("preset", ["paper", "blend", "infonce"])
def test_module_equals_the_core_on_numpy(preset):
    config = WEINCEConfig.preset(preset)
    criterion = WEINCELoss(config)
    state_np = wc.init_state(config, like=np.zeros(1))
    for step in range(3):
        z_i, z_j = pair(64, 16, seed=10 + step)
        loss = criterion(z_i, z_j)
        loss.backward()
        ref_loss, (ref_i, ref_j), state_np, ref_stats = wc.nt_xent_value_and_grad(
            z_i.detach().numpy(), z_j.detach().numpy(), state_np, config
        )
        what = f"{preset} step {step}"
        assert_close_normwise(loss.detach().numpy(), ref_loss, RTOL_FLOAT64, f"{what} loss")
        assert_close_normwise(z_i.grad.numpy(), ref_i, RTOL_FLOAT64, f"{what} grad_i")
        assert_close_normwise(z_j.grad.numpy(), ref_j, RTOL_FLOAT64, f"{what} grad_j")
        assert_close_normwise(criterion.beta_t[0].numpy(), state_np, RTOL_FLOAT64, f"{what} beta_t")
        for key in STAT_KEYS:
            actual, expected = criterion.last_stats[key].numpy(), np.asarray(ref_stats[key])
            assert actual.shape == expected.shape, f"{what} {key} shape"
            assert np.array_equal(np.isnan(actual), np.isnan(expected)), f"{what} {key} NaNs"
            finite = ~np.isnan(expected)
            if finite.any():
                assert_close_normwise(
                    actual[finite], expected[finite], RTOL_FLOAT64, f"{what} {key}"
                )
    if preset == "paper":
        assert criterion.beta_t[0] != config.beta_init, "the batches should move beta_t"


def test_the_statistics_are_exactly_the_cores():
    z_i, z_j = pair(4, 3, seed=0)
    _, _, core_stats = wc.nt_xent(z_i.detach(), z_j.detach(), init_state())
    assert set(STAT_KEYS) == set(core_stats)


@pytest.mark.parametrize("preset", ["paper", "blend", "infonce"])
def test_gradient_reaches_both_inputs_and_nothing_else(preset):
    config = WEINCEConfig.preset(preset)
    z_i, z_j = pair(32, 8, seed=3)
    state = init_state(config)
    loss, new_state, stats = weince_loss(z_i, z_j, state, config)
    assert loss.requires_grad
    assert not new_state.requires_grad and not state.requires_grad
    assert not any(value.requires_grad for value in stats.values())
    grad_i, grad_j = torch.autograd.grad(loss, (z_i, z_j))
    assert grad_i.abs().sum() > 0 and grad_j.abs().sum() > 0


def test_gradient_to_one_input_only_and_upstream_scaling():
    config = WEINCEConfig.paper()
    z_i, z_j = pair(32, 8, seed=4)
    z_j = z_j.detach()
    state = init_state(config)
    loss = weince_loss(z_i, z_j, state, config)[0]
    (grad,) = torch.autograd.grad(3.0 * loss, (z_i,))
    _, (ref_i, _), _, _ = wc.nt_xent_value_and_grad(z_i.detach(), z_j, state, config)
    assert_close_normwise(grad.numpy(), 3.0 * ref_i.numpy(), RTOL_FLOAT64, "3 * dL/dz_i")


@pytest.mark.parametrize("preset", ["paper", "blend", "infonce"])
def test_loss_without_gradient_equals_the_loss_computed_with_it(preset):
    # Needing a gradient, the forward computes it with the loss (nt_xent_value_and_grad);
    # under no_grad it computes the loss alone (nt_xent_forward): the same numbers.
    config = WEINCEConfig.preset(preset)
    z_i, z_j = pair(48, 8, seed=6)
    state = init_state(config)
    with_gradient = weince_loss(z_i, z_j, state, config)
    with torch.no_grad():
        without = weince_loss(z_i, z_j, state, config)
    assert_close_normwise(with_gradient[0].detach().numpy(), without[0].numpy(), 1e-14, "loss")
    assert torch.equal(with_gradient[1], without[1])
    for key in STAT_KEYS:
        exact = 0.0 if not key.startswith("loss") else 1e-14  # the losses: to rounding
        torch.testing.assert_close(
            with_gradient[2][key], without[2][key], rtol=exact, atol=0.0, equal_nan=True, msg=key
        )


def test_a_second_derivative_raises_rather_than_coming_out_wrong():
    # The gradient is computed outside autograd: first order only, and an error beyond.
    z_i, z_j = pair(16, 4, seed=7)
    loss = weince_loss(z_i, z_j, init_state(), WEINCEConfig.paper())[0]
    for upstream in (torch.ones(()), torch.ones((), dtype=torch.float64, requires_grad=True)):
        (grad_i,) = torch.autograd.grad(loss, (z_i,), upstream, create_graph=True)
        with pytest.raises(RuntimeError, match=r"not require grad|not have been used|twice"):
            torch.autograd.grad(grad_i.sum(), (z_i,))
