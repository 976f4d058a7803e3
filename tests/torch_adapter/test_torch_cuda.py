"""On a CUDA device: the CPU float64 results, no host synchronisation, every tensor on the GPU.

Run on a GPU machine with ``pytest -m gpu tests/torch_adapter``; elsewhere every test here is
skipped with the reason. The speed and memory figures come from ``weince bench --devices cuda``.
"""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from weince_core.testing import RTOL_FLOAT32, assert_close_normwise  # noqa: E402
from weince_torch import WEINCEConfig, WEINCELoss  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device for torch"),
]

PRESETS = ["paper", "blend", "infonce"]


def pair(n, d, seed, device="cpu", dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    z_i = torch.randn(n, d, generator=generator, dtype=torch.float64)
    z_j = z_i + 0.5 * torch.randn(n, d, generator=generator, dtype=torch.float64)
    return tuple(z.to(device, dtype).requires_grad_(True) for z in (z_i, z_j))


def run_steps(criterion, seeds, device, dtype, n=256, d=64):
    """Loss, gradients and beta_t of consecutive training steps, as CPU float64 tensors."""
    results = []
    for seed in seeds:
        z_i, z_j = pair(n, d, seed, device, dtype)
        loss = criterion(z_i, z_j)
        loss.backward()
        # copy=True: on the CPU in float64, .to() would return the buffer beta_t itself, which
        # the next steps overwrite in place.
        results.append(
            [
                t.detach().to("cpu", torch.float64, copy=True)
                for t in (loss, z_i.grad, z_j.grad, criterion.beta_t)
            ]
        )
    return results


def test_golden_vectors_on_cuda_in_float32(golden):
    criterion = WEINCELoss(golden.config).to("cuda")
    assert criterion.beta_t.device.type == "cuda" and criterion.beta_t.dtype == torch.float64
    for t in range(golden.steps):
        ref = golden.step(t)
        z_i = torch.tensor(ref["zi"], dtype=torch.float32, device="cuda", requires_grad=True)
        z_j = torch.tensor(ref["zj"], dtype=torch.float32, device="cuda", requires_grad=True)
        loss = criterion(z_i, z_j)
        loss.backward()
        for what, actual, expected in [
            ("loss", loss, ref["loss"]),
            ("grad_zi", z_i.grad, ref["grad_zi"]),
            ("grad_zj", z_j.grad, ref["grad_zj"]),
            ("lambda", criterion.last_stats["lambda"], ref["lambda"]),
            ("beta_t", criterion.beta_t[0], ref["beta_t"]),
        ]:
            assert actual.device.type == "cuda", what
            numpy = actual.detach().to("cpu", torch.float64).numpy()
            assert_close_normwise(numpy, expected, RTOL_FLOAT32, f"{golden.name} step {t} {what}")


@pytest.mark.parametrize("preset", PRESETS)
def test_cuda_float32_steps_equal_cpu_float64_steps(preset):
    config = WEINCEConfig.preset(preset)
    expected = run_steps(WEINCELoss(config), (0, 1, 2), "cpu", torch.float64)
    actual = run_steps(WEINCELoss(config).to("cuda"), (0, 1, 2), "cuda", torch.float32)
    names = ("loss", "grad_i", "grad_j", "beta_t")
    for step, (a_step, e_step) in enumerate(zip(actual, expected, strict=True)):
        for name, a, e in zip(names, a_step, e_step, strict=True):
            assert_close_normwise(
                a.numpy(), e.numpy(), RTOL_FLOAT32, f"{preset} step {step} {name}"
            )


class RecordDevices(TorchDispatchMode):
    """The device of every tensor any ATen operation produces."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: dict[str, set[str]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(value, torch.Tensor):
                self.devices.setdefault(str(value.device), set()).add(str(func))
        return out


@pytest.mark.parametrize("preset", PRESETS)
def test_every_tensor_of_forward_and_backward_is_created_on_the_inputs_gpu(preset):
    # The last GPU, so that a machine with several also checks that none lands on the current one.
    device = f"cuda:{torch.cuda.device_count() - 1}"
    criterion = WEINCELoss(WEINCEConfig.preset(preset)).to(device)
    z_i, z_j = pair(128, 32, 0, device, torch.float32)
    recorder = RecordDevices()
    with recorder:
        criterion(z_i, z_j).backward()
    assert set(recorder.devices) == {device}, f"ops and their devices: {recorder.devices}"


def sync_free_steps(loss_of, criterion, z_i, z_j, steps=2):
    """Forward + backward with torch.cuda.set_sync_debug_mode("error") (a sync raises)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(steps):
            z_i.grad = z_j.grad = None
            loss_of(z_i, z_j).backward()
            _ = {k: v.detach() for k, v in criterion.last_stats.items()}
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_forward_and_backward_never_synchronise_with_the_host(preset, dtype):
    criterion = WEINCELoss(WEINCEConfig.preset(preset)).to("cuda")
    z_i, z_j = pair(512, 64, 0, "cuda", dtype)
    criterion(z_i, z_j).backward()  # first call: lazy CUDA initialisation may synchronise
    before = criterion.beta_t.clone()
    sync_free_steps(criterion, criterion, z_i, z_j)
    assert torch.isfinite(z_i.grad).all() and torch.isfinite(z_j.grad).all()
    if preset == "paper":
        assert not torch.equal(criterion.beta_t, before), "training steps should move beta_t"


def test_sync_check_catches_a_synchronisation():
    # The control for the test above: the mode is on and raises on a sync.
    x = torch.ones(3, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):
            x.sum().item()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_compiled_criterion_on_cuda_equals_eager_and_never_synchronises():
    torch._dynamo.reset()
    eager = WEINCELoss().to("cuda")
    compiled_module = copy.deepcopy(eager)
    compiled = torch.compile(compiled_module, fullgraph=True)
    for seed in (0, 1):
        a_i, a_j = pair(512, 64, seed, "cuda", torch.float32)
        b_i, b_j = (z.detach().clone().requires_grad_(True) for z in (a_i, a_j))
        eager(a_i, a_j).backward()
        compiled(b_i, b_j).backward()
        torch.testing.assert_close(b_i.grad, a_i.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(b_j.grad, a_j.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(compiled_module.beta_t, eager.beta_t, rtol=1e-6, atol=0)
    sync_free_steps(compiled, compiled_module, b_i, b_j)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("spread", [0.0, 1e-3, 1.0], ids=lambda s: f"spread{s:g}")
def test_autocast_on_cuda_is_finite_for_collapsed_embeddings(dtype, spread):
    torch.manual_seed(0)
    encoder = torch.nn.Linear(32, 64).cuda()
    criterion = WEINCELoss().to("cuda")
    direction = torch.randn(32, device="cuda")
    x_i = direction + spread * torch.randn(256, 32, device="cuda")
    x_j = direction + spread * torch.randn(256, 32, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        z_i, z_j = encoder(x_i), encoder(x_j)
        assert z_i.dtype == dtype
        loss = criterion(z_i, z_j)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters())
