"""The pairing forms in JAX: ``two_tower``, ``explicit_negatives``, ``multi_positive``.

- ``jax.test_util.check_grads`` on each form in float64 where the statistics are constant
  (gate and ``beta_t`` frozen), ``scale`` included;
- under ``jax.jit`` (the config static) the same results as called eagerly, the state a pytree
  through ``jax.lax.scan``;
- with the preset ``infonce`` the two-tower form is CLIP's symmetric cross-entropy, with the
  gradient of ``logit_scale``;
- two-tower sharded over 2 CPU devices (``shard_map`` with ``axis_name``, and ``jit`` on rows
  sharded over an Explicit mesh axis) equals one device to 1e-9: run in a subprocess with
  ``--xla_force_host_platform_device_count=2`` (forms_sharded_worker.py);
- bad input raises naming the argument.

Every form against the NumPy core and the reference vectors: tests/conformance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
check_grads = pytest.importorskip("jax.test_util").check_grads

import weince_jax  # noqa: E402
from weince_core.testing import FORM_ARRAYS, differentiable, form_cases  # noqa: E402
from weince_jax import WEINCEConfig, WEINCEState  # noqa: E402

FROZEN = WEINCEConfig.paper(kappa_rho=0.0, kappa_aic=0.0, estimate_beta=False, top_m=5, min_tail=8)
FORMS = ["two_tower", "explicit_negatives", "multi_positive"]
WORKER = Path(__file__).with_name("forms_sharded_worker.py")


def call(form, arrays, state, config, options=()):
    keywords = {"scale": arrays["scale"]} if form == "two_tower" else {}
    positional = [arrays[k] for k in FORM_ARRAYS[form] if k not in keywords]
    return getattr(weince_jax, form)(*positional, state, config, **keywords, **dict(options))


def cases(form, n=5, d=4, seed=0, steps=1):
    for case in form_cases(form, n, d, steps, seed):
        yield case, [{k: jnp.asarray(v) for k, v in batch.items()} for batch in case.batches]


def frozen_loss(form, arrays, options):
    """The loss of ``form`` as a function of its differentiable arrays (statistics frozen)."""
    names = differentiable(form)
    state = weince_jax.init_state(FROZEN)

    def loss(*values):
        replaced = {**arrays, **dict(zip(names, values, strict=True))}
        return call(form, replaced, state, FROZEN, options)[0]

    return loss, tuple(arrays[k] for k in names)


@pytest.mark.parametrize("form", FORMS)
def test_every_form_passes_check_grads_in_float64(form):
    for case, (arrays,) in cases(form):
        loss, inputs = frozen_loss(form, arrays, case.options)
        check_grads(jax.jit(loss), inputs, order=1, modes=("rev",), eps=1e-6)


@pytest.mark.parametrize("form", ["two_tower", "multi_positive"])
def test_jit_and_scan_give_the_eager_results(form):
    config = WEINCEConfig.paper(min_tail=8, top_m=6, beta_min_tail=64)
    case, steps = next(cases(form, n=12, d=5, seed=4, steps=2))
    state = weince_jax.init_state(config)
    eager = []
    for arrays in steps:
        loss, (state, stats) = call(form, arrays, state, config, case.options)
        eager.append((loss, state.beta_t))
    assert bool(stats["beta_updated"]), "the batches should move beta_t"

    def body(state, arrays):
        loss, (state, _) = call(form, arrays, state, config, case.options)
        return state, (loss, state.beta_t)

    stacked = jax.tree.map(lambda *a: jnp.stack(a), *steps)
    final, (losses, betas) = jax.jit(lambda s, a: jax.lax.scan(body, s, a))(
        weince_jax.init_state(config), stacked
    )
    assert isinstance(final, WEINCEState)
    np.testing.assert_allclose(losses, [e[0] for e in eager], rtol=1e-12)
    np.testing.assert_allclose(betas, [e[1] for e in eager], rtol=1e-12)


def test_two_tower_with_infonce_is_clips_cross_entropy_and_differentiates_the_scale():
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.normal(size=(10, 6))), jnp.asarray(rng.normal(size=(10, 6)))
    config = WEINCEConfig.infonce()
    state = weince_jax.init_state(config)

    def weince(x, y, logit_scale):
        return weince_jax.two_tower(x, y, state, config, scale=jnp.exp(logit_scale))[0]

    def clip(x, y, logit_scale):
        u = x / jnp.linalg.norm(x, axis=1, keepdims=True)
        v = y / jnp.linalg.norm(y, axis=1, keepdims=True)
        logits = jnp.exp(logit_scale) * u @ v.T

        def ce(m):
            return jnp.mean(jax.nn.logsumexp(m, axis=1) - jnp.diag(m))

        return (ce(logits) + ce(logits.T)) / 2

    args = (x, y, jnp.asarray(np.log(1 / 0.07)))
    value, grads = jax.jit(jax.value_and_grad(weince, argnums=(0, 1, 2)))(*args)
    expected, expected_grads = jax.jit(jax.value_and_grad(clip, argnums=(0, 1, 2)))(*args)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    for got, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    assert abs(float(grads[2])) > 0


def test_bad_input_names_the_argument():
    x = jnp.ones((4, 3))
    state = weince_jax.init_state()
    with pytest.raises(TypeError, match="state"):
        weince_jax.two_tower(x, x, jnp.asarray(4.0))
    with pytest.raises(TypeError, match=r"\bx\b"):
        weince_jax.two_tower([[1.0]], x, state)
    with pytest.raises(TypeError, match="scale"):
        weince_jax.two_tower(x, x, state, scale="10")
    with pytest.raises(ValueError, match=r"\by\b"):
        weince_jax.two_tower(x, jnp.ones((5, 3)), state)
    with pytest.raises(ValueError, match=r"\bk\b"):
        weince_jax.explicit_negatives(x, jnp.ones((5, 3)), x, state)
    with pytest.raises(ValueError, match=r"\bn\b"):
        weince_jax.explicit_negatives(x, x, jnp.ones((4, 2)), state)
    with pytest.raises(TypeError, match="in_batch_negatives"):
        weince_jax.explicit_negatives(x, x, x, state, in_batch_negatives="no")
    with pytest.raises(TypeError, match="labels"):
        weince_jax.multi_positive(x, jnp.zeros(4), state)
    with pytest.raises(ValueError, match="labels"):
        weince_jax.multi_positive(x, jnp.zeros(5, dtype=jnp.int32), state)


@pytest.fixture(scope="module")
def sharded():
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    env = {**os.environ, "XLA_FLAGS": flags.strip(), "JAX_PLATFORMS": "cpu"}
    try:
        result = subprocess.run(
            [sys.executable, str(WORKER)], capture_output=True, text=True, timeout=600, env=env
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{WORKER.name} timed out:\n{(error.stderr or b'')[-4000:]!r}")
    if result.returncode != 0:
        stderr = "\n".join(x for x in result.stderr.splitlines() if not x.lstrip().startswith("@ "))
        pytest.fail(f"{WORKER.name} exited with {result.returncode}:\n{stderr[-6000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("how", ["shard_map", "jit_explicit"])
def test_sharded_two_tower_equals_one_device(sharded, how):
    case = sharded[how]
    too_far = {k: v for k, v in case["differences"].items() if not v <= 1e-9}
    assert not too_far, f"relative differences above 1e-9: {too_far}"
    assert case["beta_updated"] and case["collectives"] > 0
