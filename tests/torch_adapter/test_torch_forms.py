"""The pairing forms in PyTorch: ``WEINCEClipLoss``, ``WEINCEQueueLoss``, ``WEINCESupConLoss``
and the functions ``two_tower``, ``explicit_negatives``, ``multi_positive``
(docs/math.md section 9).

- ``torch.autograd.gradcheck`` on each form in float64 where the statistics are constant
  (gate and ``beta_t`` frozen: finite differences see the analytic gradient only there), the
  ``scale`` of the two-tower form included;
- with the preset ``infonce`` each criterion is its peer's loss: CLIP's symmetric
  cross-entropy (gradient to ``logit_scale`` included), MoCo's queue InfoNCE, SupCon ``L_out``;
- the criteria's state (``beta_t`` buffer, ``state_dict``, training-step rule) and logging;
- ``torch.compile(fullgraph=True)`` and ``torch.autocast`` as for the two-view criterion;
- bad input raises before any work, naming the argument.

The numbers of every form against the NumPy core and the reference vectors are checked for
every backend in tests/conformance/test_forms_conformance.py.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import weince_torch  # noqa: E402
from weince_core.testing import FORM_ARRAYS, differentiable, form_cases  # noqa: E402
from weince_torch import (  # noqa: E402
    STAT_KEYS,
    WEINCEClipLoss,
    WEINCEConfig,
    WEINCEQueueLoss,
    WEINCESupConLoss,
    init_state,
)

FROZEN = WEINCEConfig.paper(kappa_rho=0.0, kappa_aic=0.0, estimate_beta=False, top_m=5, min_tail=8)
CLOSE = dict(rtol=1e-12, atol=1e-12)
FORMS = ["two_tower", "explicit_negatives", "multi_positive"]


def cases(form, n=5, d=4, seed=0, steps=1):
    """The crosscheck's cases of ``form``, as torch float64 tensors (``(case, [arrays])``)."""
    for case in form_cases(form, n, d, steps, seed):
        yield case, [{k: torch.asarray(v) for k, v in batch.items()} for batch in case.batches]


def call(form, arrays, state, config, options=()):
    """``weince_torch.<form>`` on the arrays of one batch: ``(loss, new_state, stats)``."""
    keywords = {"scale": arrays["scale"]} if form == "two_tower" else {}
    positional = [arrays[k] for k in FORM_ARRAYS[form] if k not in keywords]
    return getattr(weince_torch, form)(*positional, state, config, **keywords, **dict(options))


def frozen_loss(form, arrays, options):
    """The loss of ``form`` as a function of its differentiable arrays (statistics frozen)."""
    names = differentiable(form)
    state = init_state(FROZEN)

    def loss_of(*values):
        replaced = {**arrays, **dict(zip(names, values, strict=True))}
        return call(form, replaced, state, FROZEN, options)[0]

    return loss_of, tuple(arrays[k].requires_grad_(True) for k in names)


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_every_form_in_float64(form):
    for case, (arrays,) in cases(form):
        loss_of, inputs = frozen_loss(form, arrays, case.options)
        assert torch.autograd.gradcheck(loss_of, inputs, eps=1e-6, atol=1e-8, rtol=1e-6), case.name


def unit(x):
    return x / x.norm(dim=1, keepdim=True)


