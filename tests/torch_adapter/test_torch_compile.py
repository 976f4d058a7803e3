"""``torch.compile(criterion, fullgraph=True)``: no graph break, and the eager results.

``fullgraph=True`` raises on any graph break, so compiling at all is the first check. One
compilation serves the whole test (compiling takes seconds): two training steps (the state is
read and written inside the graph) and their ``last_stats``, against an eager twin.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from weince_torch import WEINCEConfig, WEINCELoss  # noqa: E402


def batch(seed, n=48, d=12):
    generator = torch.Generator().manual_seed(seed)
    z_i = torch.randn(n, d, generator=generator, dtype=torch.float64)
    z_j = z_i + 0.3 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return z_i.requires_grad_(True), z_j.requires_grad_(True)


@pytest.mark.slow
def test_compiled_criterion_equals_eager_over_training_steps():
    torch._dynamo.reset()
    config = WEINCEConfig.paper(beta_min_tail=256)
    eager, compiled_module = WEINCELoss(config), WEINCELoss(config)
    compiled = torch.compile(compiled_module, fullgraph=True)
    for seed in (0, 1):
        a_i, a_j = batch(seed)
        b_i, b_j = (z.detach().clone().requires_grad_(True) for z in (a_i, a_j))
        expected = eager(a_i, a_j)
        expected.backward()
        actual = compiled(b_i, b_j)
        actual.backward()
        close = dict(rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(actual, expected, **close)
        torch.testing.assert_close(b_i.grad, a_i.grad, **close)
        torch.testing.assert_close(b_j.grad, a_j.grad, **close)
        assert eager.last_stats["beta_updated"], "the test needs batches that move beta_t"
        torch.testing.assert_close(compiled_module.beta_t, eager.beta_t, **close)
        for key, value in eager.last_stats.items():
            torch.testing.assert_close(
                compiled_module.last_stats[key], value, equal_nan=True, msg=key, **close
            )
            assert not compiled_module.last_stats[key].requires_grad, key
