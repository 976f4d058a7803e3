"""WEINCE gathered over ``torch.distributed`` processes (gloo, CPU) equals one process.

W worker processes train a DDP-wrapped model, each on its slice of a global batch, with
``WEINCELoss(gather=...)``; the test process trains the bare model on the whole batch. Every
step's loss, parameter gradients, statistics and ``beta_t``, the embeddings' own gradients
(``world_size`` times the single-process rows: the scaling rule) and the final parameters must
agree. One spawn per world size runs every check (starting processes is the slow part); the
workers save what they saw and the comparisons run here. A worker's exception comes back with
its traceback, and a deadline stops the workers if anything hangs.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.slow  # starts processes

from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from weince_torch import WEINCEConfig, WEINCELoss, init_state, weince_loss  # noqa: E402
from weince_torch import distributed as wdist  # noqa: E402

ROWS = 8  # per process
DIM_IN, DIM_OUT = 16, 8
DEADLINE_S = 150  # the whole spawn; gloo's own timeout (below) ends a stuck collective first
GLOO_TIMEOUT = datetime.timedelta(seconds=60)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Tolerances, relative to each tensor's largest magnitude. float64 pins the equality: 1e-10
# (measured: 4e-13). float32 rounds differently on W processes (the gradients of gathered rows
# are summed in another order, the parameter gradients averaged by DDP): up to 2e-6 on the
# first step. The tail statistics then amplify rounding over the later steps, as they amplify
# one float32 process's own (one float32 process drifts up to 2e-5 from float64 in four steps):
# gradients and lambda differ by up to 1e-4 there, the AIC differences d_aic by up to 4e-4.
RTOL = {"float64": (1e-10, 1e-10), "float32": (1e-5, 2e-3)}  # (first step, later steps)
# Small batches: a tail of 8, and a global beta tail of 64, so that the statistics and the
# beta_t update are not trivial (the test checks that beta_t moved).
PAPER = WEINCEConfig.paper().replace(min_tail=8, top_m=6, beta_min_tail=64)
# (name, config, dtype, gather): the DDP runs of each world size.
RUNS = {
    2: [
        ("paper-float32", PAPER, "float32", "auto"),
        ("paper-float64", PAPER, "float64", "auto"),
        (
            "blend-float64",
            WEINCEConfig.blend(min_tail=8, top_m=6, beta_min_tail=64),
            "float64",
            True,
        ),
    ],
    3: [
        ("paper-float32", PAPER, "float32", "auto"),
        ("paper-float64", PAPER, "float64", "auto"),
        ("infonce-float64", WEINCEConfig.infonce(), "float64", True),
    ],
}
PER_ANCHOR = ("lambda", "rho", "d_aic")
MAX_DIFF: dict[str, float] = {}  # the largest relative difference seen (pytest -s prints it)


# --- the training run, the same code in the workers (DDP, own rows) and here (bare, all rows)


def make_model(dtype):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(DIM_IN, 32), torch.nn.ReLU(), torch.nn.Linear(32, DIM_OUT)
    )
    return model.to(dtype)


def make_steps(world_size, dtype):
    """Three steps of one batch, then one of two micro-batches (gradient accumulation)."""
    generator = torch.Generator().manual_seed(world_size)

    def views():
        x = torch.randn(world_size * ROWS, DIM_IN, generator=generator, dtype=dtype)
        return x, x + 0.5 * torch.randn(x.shape, generator=generator, dtype=dtype)

    return [[views()], [views()], [views()], [views(), views()]]


def train(model, criterion, steps, rows, ddp=False):
    """SGD over ``steps``; what each call and each step saw, and the final parameters."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    records = []
    for micro_batches in steps:
        optimizer.zero_grad()
        calls = []
        for k, (x_i, x_j) in enumerate(micro_batches):
            accumulate = ddp and k < len(micro_batches) - 1
            with model.no_sync() if accumulate else contextlib.nullcontext():
                z = model(torch.cat([x_i[rows], x_j[rows]]))
                z.retain_grad()
                z_i, z_j = z.chunk(2)
                loss = criterion(z_i, z_j)
                loss.backward()
            calls.append(
                {
                    "loss": loss.detach(),
                    "z_grad": z.grad.clone(),
                    "beta_t": criterion.beta_t.clone(),
                    "stats": {key: value.clone() for key, value in criterion.last_stats.items()},
                }
            )
        records.append({"calls": calls, "grads": [p.grad.clone() for p in model.parameters()]})
        optimizer.step()
    return {"steps": records, "params": [p.detach().clone() for p in model.parameters()]}


