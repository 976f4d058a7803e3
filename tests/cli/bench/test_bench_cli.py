"""``weince bench``: a tiny run end to end (rows, ratios, floor, JSON, plot, --compare,
--compile, --inputs). Structure only, never speed."""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="bench --plot uses matplotlib")

from weince.cli import bench

KEYS = {"backend", "device", "preset", "size", "median_ms", "ratio", "min_ms", "max_ms", "dtype"}


def run_bench(*argv: str) -> int:
    """``weince bench ARGV`` through the real command line when every command imports, else
    through ``bench.run`` with bench's own parser."""
    try:
        from weince import cli

        return cli.main(["bench", *argv])
    except ImportError:
        parser = argparse.ArgumentParser()
        bench.add_arguments(parser)
        return bench.run(parser.parse_args(list(argv)))


def installed_backends() -> set[str]:
    return {b for b in bench.BACKENDS if bench.installed(b)}


@pytest.fixture
def torch_threads_restored() -> Iterator[None]:
    """``--threads`` sets PyTorch's process-wide thread count: put it back afterwards."""
    torch = pytest.importorskip("torch") if bench.installed("torch") else None
    threads = torch.get_num_threads() if torch else None
    yield
    if torch:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not installed_backends(), reason="no framework with its adapter installed")
@pytest.mark.usefixtures("torch_threads_restored")
def test_smoke_json_plot_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    common = ["--sizes", "64", "--repeats", "2", "--warmup", "1", "--threads", "1"]
    assert run_bench(*common, "--json", str(out), "--plot", str(png)) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows
    for row in rows:
        assert KEYS <= row.keys()
        assert row["size"] == 64 and row["ratio"] > 0 and row["median_ms"] > 0
        assert row["min_ms"] <= row["median_ms"] <= row["max_ms"]
    groups = {(r["backend"], r["device"], r["dtype"], r["size"]) for r in rows}
    for group in groups:
        presets = {
            r["preset"] for r in rows if (r["backend"], r["device"], r["dtype"], r["size"]) == group
        }
        assert presets == {"floor", "infonce", "blend", "paper"}
        floor = next(
            r
            for r in rows
            if r["preset"] == "floor"
            and (r["backend"], r["device"], r["dtype"], r["size"]) == group
        )
        assert floor["ratio"] == pytest.approx(1.0)
    backends = {r["backend"] for r in rows}
    assert backends <= installed_backends()
    assert installed_backends() - {"cupy"} <= backends  # torch and JAX always have a CPU
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()

    assert (
        run_bench(*common, "--backends", *sorted(installed_backends())[:1], "--compare", str(out))
        == 0
    )
    text = capsys.readouterr().out
    assert f"change against {out}" in text
    assert "%" in text.split("change against")[1]


@pytest.mark.skipif(not bench.installed("torch"), reason="--compile needs PyTorch")
@pytest.mark.usefixtures("torch_threads_restored")
def test_compile_adds_compiled_rows_against_the_eager_floor(tmp_path: Path) -> None:
    """``--compile``: a compiled twin of the floor and of each preset, ratios to the eager floor
    (one cheap preset: each compiled method costs seconds of compilation)."""
    out = tmp_path / "bench.json"
    argv = ["--backends", "torch", "--devices", "cpu", "--sizes", "32", "--presets", "infonce"]
    argv += ["--repeats", "1", "--warmup", "1", "--threads", "1", "--inputs", "clustered"]
    assert run_bench(*argv, "--compile", "--json", str(out)) == 0
    rows = {r["preset"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"floor", "infonce", "floor compiled", "infonce compiled"}
    floor_ms = rows["floor"]["median_ms"]
    for row in rows.values():
        assert row["inputs"] == "clustered" and row["backend"] == "torch"
        assert row["ratio"] == pytest.approx(row["median_ms"] / floor_ms)


@pytest.mark.parametrize("inputs", bench.INPUTS)
def test_views_are_two_correlated_float32_views(inputs: str) -> None:
    z_i, z_j = bench.views(16, 8, inputs)
    assert z_i.shape == z_j.shape == (8, 8) and z_i.dtype == z_j.dtype == np.float32
    assert np.array_equal(z_i, bench.views(16, 8, inputs)[0])  # the same draw every time
    assert np.corrcoef(z_i.ravel(), z_j.ravel())[0, 1] > 0.5


def test_cupy_floor_gradient_matches_autograd() -> None:
    """The hand-written floor (CuPy's), run on NumPy, against PyTorch autograd of the same loss."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(0)
    z_i, z_j = rng.standard_normal((2, 8, 5))
    loss, g_i, g_j = bench.minimal_infonce_value_and_grad(np, z_i, z_j)
    t_i, t_j = (torch.tensor(z, requires_grad=True) for z in (z_i, z_j))
    u = F.normalize(torch.cat([t_i, t_j]), dim=1)
    logits = (u @ u.T / 0.5).masked_fill(torch.eye(16, dtype=torch.bool), float("-inf"))
    expected = F.cross_entropy(logits, (torch.arange(16) + 8) % 16)
    expected.backward()
    np.testing.assert_allclose(loss, expected.item(), rtol=1e-12)
    np.testing.assert_allclose(g_i, t_i.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(g_j, t_j.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_summary_statistics() -> None:
    stats = bench.summarize([4.0, 1.0, 3.0, 2.0, 5.0])
    assert stats["median_ms"] == 3.0 and stats["min_ms"] == 1.0 and stats["max_ms"] == 5.0
    assert stats["q1_ms"] == 2.0 and stats["q3_ms"] == 4.0
    assert importlib.util.find_spec("weince.cli.bench") is not None


def test_compile_takes_an_optional_torch_compile_mode() -> None:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert parser.parse_args([]).compile is None
    assert parser.parse_args(["--compile", "--sizes", "32"]).compile == "default"
    assert parser.parse_args(["--compile", "reduce-overhead"]).compile == "reduce-overhead"
    with pytest.raises(SystemExit):
        parser.parse_args(["--compile", "fastest"])


@pytest.mark.skipif(not bench.installed("torch"), reason="--threads is PyTorch's")
def test_threads_and_matmul_precision_are_put_back_after_a_run(tmp_path: Path) -> None:
    import torch

    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    wanted = 1 if threads != 1 else 2
    argv = ["--backends", "torch", "--devices", "cpu", "--sizes", "8", "--presets", "infonce"]
    argv += ["--repeats", "1", "--warmup", "1", "--threads", str(wanted)]
    assert run_bench(*argv, "--json", str(tmp_path / "bench.json")) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert f"{wanted} threads" in rows[0]["device_name"]  # the run used the setting ...
    assert torch.get_num_threads() == threads  # ... and put the process's back
    assert torch.get_float32_matmul_precision() == precision
