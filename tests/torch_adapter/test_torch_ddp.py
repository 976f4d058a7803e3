"""``WEINCELoss`` on the outputs of a DDP-wrapped model (one gloo process on the CPU).

The loss is local to each process here; with one process DDP's averaged gradients must equal
those of the bare model, and the criterion's state must advance the same way.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from weince_torch import WEINCELoss  # noqa: E402


@pytest.fixture
def process_group(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()


def grads_after_steps(model, criterion, batches):
    grads = []
    for x_i, x_j in batches:
        model.zero_grad()
        z_i, z_j = model(torch.cat([x_i, x_j])).chunk(2)
        criterion(z_i, z_j).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    return grads


def test_ddp_wrapped_model_gets_the_gradients_of_the_bare_model(process_group):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8))
    bare, wrapped = copy.deepcopy(model), DistributedDataParallel(copy.deepcopy(model))
    batches = [(torch.randn(64, 16), torch.randn(64, 16)) for _ in range(2)]
    bare_criterion, ddp_criterion = WEINCELoss(), WEINCELoss()

    expected = grads_after_steps(bare, bare_criterion, batches)
    actual = grads_after_steps(wrapped, ddp_criterion, batches)
    for step_expected, step_actual in zip(expected, actual, strict=True):
        for e, a in zip(step_expected, step_actual, strict=True):
            assert e.abs().sum() > 0
            torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-7)
    assert torch.equal(ddp_criterion.beta_t, bare_criterion.beta_t)
