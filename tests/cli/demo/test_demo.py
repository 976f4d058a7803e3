"""``weince demo``: the smoke protocol end to end, the augmentation, and ``--data`` loading."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="the demo trains with PyTorch")
pytest.importorskip("sklearn", reason="the demo evaluates with scikit-learn")
pytest.importorskip("matplotlib", reason="the demo plots with matplotlib")

from weince import cli
from weince.cli.demo.augment import Augmentation, augment
from weince.cli.demo.data import DataError, load_digits_dataset, load_npz_dataset
from weince.cli.demo.protocol import Protocol, learning_rates
from weince.cli.demo.report import paired_differences, summarize

CHANCE = 0.1  # ten classes
METRICS = ["knn_1", "knn_5", "knn_20", "linear"]
CURVES = ["loss", "loss_blend", "lambda_mean", "frac_lambda_above_half", "beta_t", "lr"]


def run_demo(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """``weince demo ARGV`` through the real command line, whatever other commands exist."""
    monkeypatch.setattr(cli, "COMMANDS", {"demo": cli.COMMANDS["demo"]})
    return cli.main(["demo", *argv])


def quick_run(tmp: Path, backend: str) -> dict[str, Any]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        code = run_demo(
            monkeypatch,
            *("--quick", "--no-progress", "--save-embeddings"),
            *("--backend", backend, "--out", str(tmp)),
        )
    assert code == 0
    return {"out": tmp, "results": json.loads((tmp / "results.json").read_text())}


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return quick_run(tmp_path_factory.mktemp("demo_torch"), "torch")


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    for module in ("jax", "optax", "weince_jax"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"--backend jax needs {module}, which is not installed")
    import weince_jax

    if not hasattr(weince_jax, "weince_loss"):
        pytest.skip("weince_jax does not provide weince_loss yet")
    return quick_run(tmp_path_factory.mktemp("demo_jax"), "jax")


def check_run(run: dict[str, Any], backend: str) -> None:
    out, results = run["out"], run["results"]
    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000  # a drawn figure, not blank
    table = (out / "table.txt").read_text()
    assert "smoke test" in table  # --quick says its numbers are not a result
    for label in ("infonce", "paper", "pixels", "random encoder", "kNN k=5", "linear probe"):
        assert label in table
    assert results["backend"] == backend
    assert set(results["summary"]) == {"pixels", "random encoder", "infonce", "paper"}
    assert set(results["differences_vs_infonce"]) == {"paper"}
    for method, stats in results["summary"].items():
        for metric in METRICS:
            assert CHANCE < stats[metric]["mean"] <= 1.0, (method, metric)
            assert stats[metric]["std"] >= 0.0

    trained = [r for r in results["runs"] if r["method"] in ("infonce", "paper")]
    assert len(trained) == 2 * len(results["seeds"])
    steps = results["protocol"]["epochs"] * results["steps_per_epoch"]
    for run_ in trained:
        assert run_["seconds"] > 0
        for key in CURVES:
            values = np.array(run_["curves"][key], dtype=float)
            assert values.shape == (steps,) and np.all(np.isfinite(values)), key
        lam = np.array(run_["curves"]["lambda_mean"])
        beta = np.array(run_["curves"]["beta_t"])
        if run_["method"] == "infonce":
            assert np.all(lam == 0.0)
        else:  # the paper preset blends some anchors and moves beta_t online
            assert np.all((lam > 0.0) & (lam < 1.0))
            assert np.all(beta > 0.0) and np.ptp(beta) > 0.0
        # --save-embeddings: the projections of the test images, for weince diagnose.
        saved = np.load(out / "embeddings" / f"{run_['method']}-seed{run_['seed']}.npy")
        projection_dim = results["protocol"]["projection_dim"]
        assert saved.shape == (results["dataset"]["test"], projection_dim)
        assert saved.dtype == np.float32 and np.all(np.isfinite(saved)) and np.ptp(saved) > 0


def test_quick_run_writes_table_png_and_json_with_accuracies_above_chance(torch_run):
    check_run(torch_run, "torch")


def test_quick_run_table_is_printed_and_saved(tmp_path, monkeypatch, capsys):
    data = tmp_path / "digits.npz"
    digits = load_digits_dataset()
    np.savez(data, x=digits.x[:400, 0], y=digits.y[:400])  # (n, h, w), the user's own images
    code = run_demo(
        monkeypatch, "--data", str(data), "--quick", "--epochs", "1", "--batch-size", "64",
        "--no-progress", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["dataset"]["name"] == "digits.npz"
    assert results["dataset"]["train"] + results["dataset"]["test"] == 400
    assert (results["protocol"]["batch_size"], results["protocol"]["epochs"]) == (64, 1)
    for method in ("infonce", "paper"):
        assert results["summary"][method]["linear"]["mean"] > CHANCE
    for line in (tmp_path / "out" / "table.txt").read_text().splitlines():
        assert line in printed


def test_jax_quick_run_matches_the_torch_protocol(torch_run, jax_run):
    check_run(jax_run, "jax")
    torch_results, jax_results = torch_run["results"], jax_run["results"]
    assert jax_results["protocol"] == torch_results["protocol"]
    # Same initial weights and the same first batch: the first step's loss agrees.
    for loss in ("infonce", "paper"):
        first = [
            next(r for r in results["runs"] if r["method"] == loss)["curves"]["loss"][0]
            for results in (torch_results, jax_results)
        ]
        assert first[0] == pytest.approx(first[1], rel=1e-4), loss
    # Same initial weights: the untrained encoder's features score the same.
    untrained = [r["summary"]["random encoder"] for r in (torch_results, jax_results)]
    for metric in METRICS:
        assert untrained[0][metric]["mean"] == pytest.approx(untrained[1][metric]["mean"], abs=0.01)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs: must be >= 1"),
        (["--batch-size", "1"], "--batch-size: must be >= 2"),
        (["--lr", "-1"], "--lr: must be a finite number > 0"),
        (["--backend", "numpy"], "--backend: invalid choice"),
    ],
)
def test_bad_flags_are_refused_naming_the_flag(argv, message, monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_demo(monkeypatch, *argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unusable_data_file_exits_with_a_message_naming_data(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "labels_only.npz"
    np.savez(bad, y=np.arange(10))
    assert run_demo(monkeypatch, "--data", str(bad), "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "--data" in err and "'x'" in err
    assert not (tmp_path / "results.json").exists()


def test_absent_cuda_device_is_refused_naming_the_flag(tmp_path, monkeypatch, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    assert run_demo(monkeypatch, "--device", "cuda", "--out", str(tmp_path)) == 2
    assert "--device cuda" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


# --- the augmentation -------------------------------------------------------------------


def digits_batch(n: int = 32) -> np.ndarray:
    return load_digits_dataset().x[:n]


@pytest.mark.parametrize("shape", [(16, 1, 8, 8), (5, 3, 12, 10)])
def test_augment_keeps_shape_and_range(shape):
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    views = augment(x, np.random.default_rng(1), Augmentation())
    assert views.shape == shape and views.dtype == np.float32
    assert views.min() >= 0.0 and views.max() <= 1.0
    assert not np.allclose(views, x)


def test_augment_is_deterministic_under_a_seed():
    x = digits_batch()
    first = augment(x, np.random.default_rng(7), Augmentation())
    again = augment(x, np.random.default_rng(7), Augmentation())
    other = augment(x, np.random.default_rng(8), Augmentation())
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_augment_with_zero_strength_is_the_identity():
    x = digits_batch()
    none = Augmentation(
        max_rotation_deg=0.0, scale_range=(1.0, 1.0), max_shift=0.0, contrast_range=(1.0, 1.0),
        max_brightness=0.0, noise_std=0.0, cutout_prob=0.0,
    )  # fmt: skip
    np.testing.assert_allclose(augment(x, np.random.default_rng(0), none), x, atol=1e-6)


def test_augment_shift_moves_the_ink_and_keeps_the_digit():
    x = digits_batch(64)
    shift_only = Augmentation(
        max_rotation_deg=0.0, scale_range=(1.0, 1.0), max_shift=0.125, contrast_range=(1.0, 1.0),
        max_brightness=0.0, noise_std=0.0, cutout_prob=0.0,
    )  # fmt: skip
    views = augment(x, np.random.default_rng(0), shift_only)
    rows = np.arange(8)[None, :]
    centre = (views.sum(axis=(1, 3)) * rows).sum(1) / views.sum(axis=(1, 2, 3))
    original = (x.sum(axis=(1, 3)) * rows).sum(1) / x.sum(axis=(1, 2, 3))
    moved = np.abs(centre - original)
    assert moved.max() > 0.2 and moved.max() <= 1.0 + 1e-6  # at most one pixel
    assert np.corrcoef(views.ravel(), x.ravel())[0, 1] > 0.3


# --- --data ----------------------------------------------------------------------------


def test_npz_with_grey_images_loads_as_one_channel(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 6, 5)).astype(np.uint8)
    y = np.array(["cat", "dog", "eel"] * 4)
    np.savez(tmp_path / "grey.npz", x=x, y=y)
    data = load_npz_dataset(tmp_path / "grey.npz")
    assert data.x.shape == (12, 1, 6, 5) and data.x.dtype == np.float32
    assert data.x.min() == 0.0 and data.x.max() == 1.0
    expected = (x - x.min()) / (x.max() - x.min())
    np.testing.assert_allclose(data.x[:, 0], expected, rtol=1e-6)
    assert data.class_names == ("cat", "dog", "eel")
    np.testing.assert_array_equal(data.y, np.tile([0, 1, 2], 4))


def test_npz_with_colour_images_puts_channels_first(tmp_path):
    x = np.random.default_rng(0).random((10, 7, 9, 3))
    np.savez(tmp_path / "colour.npz", x=x, y=np.arange(10) % 2 + 5)
    data = load_npz_dataset(tmp_path / "colour.npz")
    assert data.x.shape == (10, 3, 7, 9)
    scaled = (x - x.min()) / (x.max() - x.min())
    np.testing.assert_allclose(data.x[4, 2], scaled[4, :, :, 2], rtol=1e-5)
    assert data.num_classes == 2 and set(data.y) == {0, 1}


@pytest.mark.parametrize("missing", ["x", "y"])
def test_npz_missing_key_names_the_key(tmp_path, missing):
    arrays = {"x": np.zeros((4, 8, 8)), "y": np.arange(4)}
    del arrays[missing]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(DataError, match=f"no array named '{missing}'"):
        load_npz_dataset(tmp_path / "partial.npz")


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((4, 64)), np.arange(4), r"'x' must have shape \(n, h, w\)"),
        (np.zeros((4, 8, 8)), np.arange(5), r"'y' must have shape \(4,\)"),
        (np.full((4, 8, 8), np.nan), np.arange(4), "'x' holds NaN"),
        (np.zeros((4, 8, 8)), np.zeros(4), "at least 2 classes"),
    ],
)
def test_npz_with_bad_arrays_is_refused(tmp_path, x, y, message):
    np.savez(tmp_path / "bad.npz", x=x, y=y)
    with pytest.raises(DataError, match=message):
        load_npz_dataset(tmp_path / "bad.npz")


def test_missing_npz_file_is_refused(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_npz_dataset(tmp_path / "absent.npz")


def test_npy_file_and_object_labels_are_refused(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((4, 8, 8)))
    with pytest.raises(DataError, match=r"not an \.npz archive"):
        load_npz_dataset(tmp_path / "images.npy")
    np.savez(tmp_path / "objects.npz", x=np.zeros((2, 8, 8)), y=np.array([1, "a"], dtype=object))
    with pytest.raises(DataError, match="numeric"):
        load_npz_dataset(tmp_path / "objects.npz")


# --- protocol and summaries ----------------------------------------------------------------


def test_learning_rate_warms_up_then_decays():
    protocol = Protocol(lr=0.01, warmup_fraction=0.1)
    lrs = learning_rates(protocol, 100)
    peak = int(np.argmax(lrs))
    assert lrs.shape == (100,) and np.all(lrs > 0)
    assert lrs[peak] == pytest.approx(0.01)
    assert np.all(np.diff(lrs[: peak + 1]) > 0) and np.all(np.diff(lrs[peak:]) < 0)
    assert lrs[-1] < 0.01 * 0.01


def test_summaries_are_means_and_paired_differences_over_seeds():
    rng = np.random.default_rng(0)
    scores = {(m, s): rng.random() for m in ("infonce", "paper") for s in range(3)}
    runs = [{"method": m, "seed": s, "metrics": {"linear": v}} for (m, s), v in scores.items()]
    summary = summarize(runs, ["linear"])
    paper = [scores[("paper", s)] for s in range(3)]
    assert summary["paper"]["linear"]["mean"] == pytest.approx(np.mean(paper))
    assert summary["paper"]["linear"]["std"] == pytest.approx(np.std(paper, ddof=1))
    gaps = [scores[("paper", s)] - scores[("infonce", s)] for s in range(3)]
    difference = paired_differences(runs, ["infonce", "paper"], ["linear"])
    assert set(difference) == {"paper"}
    assert difference["paper"]["linear"]["mean"] == pytest.approx(np.mean(gaps))
    assert difference["paper"]["linear"]["std"] == pytest.approx(np.std(gaps, ddof=1))
