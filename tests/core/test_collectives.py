"""Rows spread over ranks give the single-device loss, statistics, state and gradients.

The ranks are threads here and the collectives a barrier over shared lists, so this checks the
core's sharded semantics without any communication library.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import weince_core as wc


def thread_collectives(world_size: int) -> list[wc.Collectives]:
    barrier = threading.Barrier(world_size)
    slots: list = [None] * world_size

    def exchange(rank: int, x: np.ndarray) -> list[np.ndarray]:
        slots[rank] = x
        barrier.wait()
        everyone = list(slots)
        barrier.wait()
        return everyone

    def make(rank: int) -> wc.Collectives:
        def gather(x):
            return np.concatenate(exchange(rank, x))

        def total(x):
            return sum(exchange(rank, x))

        def sum_scatter(x):
            block = x.shape[0] // world_size
            return sum(exchange(rank, x))[rank * block : (rank + 1) * block]

        return wc.Collectives(rank, world_size, gather, total, sum_scatter)

    return [make(rank) for rank in range(world_size)]


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("preset", ["paper", "blend", "infonce"])
def test_ranks_reproduce_the_single_device_run(world_size, preset):
    rng = np.random.default_rng(world_size)
    n, d = 12 * world_size, 6
    config = wc.WEINCEConfig.preset(preset, min_tail=8, top_m=6, beta_min_tail=64)
    state = np.asarray(config.beta_init)
    steps = [(rng.normal(size=(n, d)), rng.normal(size=(n, d))) for _ in range(2)]
    local = n // world_size
    states = [state] * world_size
    for z_i, z_j in steps:
        loss, (g_i, g_j), state, stats = wc.nt_xent_value_and_grad(z_i, z_j, state, config)

        def run(rank, collectives, beta, z_i=z_i, z_j=z_j):
            rows = slice(rank * local, (rank + 1) * local)
            out = wc.nt_xent_forward(z_i[rows], z_j[rows], beta, config, collectives=collectives)
            grads = wc.nt_xent_backward(out[3], config, collectives=collectives)
            return out[:3], grads

        with ThreadPoolExecutor(world_size) as pool:
            results = list(pool.map(run, range(world_size), thread_collectives(world_size), states))
        states = []
        for rank, ((r_loss, r_state, r_stats), (r_gi, r_gj)) in enumerate(results):
            rows = slice(rank * local, (rank + 1) * local)
            np.testing.assert_allclose(r_loss, loss, rtol=1e-12)
            np.testing.assert_allclose(r_state, state, rtol=1e-12)
            np.testing.assert_allclose(r_stats["rho0"], stats["rho0"], rtol=1e-12)
            np.testing.assert_allclose(r_stats["lambda_mean"], stats["lambda_mean"], rtol=1e-12)
            lam = np.concatenate([stats["lambda"][:n][rows], stats["lambda"][n:][rows]])
            np.testing.assert_allclose(r_stats["lambda"], lam, rtol=1e-12)
            np.testing.assert_allclose(r_gi, g_i[rows], rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(r_gj, g_j[rows], rtol=1e-9, atol=1e-15)
            states.append(r_state)


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("preset", ["paper", "blend", "infonce"])
@pytest.mark.parametrize("one_pass", [True, False], ids=["value_and_grad", "forward_backward"])
def test_two_tower_ranks_reproduce_the_single_device_run(world_size, preset, one_pass):
    # Each rank holds a slice of both towers: its rows of x and of y against every rank's
    # columns. The loss, state, statistics and dL/dscale are the whole batch's.
    rng = np.random.default_rng(10 + world_size)
    n, d = 12 * world_size, 6
    config = wc.WEINCEConfig.preset(preset, min_tail=8, top_m=6, beta_min_tail=64)
    state = np.asarray(config.beta_init)
    scale = np.asarray(7.0)
    local = n // world_size
    states = [state] * world_size
    for _ in range(2):
        x = rng.normal(size=(n, d))
        y = x + 0.5 * rng.normal(size=(n, d))
        loss, (g_x, g_y, g_s), state, stats = wc.two_tower_value_and_grad(
            x, y, state, config, scale=scale
        )

        def run(rank, collectives, beta, x=x, y=y):
            rows = slice(rank * local, (rank + 1) * local)
            args = (x[rows], y[rows], beta, config)
            if one_pass:
                r_loss, grads, r_state, r_stats = wc.two_tower_value_and_grad(
                    *args, scale=scale, collectives=collectives
                )
                return (r_loss, r_state, r_stats), grads
            out = wc.two_tower_forward(*args, scale=scale, collectives=collectives)
            return out[:3], wc.two_tower_backward(out[3], config, collectives=collectives)

        with ThreadPoolExecutor(world_size) as pool:
            results = list(pool.map(run, range(world_size), thread_collectives(world_size), states))
        states = []
        for rank, ((r_loss, r_state, r_stats), (r_gx, r_gy, r_gs)) in enumerate(results):
            rows = slice(rank * local, (rank + 1) * local)
            np.testing.assert_allclose(r_loss, loss, rtol=1e-12)
            np.testing.assert_allclose(r_state, state, rtol=1e-12)
            np.testing.assert_allclose(r_stats["rho0"], stats["rho0"], rtol=1e-12)
            lam = np.concatenate([stats["lambda"][:n][rows], stats["lambda"][n:][rows]])
            np.testing.assert_allclose(r_stats["lambda"], lam, rtol=1e-12)
            np.testing.assert_allclose(r_gx, g_x[rows], rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(r_gy, g_y[rows], rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(r_gs, g_s, rtol=1e-9)
            states.append(r_state)
