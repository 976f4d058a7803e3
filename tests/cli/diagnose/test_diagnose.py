"""``weince diagnose`` and ``weince.cli.diagnose.diagnosis.diagnose``: the tail fit against a
known answer,
the verdicts, WEINCE's statistics from the core, the outputs, and bad arguments."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest

pytest.importorskip("scipy", reason="weince diagnose needs scipy (the diagnose extra)")

import weince_core as wc
from weince import cli
from weince.cli import diagnose as command
from weince.cli.diagnose import diagnosis
from weince.cli.diagnose.diagnosis import ArgumentError, diagnose, format_report, tail_evidence
from weince_core import WEINCEConfig
from weince_core.stats import tail_fit, tail_size

FAST = {"bootstrap": 10}  # few resamples: the interval is coarse, the tests quick


def sphere(rows: int, dim: int, seed: int) -> np.ndarray:
    """Rows uniform on the unit sphere in ``dim`` dimensions (Gaussian rows, normalised)."""
    z = np.random.default_rng([seed, rows, dim]).standard_normal((rows, dim))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def run_command(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``weince diagnose ARGV`` in this process, as ``weince.cli`` runs it."""
    parser = argparse.ArgumentParser(prog="weince diagnose", description=command.__doc__)
    command.add_arguments(parser)
    try:
        code = command.run(parser.parse_args(argv))
    except SystemExit as exit:  # argparse's usage errors
        code = int(exit.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- the known answer -------------------------------------------------------------------------


def test_uniform_sphere_tail_has_the_known_shape_and_endpoint():
    # For unit vectors uniform on the sphere in d dimensions the cosine has density
    # proportional to (1 - t^2)^((d - 3) / 2): near 1 its tail is (1 - t)^((d - 1) / 2), a GPD
    # of shape xi = -2 / (d - 1) with endpoint 1. d = 5: xi = -0.5.
    # Tolerance: 500 rows give 124,750 pairs, about 1,250 above the 0.99 quantile. Over 8 seeds
    # of this size the MLE of xi spread with a standard deviation of 0.025 (the regular-case
    # formula (1 + xi) / sqrt(n) says 0.014; xi = -0.5 is the edge of the regular case), and
    # with 4.5 million pairs it was -0.507: the 0.99 threshold's bias is under 0.01. 0.1 is
    # four standard deviations. The endpoint was within 0.006 of 1 in every seed.
    result = diagnose(sphere(500, 5, seed=0), form="single", **FAST)
    assert result.n_exceedances == pytest.approx(0.01 * 500 * 499 / 2, abs=2)
    assert result.xi == pytest.approx(-0.5, abs=0.1)
    assert result.endpoint == pytest.approx(1.0, abs=0.02)
    assert result.xi_ci[0] < result.xi < result.xi_ci[1] < 0
    assert result.p_value_exponential < 1e-6
    assert result.verdict == "bounded"
    # WEINCE's own estimate of the same tail (the k_g largest negatives, a lower threshold):
    # xi = -1 / beta with beta = (d - 1) / 2 = 2, held to the same spread widened for the
    # least-squares fit (measured -0.52).
    assert result.xi_from_beta == pytest.approx(-0.5, abs=0.15)
    assert "verdict: bounded" in format_report(result)


def test_two_view_form_sees_the_same_tail():
    # Two independent uniform views: every negative pair is uniform too; N = 300 pairs give
    # 179,400 negative pairs, about 1,800 exceedances (tolerance as above).
    z_i, z_j = sphere(300, 5, seed=1), sphere(300, 5, seed=2)
    result = diagnose((z_i, z_j), form="two_view", **FAST)
    assert result.n_pairs == 600 * 599 // 2 - 300  # each pair once, the positives left out
    assert result.xi == pytest.approx(-0.5, abs=0.1)
    assert result.verdict == "bounded"


def test_exponential_similarities_are_gumbel_like():
    # Scores with an exponential upper tail (GPD shape exactly 0 above any threshold), far
    # below 1: the Gumbel domain. 20,000 values, 200 exceedances; a fixed seed.
    values = 0.2 + 0.02 * np.random.default_rng(3).standard_exponential(20_000)
    evidence = tail_evidence(values, threshold_quantile=0.99, **FAST)
    assert evidence.fit.ok
    assert evidence.p_value_exponential > 0.05
    assert evidence.xi_ci[0] < 0 < evidence.xi_ci[1]
    assert evidence.verdict == "gumbel-like"


def test_high_dimensional_random_embeddings_are_not_called_bounded():
    # d = 1000: xi = -2/999, the bound at 1 lies ~30 standard deviations above the cosines,
    # which are near-Gaussian (Gumbel domain) over any threshold a sample reaches.
    result = diagnose(sphere(400, 1000, seed=4), form="single", **FAST)
    assert result.verdict != "bounded"
    assert result.endpoint is None or abs(result.endpoint - 1.0) > diagnosis.ENDPOINT_TOLERANCE


def test_tail_bounded_far_below_one_asks_to_check_normalization():
    # Each row: a unit vector x_i of R^5 and a unit vector of its own, orthogonal to every
    # other row's. The cosine of rows i != j is x_i . x_j / 2: bounded, with endpoint 1/2.
    rows = 500
    z = np.concatenate([sphere(rows, 5, seed=5), np.eye(rows)], axis=1)
    result = diagnose(z, form="single", **FAST)
    assert result.endpoint == pytest.approx(0.5, abs=0.02)
    assert result.verdict == "check-normalization"


# -- WEINCE's statistics are the core's -------------------------------------------------------


def test_two_view_statistics_are_the_losses():
    z_i, z_j = sphere(200, 5, seed=6), sphere(200, 5, seed=7)
    result = diagnose((z_i, z_j), form="two_view", **FAST)
    config = WEINCEConfig.paper()
    _, _, stats, _ = wc.nt_xent_forward(z_i, z_j, wc.init_state(config, like=z_i), config)
    np.testing.assert_array_equal(result.anchors.lam, stats["lambda"])
    np.testing.assert_array_equal(result.anchors.rho, stats["rho"])
    assert result.beta_hat == float(stats["beta_hat"])
    assert result.lambda_mean == pytest.approx(float(stats["lambda_mean"]), rel=1e-12)


def test_single_form_statistics_are_each_rows_tail_fit():
    # The single form's negatives of row i are all rows j != i: its rho and dAIC must be the
    # core's tail fit of the k largest of them (sorted here, independently of the selection).
    z = sphere(120, 5, seed=8)
    result = diagnose(z, form="single", threshold_quantile=0.95, **FAST)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    config = WEINCEConfig.paper()
    top = -np.sort(-sim, axis=1)[:, : tail_size(119, config)]
    rho, d_aic = tail_fit(top, config, np)
    np.testing.assert_allclose(result.anchors.rho, rho, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.anchors.d_aic, d_aic, rtol=1e-7, atol=1e-9)


def test_batches_split_evenly_and_resample_batches_when_many():
    z = sphere(600, 5, seed=9)
    few = diagnose(z, form="single", batch_size=250, **FAST)
    assert few.batches == 3 and len(few.rho0) == 3 and few.bootstrap["unit"] == "anchors"
    assert few.n_pairs == 3 * (200 * 199 // 2)  # pairs within a batch only
    assert sorted(set(few.anchors.batch.tolist())) == [0, 1, 2]
    many = diagnose(z, form="single", batch_size=30, threshold_quantile=0.9, **FAST)
    assert many.batches == 20 and many.bootstrap["unit"] == "batches"


# -- fits that fail ---------------------------------------------------------------------------


def test_profile_grid_takes_over_when_the_optimiser_fails(monkeypatch):
    sample = diagnosis.stats.genpareto.rvs(-0.3, scale=0.05, size=400, random_state=10)
    xi, sigma, _, method = diagnosis.fit_gpd(sample)
    assert method == "mle"

    def broken(*args, **kwargs):
        raise RuntimeError("optimiser failed")

    monkeypatch.setattr(diagnosis.stats.genpareto, "fit", broken)
    grid_xi, grid_sigma, _, grid_method = diagnosis.fit_gpd(sample)
    assert grid_method == "profile-grid"
    assert grid_xi == pytest.approx(xi, abs=0.015)  # the grid's step is 0.01
    assert grid_sigma == pytest.approx(sigma, rel=0.05)


def test_failed_fit_prints_no_verdict(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(
        diagnosis, "fit_gpd", lambda excess, start=None: (np.nan, np.nan, np.nan, "failed")
    )
    path = tmp_path / "z.npy"
    np.save(path, sphere(200, 5, seed=11))
    out_json = tmp_path / "d.json"
    code, out, _ = run_command(
        [str(path), "--form", "single", "--bootstrap", "10", "--json", str(out_json)], capsys
    )
    assert code == 0
    assert "FAILED" in out and "fit failed" in out
    assert "verdict:" not in out
    report = json.loads(out_json.read_text())
    assert report["verdict"] == "fit-failed" and report["xi"] is None


def test_identical_rows_give_a_failed_fit_not_a_verdict():
    # Every similarity is 1: nothing lies above the threshold, so there is nothing to fit.
    result = diagnose(np.ones((100, 3)), form="single", **FAST)
    assert result.verdict == "fit-failed" and result.n_exceedances == 0
    assert np.isnan(result.xi) and result.endpoint is None
    assert result.as_json()["xi"] is None
    assert "verdict:" not in format_report(result)


# -- the command's outputs --------------------------------------------------------------------


def test_command_writes_json_csv_and_plot_with_the_functions_numbers(tmp_path, capsys):
    z_i, z_j = sphere(150, 5, seed=12), sphere(150, 5, seed=13)
    path = tmp_path / "views.npy"
    np.save(path, np.stack([z_i, z_j]))  # (2, N, d), as crosscheck --input reads it
    files = {name: tmp_path / f"out.{name}" for name in ("json", "csv", "png")}
    code, out, err = run_command(
        [str(path), "--bootstrap", "10", "--seed", "3", "--json", str(files["json"]),
         "--csv", str(files["csv"]), "--plot", str(files["png"]), "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    assert err == ""  # stderr is no terminal here: no progress bar
    report = json.loads(files["json"].read_text())
    required = {"threshold", "n_exceedances", "xi", "xi_ci", "sigma", "endpoint",
                "p_value_exponential", "lambda_mean", "beta_hat", "verdict"}  # fmt: skip
    assert required <= set(report)
    assert len(report["xi_ci"]) == 2
    assert f"verdict: {report['verdict']}" in out

    same = diagnose((z_i, z_j), form="two_view", bootstrap=10, seed=3)
    assert report == {"input": str(path), **json.loads(json.dumps(same.as_json()))}
    assert report["xi"] == same.xi and report["beta_hat"] == same.beta_hat

    with files["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 300  # one per anchor: both views of every pair
    assert {"batch", "view", "row", "rho", "d_aic", "lambda", "rho0"} <= set(rows[0])
    assert [r["view"] for r in rows[:1] + rows[150:151]] == ["z_i", "z_j"]
    np.testing.assert_allclose([float(r["lambda"]) for r in rows], same.anchors.lam)

    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_registered_in_the_command_line(tmp_path, capsys):
    path = tmp_path / "z.npy"
    np.save(path, sphere(200, 5, seed=21))
    assert cli.main(["diagnose", str(path), "--form", "single", "--bootstrap", "10"]) == 0
    assert "verdict: " in capsys.readouterr().out


def test_npz_steps_are_batches(tmp_path, capsys):
    z_i = np.stack([sphere(100, 5, seed=s) for s in (14, 15)])
    z_j = np.stack([sphere(100, 5, seed=s) for s in (16, 17)])
    path = tmp_path / "steps.npz"
    np.savez(path, z_i=z_i, z_j=z_j)
    out_json = tmp_path / "d.json"
    code, _, err = run_command([str(path), "--bootstrap", "10", "--json", str(out_json)], capsys)
    assert code == 0, err
    report = json.loads(out_json.read_text())
    assert report["batches"] == 2 and len(report["rho0"]) == 2


# -- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--threshold-quantile", "1.5"], "--threshold-quantile"),
        (["--threshold-quantile", "0"], "--threshold-quantile"),
        (["--bootstrap", "3"], "--bootstrap"),
        (["--batch-size", "1"], "--batch-size"),
        (["--config", "infonce"], "--config"),
        (["--json", "no/such/folder/d.json"], "--json"),
        (["--csv", "no/such/folder/d.csv"], "--csv"),
        (["--plot", "no/such/folder/d.png"], "--plot"),
        (["--threshold-quantile", "0.9999"], "EMBEDDINGS"),  # too few pairs for that tail
    ],
)
def test_bad_options_exit_2_naming_the_option(extra, named, tmp_path, capsys):
    path = tmp_path / "z.npy"
    np.save(path, sphere(100, 5, seed=18))
    code, out, err = run_command([str(path), "--form", "single", *extra], capsys)
    assert code == 2
    assert named in err
    assert out == ""  # nothing computed, nothing reported


@pytest.mark.parametrize(
    ("array", "form", "message"),
    [
        (np.zeros((3, 4, 5)), "two_view", "(2, N, d) or (2N, d)"),  # crosscheck's loader
        (np.zeros((3, 4, 5)), "single", "(R, d)"),
        (np.zeros((8, 3)), "single", "a tail fit needs"),
        (np.full((400, 3), np.nan), "single", "NaN"),
    ],
)
def test_bad_embeddings_exit_2_naming_them(array, form, message, tmp_path, capsys):
    path = tmp_path / "z.npy"
    np.save(path, array)
    code, out, err = run_command([str(path), "--form", form], capsys)
    assert code == 2
    assert "EMBEDDINGS" in err and message in err
    assert out == ""


def test_missing_file_exits_2(tmp_path, capsys):
    code, _, err = run_command([str(tmp_path / "absent.npy"), "--form", "single"], capsys)
    assert code == 2 and "EMBEDDINGS: no such file" in err


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"threshold_quantile": 1.0}, "threshold_quantile"),
        ({"threshold_quantile": -0.1}, "threshold_quantile"),
        ({"bootstrap": 0}, "bootstrap"),
        ({"batch_size": 1}, "batch_size"),
        ({"config": "infonce"}, "config"),
        ({"config": "no-such-preset"}, "config"),
        ({"form": "three_view"}, "form"),
    ],
)
def test_function_rejects_bad_arguments_before_work(kwargs, argument):
    with pytest.raises(ArgumentError, match=f"^{argument}: ") as caught:
        diagnose(sphere(100, 5, seed=19), **{"form": "single", **kwargs})
    assert caught.value.argument == argument
    assert isinstance(caught.value, ValueError)


def test_function_rejects_bad_embeddings():
    z = sphere(100, 5, seed=20)
    z[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"embeddings: .*NaN or infinity at index \(7, 2\)"):
        diagnose(z, form="single")
    with pytest.raises(ValueError, match=r"embeddings: .*one shape"):
        diagnose((np.zeros((5, 3)), np.zeros((6, 3))), form="two_view")
    with pytest.raises(ValueError, match=r"embeddings: .*a tail fit needs at least"):
        diagnose(np.ones((10, 3)), form="single")
