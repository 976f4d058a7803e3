"""The ``beta_t`` buffer: saved and restored exactly, moved with the module, advanced only by
training steps (``criterion.training`` and grad mode on), once per call."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from weince_torch import WEINCEConfig, WEINCELoss, init_state, weince_loss  # noqa: E402


def batch(seed, n=64, d=16, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    z_i = torch.randn(n, d, generator=generator, dtype=dtype)
    z_j = z_i + 0.3 * torch.randn(n, d, generator=generator, dtype=dtype)
    return z_i.requires_grad_(True), z_j.requires_grad_(True)


def train_step(criterion, seed):
    z_i, z_j = batch(seed)
    loss = criterion(z_i, z_j)
    loss.backward()
    return loss.detach(), z_i.grad, z_j.grad


def test_the_buffer_is_float64_in_the_state_dict_and_starts_at_beta_init():
    criterion = WEINCELoss(beta_init=3.0)
    assert criterion.state_dict()["beta_t"].dtype == torch.float64
    assert criterion.beta_t.tolist() == [3.0]


def test_a_training_step_advances_beta_t_and_a_resumed_run_continues_bit_for_bit():
    criterion = WEINCELoss()
    train_step(criterion, seed=0)
    assert criterion.last_stats["beta_updated"], "this batch should update beta_t"
    assert criterion.beta_t.item() != 4.0
    saved = copy.deepcopy(criterion.state_dict())

    expected = [train_step(criterion, seed) for seed in (1, 2)]
    resumed = WEINCELoss()
    resumed.load_state_dict(saved)
    for (loss, grad_i, grad_j), seed in zip(expected, (1, 2), strict=True):
        r_loss, r_grad_i, r_grad_j = train_step(resumed, seed)
        assert torch.equal(r_loss, loss)
        assert torch.equal(r_grad_i, grad_i) and torch.equal(r_grad_j, grad_j)
    assert torch.equal(resumed.beta_t, criterion.beta_t)


def test_a_fresh_criterion_without_the_state_gives_a_different_loss():
    # The control for the test above: the state matters, so restoring it is what made them equal.
    criterion = WEINCELoss()
    train_step(criterion, seed=0)
    assert not torch.equal(train_step(criterion, 1)[0], train_step(WEINCELoss(), 1)[0])


@pytest.mark.parametrize(
    "context",
    ["eval", "no_grad", "inference_mode"],
)
def test_evaluation_computes_the_training_loss_but_leaves_beta_t_alone(context):
    criterion = WEINCELoss()
    train_step(criterion, seed=0)
    before = criterion.beta_t.clone()
    reference = copy.deepcopy(criterion)
    z_i, z_j = batch(5)
    if context == "eval":
        criterion.eval()
        loss = criterion(z_i, z_j)
    elif context == "no_grad":
        with torch.no_grad():
            loss = criterion(z_i, z_j)
    else:
        with torch.inference_mode():
            loss = criterion(z_i, z_j)
    assert torch.equal(criterion.beta_t, before)
    assert criterion.last_stats["beta_updated"], "the batch would have moved beta_t in training"
    assert torch.equal(loss, reference(z_i, z_j).detach())
    assert not torch.equal(reference.beta_t, before)


def test_gradient_accumulation_is_one_state_step_per_micro_batch():
    config = WEINCEConfig.paper()
    criterion = WEINCELoss(config)
    micro = [batch(seed) for seed in (7, 8)]
    for z_i, z_j in micro:
        (criterion(z_i, z_j) / 2).backward()

    state = init_state(config)
    for z_i, z_j in micro:
        a, b = z_i.detach().requires_grad_(True), z_j.detach().requires_grad_(True)
        loss, state, _ = weince_loss(a, b, state, config)
        grad_i, grad_j = torch.autograd.grad(loss / 2, (a, b))
        torch.testing.assert_close(z_i.grad, grad_i, rtol=0, atol=0)
        torch.testing.assert_close(z_j.grad, grad_j, rtol=0, atol=0)
    assert torch.equal(criterion.beta_t[0], state)


def test_to_moves_the_state_and_dtype_casts_keep_it_float64():
    criterion = WEINCELoss()
    train_step(criterion, seed=0)
    value = criterion.beta_t.clone()
    criterion.half()
    assert criterion.beta_t.dtype == torch.float64 and torch.equal(criterion.beta_t, value)
    criterion.to(torch.bfloat16)
    assert torch.equal(criterion.beta_t, value)
    criterion.to("meta")
    assert criterion.beta_t.device.type == "meta" and criterion.beta_t.dtype == torch.float64


def test_reset_state_returns_to_beta_init():
    criterion = WEINCELoss(beta_init=2.5)
    train_step(criterion, seed=0)
    criterion.reset_state()
    assert criterion.beta_t.tolist() == [2.5]


def test_last_stats_are_detached_tensors_of_the_last_call():
    criterion = WEINCELoss()
    z_i, z_j = batch(0)
    loss = criterion(z_i, z_j)
    stats = criterion.last_stats
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in stats.values())
    assert stats["lambda"].shape == (128,) and stats["lambda_mean"].shape == ()
    assert torch.equal(stats["beta_t"], criterion.beta_t[0].float())
    assert stats["loss_blend"] < loss


def test_init_state_takes_the_device_of_like_and_stays_float64():
    config = WEINCEConfig(beta_init=2.5)
    for like in (torch.ones(3, dtype=torch.float16), torch.ones((), device="meta")):
        state = init_state(config, like=like)
        assert state.shape == () and state.dtype == torch.float64
        assert state.device == like.device
    assert float(init_state(config)) == 2.5
    with pytest.raises(TypeError, match=r"^like must be a torch\.Tensor .*; got list$"):
        init_state(like=[1.0])