def test_clip_loss_with_infonce_is_clips_symmetric_cross_entropy():
    # open_clip's ClipLoss on one process: logits = logit_scale * img @ txt.T, CE both ways.
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(12, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    text = torch.randn(12, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    logit_scale = torch.tensor(np.log(1 / 0.07), dtype=torch.float64, requires_grad=True)
    loss = WEINCEClipLoss(WEINCEConfig.infonce())(image, text, logit_scale.exp())
    grads = torch.autograd.grad(loss, (image, text, logit_scale))

    logits = logit_scale.exp() * unit(image) @ unit(text).T
    labels = torch.arange(12)
    clip = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    expected = torch.autograd.grad(clip, (image, text, logit_scale))
    torch.testing.assert_close(loss, clip, **CLOSE)
    for name, actual, want in zip(("image", "text", "logit_scale"), grads, expected, strict=True):
        torch.testing.assert_close(actual, want, msg=name, **CLOSE)
    assert grads[2].abs() > 0


def test_queue_loss_with_infonce_is_moco_queue_infonce():
    generator = torch.Generator().manual_seed(1)
    q = torch.randn(8, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    k = torch.randn(8, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    queue = torch.randn(32, 5, generator=generator, dtype=torch.float64)
    config = WEINCEConfig.infonce(temperature=0.2)
    loss = WEINCEQueueLoss(config)(q, k, queue)
    grads = torch.autograd.grad(loss, (q, k))

    positive = (unit(q) * unit(k)).sum(1, keepdim=True)
    logits = torch.cat([positive, unit(q) @ unit(queue).T], dim=1) / 0.2
    moco = F.cross_entropy(logits, torch.zeros(8, dtype=torch.long))
    torch.testing.assert_close(loss, moco, **CLOSE)
    for actual, want in zip(grads, torch.autograd.grad(moco, (q, k)), strict=True):
        torch.testing.assert_close(actual, want, **CLOSE)


def test_supcon_loss_with_infonce_is_supcon_l_out():
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(10, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([3, 3, 3, 9, 9, -1, -1, -1, -1, 42])  # 42: no positive
    loss = WEINCESupConLoss(WEINCEConfig.infonce(temperature=0.5))(z, labels)

    logits = unit(z) @ unit(z).T / 0.5
    logits = logits.masked_fill(torch.eye(10, dtype=torch.bool), -torch.inf)
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = (labels[:, None] == labels[None, :]) & ~torch.eye(10, dtype=torch.bool)
    per_anchor = -(log_prob.masked_fill(~positives, 0).sum(1)) / positives.sum(1).clamp(min=1)
    has_positive = positives.any(1)
    supcon = per_anchor[has_positive].mean()
    torch.testing.assert_close(loss, supcon, **CLOSE)
    (grad,) = torch.autograd.grad(loss, (z,))
    torch.testing.assert_close(grad, torch.autograd.grad(supcon, (z,))[0], **CLOSE)


def criteria():
    """Each criterion with a batch that moves ``beta_t`` (paper preset, small tails)."""
    config = WEINCEConfig.paper(min_tail=8, top_m=6, beta_min_tail=64)
    (_, (tower,)), (_, (queue,)), (_, (labelled,)) = (
        next(cases(form, n=24, d=6, seed=5)) for form in FORMS
    )
    return [
        ("clip", WEINCEClipLoss(config), (tower["x"], tower["y"], tower["scale"])),
        ("queue", WEINCEQueueLoss(config), (queue["q"], queue["k"], queue["n"])),
        ("supcon", WEINCESupConLoss(config), (labelled["z"], labelled["labels"])),
    ]


@pytest.mark.parametrize("which", range(3), ids=["clip", "queue", "supcon"])
def test_criterion_state_moves_in_training_steps_only_and_is_saved(which):
    name, criterion, inputs = criteria()[which]
    assert criterion.beta_t.dtype == torch.float64 and criterion.beta_t.shape == (1,)
    assert "beta_t" in criterion.state_dict()
    start = criterion.beta_t.clone()
    criterion.eval()
    criterion(*inputs)
    with torch.no_grad():
        criterion.train()
        criterion(*inputs)
    assert torch.equal(criterion.beta_t, start), f"{name}: beta_t moved outside training"
    loss = criterion(*inputs)
    assert criterion.last_stats["beta_updated"], f"{name}: the batch should move beta_t"
    assert not torch.equal(criterion.beta_t, start)
    torch.testing.assert_close(criterion.beta_t[0], criterion.last_stats["beta_t"], **CLOSE)
    assert set(criterion.last_stats) == set(STAT_KEYS)
    assert not any(v.requires_grad for v in criterion.last_stats.values())
    assert loss.requires_grad == any(t.requires_grad for t in inputs)
    twin = type(criterion)(criterion.config)
    twin.load_state_dict(criterion.state_dict())
    assert torch.equal(twin.beta_t, criterion.beta_t)
    criterion.reset_state()
    assert torch.equal(criterion.beta_t, start)


def test_clip_loss_output_dict_and_default_scale():
    _, criterion, (x, y, _) = criteria()[0]
    out = criterion(x, y, None, output_dict=True)
    assert set(out) == {"contrastive_loss"}
    scaled = WEINCEClipLoss(criterion.config)(x, y, 1 / criterion.config.temperature)
    torch.testing.assert_close(out["contrastive_loss"], scaled, **CLOSE)


@pytest.mark.slow
@pytest.mark.parametrize("which", range(3), ids=["clip", "queue", "supcon"])
def test_compiled_criterion_equals_eager(which):
    torch._dynamo.reset()
    name, eager, inputs = criteria()[which]
    module = type(eager)(eager.config)
    compiled = torch.compile(module, fullgraph=True)
    for _ in range(2):
        mine = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
        theirs = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
        expected, actual = eager(*mine), compiled(*theirs)
        expected.backward()
        actual.backward()
        torch.testing.assert_close(actual, expected, **CLOSE)
        for a, b in zip(theirs, mine, strict=True):
            if b.is_floating_point():
                torch.testing.assert_close(a.grad, b.grad, msg=name, **CLOSE)
        torch.testing.assert_close(module.beta_t, eager.beta_t, **CLOSE)
        for key, value in eager.last_stats.items():
            torch.testing.assert_close(
                module.last_stats[key], value, equal_nan=True, msg=key, **CLOSE
            )


@pytest.mark.parametrize("which", range(3), ids=["clip", "queue", "supcon"])
def test_autocast_computes_in_float32_and_returns_gradients_in_the_inputs_dtype(which):
    name, criterion, inputs = criteria()[which]
    half = [
        t.to(torch.bfloat16).requires_grad_(True) if t.is_floating_point() else t for t in inputs
    ]
    full = [t.detach().float() if t.is_floating_point() else t for t in half]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = criterion(*half)
    loss.backward()
    assert loss.dtype == torch.float32, name
    criterion.reset_state()
    torch.testing.assert_close(loss, criterion(*full).detach(), rtol=1e-6, atol=1e-6)
    for t in half:
        if t.is_floating_point() and t.ndim:
            assert t.grad.dtype == torch.bfloat16 and torch.isfinite(t.grad.float()).all()


def test_bad_input_names_the_argument():
    x = torch.randn(4, 3, dtype=torch.float64)
    state = init_state()
    with pytest.raises(TypeError, match="image_features"):
        WEINCEClipLoss()(np.ones((4, 3)), x, 10.0)
    with pytest.raises(TypeError, match="scale"):
        weince_torch.two_tower(x, x, state, scale="10")
    with pytest.raises(ValueError, match=r"\by\b"):
        weince_torch.two_tower(x, torch.randn(5, 3, dtype=torch.float64), state, scale=10.0)
    with pytest.raises(TypeError, match="local_loss"):
        WEINCEClipLoss(local_loss="yes")
    with pytest.raises(ValueError, match=r"\bk\b"):
        WEINCEQueueLoss()(x, torch.randn(5, 3, dtype=torch.float64), x)
    with pytest.raises(ValueError, match=r"\bn\b"):
        weince_torch.explicit_negatives(x, x, torch.randn(4, 2, dtype=torch.float64), state)
    with pytest.raises(ValueError, match=r"\bn\b"):
        weince_torch.explicit_negatives(x, x, torch.randn(2, 2, 2, 2, dtype=torch.float64), state)
    with pytest.raises(TypeError, match="in_batch_negatives"):
        WEINCEQueueLoss(in_batch_negatives=1)
    with pytest.raises(TypeError, match="labels"):
        WEINCESupConLoss()(x, torch.zeros(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="labels"):
        WEINCESupConLoss()(x, torch.zeros(5, dtype=torch.int64))
    with pytest.raises(TypeError, match="labels"):
        WEINCESupConLoss()(x, [0, 0, 1, 1])