def own_anchors(x, rank, world_size):
    """Rows of this rank's anchors in a single-process per-anchor tensor: z_i rows, z_j rows."""
    total = world_size * ROWS
    rows = slice(rank * ROWS, (rank + 1) * ROWS)
    return torch.cat([x[:total][rows], x[total:][rows]])


# --- the workers


def _worker(rank, world_size, directory):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{directory}/store",
        rank=rank,
        world_size=world_size,
        timeout=GLOO_TIMEOUT,
    )
    try:
        torch.save(_checks(rank, world_size), Path(directory) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _checks(rank, world_size):
    rows = slice(rank * ROWS, (rank + 1) * ROWS)
    out = {"runs": {}}
    for name, config, dtype, gather in RUNS[world_size]:
        dtype = DTYPES[dtype]
        model = DistributedDataParallel(make_model(dtype))
        criterion = WEINCELoss(config, gather=gather)
        out["runs"][name] = train(model, criterion, make_steps(world_size, dtype), rows, ddp=True)

    # The shapes are exchanged only when they change.
    group = dist.group.WORLD
    exchanges = []
    all_gather = wdist._all_gather

    def counting(x, *args):
        exchanges.append(x.dtype == torch.int64)
        return all_gather(x, *args)

    wdist._all_gather = counting
    z = torch.randn(2 * ROWS + 2, DIM_OUT, dtype=torch.float64).chunk(2)
    criterion = WEINCELoss(PAPER)
    criterion(*z)
    first = sum(exchanges)
    exchanges.clear()
    criterion(*z)
    out["exchanges"] = [first, sum(exchanges)]
    wdist._all_gather = all_gather

    # Unequal row counts (every rank's shape new): a clear error on every rank, and the group
    # stays usable.
    n = 4 + (rank == 1)
    with pytest.raises(ValueError) as error:
        criterion(torch.randn(n, DIM_OUT), torch.randn(n, DIM_OUT))
    out["unequal"] = str(error.value)
    out["after_error"] = criterion(torch.randn(4, DIM_OUT), torch.randn(4, DIM_OUT)).detach()

    # gather=False: the loss of this rank's own rows, under an initialised group.
    ((x_i, x_j),) = make_steps(world_size, torch.float64)[0]
    model = make_model(torch.float64)
    out["local"] = train(model, WEINCELoss(PAPER, gather=False), [[(x_i, x_j)]], rows)

    # The reduce-scatter, native and by all-reduce.
    x = torch.arange(world_size * 3 * 2, dtype=torch.float64).reshape(world_size * 3, 2) * (
        rank + 1
    )
    out["reduce_scatter"] = [
        wdist._reduce_scatter(x, group, rank, world_size),
        wdist._reduce_scatter_by_all_reduce(x, group, rank, world_size),
    ]

    if world_size == 2:
        # torch.compile: the gathered loss is a graph break (it runs eagerly), the rest is
        # traced (the "eager" backend checks the tracing, without inductor's compile time).
        ((x_i, x_j),) = make_steps(world_size, torch.float64)[1]
        eager, compiled = WEINCELoss(PAPER), WEINCELoss(PAPER)
        compiled_call = torch.compile(compiled, backend="eager")
        out["compiled"] = []
        for criterion, call in ((eager, eager), (compiled, compiled_call)):
            for _ in range(2):  # two steps: the state moves
                z_i, z_j = (x[rows, :DIM_OUT].clone().requires_grad_(True) for x in (x_i, x_j))
                loss = call(z_i, z_j)
                loss.backward()
                out["compiled"].append(
                    [loss.detach(), z_i.grad, z_j.grad, criterion.beta_t.clone()]
                )

    if world_size == 3:
        # A subgroup of ranks 0 and 2 (group ranks 0 and 1), by the functional form.
        sub = dist.new_group([0, 2])
        if rank == 1:
            with pytest.raises(ValueError) as error:
                weince_loss(x_i[:ROWS], x_j[:ROWS], init_state(PAPER), PAPER, gather=sub)
            out["non_member"] = str(error.value)
        else:
            z_i, z_j = (x[rows].clone().requires_grad_(True) for x in (x_i, x_j))
            loss, _, _ = weince_loss(z_i, z_j, init_state(PAPER), PAPER, gather=sub)
            loss.backward()
            out["subgroup"] = {"loss": loss.detach(), "grad": torch.cat([z_i.grad, z_j.grad])}
    return out


def run_workers(world_size, directory):
    """Each rank's saved checks; a worker's traceback, or a hang, fails the test."""
    context = torch.multiprocessing.start_processes(
        _worker,
        args=(world_size, str(directory)),
        nprocs=world_size,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + DEADLINE_S
    while not context.join(timeout=max(deadline - time.monotonic(), 0.1)):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {world_size} workers did not finish within {DEADLINE_S} s")
    return [torch.load(directory / f"rank{rank}.pt") for rank in range(world_size)]


# --- the comparisons


def assert_equal(actual, expected, dtype, step, what):
    if not expected.is_floating_point():
        assert torch.equal(actual, expected), what
        return
    rtol = RTOL[dtype][min(step, 1)]
    scale = expected.abs().nan_to_num(0.0).max().item() if expected.numel() else 0.0
    torch.testing.assert_close(
        actual, expected, rtol=rtol, atol=rtol * scale, equal_nan=True, msg=lambda m: f"{what}: {m}"
    )
    finite = expected.isfinite()
    if finite.any() and scale > 0:
        diff = ((actual - expected)[finite].abs().max() / scale).item()
        key = f"{dtype}, {'first step' if step == 0 else 'later steps'}"
        MAX_DIFF[key] = max(MAX_DIFF.get(key, 0.0), diff)


@pytest.fixture(scope="module", params=[2, 3], ids=lambda w: f"world{w}")
def workers(request, tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available in this build")
    world_size = request.param
    return world_size, run_workers(world_size, tmp_path_factory.mktemp(f"world{world_size}"))


@pytest.mark.parametrize("run", range(3))
def test_ddp_steps_equal_one_process_on_the_joined_batch(workers, run):
    world_size, results = workers
    name, config, dtype, _ = RUNS[world_size][run]
    steps = make_steps(world_size, DTYPES[dtype])
    expected = train(
        make_model(DTYPES[dtype]), WEINCELoss(config, gather=False), steps, slice(None)
    )
    for rank, result in enumerate(results):
        actual = result["runs"][name]
        for t, (step, want) in enumerate(zip(actual["steps"], expected["steps"], strict=True)):
            for k, (call, ref) in enumerate(zip(step["calls"], want["calls"], strict=True)):
                where = f"{name}, rank {rank}, step {t}, call {k}"
                assert_equal(call["loss"], ref["loss"], dtype, t, f"{where}: loss")
                assert_equal(call["beta_t"], ref["beta_t"], dtype, t, f"{where}: beta_t")
                # The scaling rule: world_size times the single-process gradient of own rows.
                scaled = world_size * own_anchors(ref["z_grad"], rank, world_size)
                assert_equal(call["z_grad"], scaled, dtype, t, f"{where}: z.grad")
                for key, value in ref["stats"].items():
                    if key in PER_ANCHOR:
                        value = own_anchors(value, rank, world_size)
                    assert_equal(call["stats"][key], value, dtype, t, f"{where}: {key}")
            for p, (grad, ref) in enumerate(zip(step["grads"], want["grads"], strict=True)):
                assert_equal(grad, ref, dtype, t, f"{name}, rank {rank}, step {t}: grad {p}")
        for p, (param, ref) in enumerate(zip(actual["params"], expected["params"], strict=True)):
            assert_equal(param, ref, dtype, len(steps), f"{name}, rank {rank}: final parameter {p}")

    print(f"\n{name}, {world_size} processes: max relative differences so far {MAX_DIFF}")
    calls = [call for step in expected["steps"] for call in step["calls"]]
    if config.estimate_beta:  # the statistics were not trivial: the test could fail
        assert all(bool(call["stats"]["beta_updated"]) for call in calls)
        assert calls[-1]["beta_t"].item() != config.beta_init
    if config.uses_tail_statistics:
        assert any(call["stats"]["lambda"].abs().sum() > 0 for call in calls)


def test_shapes_are_exchanged_only_when_they_change(workers):
    _, results = workers
    for result in results:
        assert result["exchanges"] == [1, 0]


def test_unequal_row_counts_raise_on_every_rank(workers):
    _, results = workers
    expected = "z_i has 5 rows on rank 1 but 4 on rank 0"
    for result in results:
        assert expected in result["unequal"]
        assert "every rank must hold the same number of rows" in result["unequal"]
    # The group was left in step: the next call gathered, and every rank got the same loss.
    losses = torch.stack([result["after_error"] for result in results])
    assert losses.isfinite().all() and (losses == losses[0]).all()


def test_gather_false_keeps_each_rank_local(workers):
    world_size, results = workers
    ((x_i, x_j),) = make_steps(world_size, torch.float64)[0]
    for rank, result in enumerate(results):
        rows = slice(rank * ROWS, (rank + 1) * ROWS)
        expected = train(make_model(torch.float64), WEINCELoss(PAPER), [[(x_i, x_j)]], rows)
        actual = result["local"]["steps"][0]
        torch.testing.assert_close(
            actual["calls"][0]["loss"], expected["steps"][0]["calls"][0]["loss"], rtol=1e-12, atol=0
        )
        torch.testing.assert_close(
            actual["calls"][0]["z_grad"],
            expected["steps"][0]["calls"][0]["z_grad"],
            rtol=1e-12,
            atol=1e-15,
        )


def test_compiled_criterion_gathers_like_the_eager_one(workers):
    world_size, results = workers
    if world_size != 2:
        pytest.skip("the torch.compile check runs with two processes")
    for result in results:
        eager, compiled = result["compiled"][:2], result["compiled"][2:]
        assert not torch.equal(eager[1][3], eager[0][3]), "the state must move"
        for want, got in zip(eager, compiled, strict=True):
            for a, e in zip(got, want, strict=True):
                torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-15)


def test_reduce_scatter_fallback_equals_the_native_one(workers):
    world_size, results = workers
    for rank, result in enumerate(results):
        native, fallback = result["reduce_scatter"]
        x = torch.arange(world_size * 3 * 2, dtype=torch.float64).reshape(world_size * 3, 2)
        expected = x[rank * 3 : (rank + 1) * 3] * sum(range(1, world_size + 1))
        torch.testing.assert_close(native, expected)
        torch.testing.assert_close(fallback, expected)


def test_a_subgroup_gathers_over_its_members_only(workers):
    world_size, results = workers
    if world_size != 3:
        pytest.skip("the subgroup check runs with three processes")
    ((x_i, x_j),) = make_steps(world_size, torch.float64)[0]
    z_i = torch.cat([x_i[:ROWS], x_i[2 * ROWS :]]).requires_grad_(True)
    z_j = torch.cat([x_j[:ROWS], x_j[2 * ROWS :]]).requires_grad_(True)
    loss, _, _ = weince_loss(z_i, z_j, init_state(PAPER), PAPER, gather=False)
    loss.backward()
    grad = torch.cat([z_i.grad, z_j.grad])
    assert "not a member" in results[1]["non_member"]
    for group_rank, rank in enumerate((0, 2)):
        actual = results[rank]["subgroup"]
        torch.testing.assert_close(actual["loss"], loss.detach(), rtol=1e-12, atol=0)
        rows = torch.cat(
            [torch.arange(ROWS) + group_rank * ROWS, torch.arange(ROWS) + (2 + group_rank) * ROWS]
        )
        torch.testing.assert_close(actual["grad"], 2 * grad[rows], rtol=1e-10, atol=1e-15)


# --- no process group needed


@pytest.mark.parametrize(
    ("gather", "error", "match"),
    [
        ("yes", ValueError, "gather must be 'auto', True, False or a torch.distributed"),
        (None, TypeError, "got NoneType"),
        (1, TypeError, "got int"),
        (
            dist.GroupMember.NON_GROUP_MEMBER if dist.is_available() else -100,
            ValueError,
            "not a member",
        ),
    ],
)
def test_bad_gather_argument_is_rejected(gather, error, match):
    with pytest.raises(error, match=match):
        WEINCELoss(gather=gather)
    z = torch.randn(4, 3)
    with pytest.raises(error, match=match):
        weince_loss(z, z, init_state(), gather=gather)


def test_gather_true_needs_a_process_group():
    if dist.is_available() and dist.is_initialized():
        pytest.skip("a process group is initialised in this process")
    z = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="none is initialised"):
        WEINCELoss(gather=True)(z, z)
    # "auto" without a group is the local loss.
    torch.testing.assert_close(WEINCELoss()(z, z), WEINCELoss(gather=False)(z, z))


def test_wrong_device_for_the_backend_is_a_clear_error():
    class NcclLike:  # what an NCCL group reports: CUDA only
        _device_types = (torch.device("cuda"),)

    with pytest.raises(ValueError, match="inputs are on cpu"):
        wdist._check_device(torch.zeros(2, 2), NcclLike())
