"""``WEINCEClipLoss`` over ``torch.distributed`` (2 gloo processes) equals one process.

Each worker holds its rows of both towers and a replicated ``logit_scale``; over two steps
(``beta_t`` carried and moving) its loss, ``beta_t`` and summary statistics must be those of
one process on the joined batch, its rows' gradients ``world_size`` times the one-process
gradients of those rows (the scaling rule DDP's average undoes, as for ``WEINCELoss``), and
``logit_scale``'s gradient the one-process gradient itself (replicated: DDP's average keeps
it). Both ways to gather: the whole loss on every process (open_clip's ``gather_with_grad``)
and ``local_loss=True`` (own rows against every column, global statistics). float64, 1e-9.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.slow  # starts processes

from weince_torch import WEINCEClipLoss, WEINCEConfig  # noqa: E402

WORLD_SIZE = 2
ROWS, DIM = 8, 6  # per process
STEPS = 2
DEADLINE_S = 120
RTOL = 1e-9
CONFIG = WEINCEConfig.paper(min_tail=8, top_m=6, beta_min_tail=64)
PER_ROW = ("lambda", "rho", "d_aic")


def make_steps():
    generator = torch.Generator().manual_seed(11)
    steps = []
    for _ in range(STEPS):
        x = torch.randn(WORLD_SIZE * ROWS, DIM, generator=generator, dtype=torch.float64)
        y = x + 0.5 * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        steps.append((x, y))
    return steps


def train(criterion, rows):
    """Each step's loss, gradients (rows of x and y, logit_scale), beta_t and statistics."""
    logit_scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    records = []
    for x, y in make_steps():
        x, y = x[rows].clone().requires_grad_(True), y[rows].clone().requires_grad_(True)
        logit_scale.grad = None
        loss = criterion(x, y, logit_scale.exp())
        loss.backward()
        records.append(
            {
                "loss": loss.detach(),
                "grad_x": x.grad,
                "grad_y": y.grad,
                "grad_scale": logit_scale.grad.clone(),
                "beta_t": criterion.beta_t.clone(),
                "stats": {k: v.clone() for k, v in criterion.last_stats.items()},
            }
        )
    return records


def _worker(rank, directory):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{directory}/store",
        rank=rank,
        world_size=WORLD_SIZE,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        rows = slice(rank * ROWS, (rank + 1) * ROWS)
        out = {
            local: train(WEINCEClipLoss(CONFIG, local_loss=local), rows) for local in (False, True)
        }
        torch.save(out, Path(directory) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def workers(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    directory = tmp_path_factory.mktemp("clip")
    context = torch.multiprocessing.start_processes(
        _worker, args=(str(directory),), nprocs=WORLD_SIZE, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the workers did not finish within {DEADLINE_S} s")
    return [torch.load(directory / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


def close(actual, expected, what):
    if not expected.is_floating_point():
        assert torch.equal(actual, expected), what
        return
    scale = expected.abs().nan_to_num(0.0).max().item() if expected.numel() else 0.0
    torch.testing.assert_close(
        actual, expected, rtol=RTOL, atol=RTOL * scale, equal_nan=True, msg=lambda m: f"{what}: {m}"
    )


def own_rows(per_row, rank):
    """This rank's rows of a one-process per-row statistic: its x rows, then its y rows."""
    total = WORLD_SIZE * ROWS
    rows = slice(rank * ROWS, (rank + 1) * ROWS)
    return torch.cat([per_row[:total][rows], per_row[total:][rows]])


@pytest.mark.parametrize("local_loss", [False, True], ids=["gather_with_grad", "local_loss"])
def test_two_processes_equal_one_on_the_joined_batch(workers, local_loss):
    expected = train(WEINCEClipLoss(CONFIG, gather=False), slice(None))
    assert expected[-1]["stats"]["beta_updated"] and expected[-1]["beta_t"] != CONFIG.beta_init
    for rank, result in enumerate(workers):
        rows = slice(rank * ROWS, (rank + 1) * ROWS)
        for t, (got, want) in enumerate(zip(result[local_loss], expected, strict=True)):
            where = f"rank {rank}, step {t}"
            close(got["loss"], want["loss"], f"{where}: loss")
            close(got["beta_t"], want["beta_t"], f"{where}: beta_t")
            close(got["grad_x"], WORLD_SIZE * want["grad_x"][rows], f"{where}: grad x")
            close(got["grad_y"], WORLD_SIZE * want["grad_y"][rows], f"{where}: grad y")
            close(got["grad_scale"], want["grad_scale"], f"{where}: grad logit_scale")
            for key, value in want["stats"].items():
                if key in PER_ROW and local_loss:
                    value = own_rows(value, rank)
                close(got["stats"][key], value, f"{where}: {key}")
