"""Closure campaigns end to end: the spec section, replicas that stay the same data, `qcf-studio campaign` on a
real LocalCluster with its summary contract, resuming after a kill or Ctrl-C, and a failing fit that does not
stop the campaign."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from qcf_studio.engine.campaign.plan import CampaignPlan, FitKey, campaign_of, replica_truth
from qcf_studio.engine.run.runner import measured_data
from qcf_studio.engine.spec import SpecError, parse_spec

EXE = Path(sys.executable).parent / "qcf-studio"

# gauss6 likelihood fits of 2000 events per data set take well under a second each
GAUSS6 = {
    "version": 1,
    "name": "g6",
    "problem": {"kind": "gauss6", "events": 2000, "seed": 3},
    "training": {"method": "mle", "steps": 200},
    "ensemble": {"members": 1},
    "cluster": {"workers": 2},
}


def _spec_file(tmp_path: Path, name: str = "g6", **campaign) -> Path:
    raw = {**GAUSS6, "name": name, "campaign": {"methods": ["mle"], **campaign}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("campaign", "field", "words"),
    [
        ({"replicas": 1}, "campaign.replicas", "at least 2"),
        ({"replicas": "many"}, "campaign.replicas", "whole number"),
        ({"replicas": 20_000}, "campaign.replicas", "limit"),
        ({"truths": "posterior"}, "campaign.truths", "fixed, prior"),
        ({"methods": ["gan", "vae"]}, "campaign.methods", "not available"),
        ({"methods": ["mle", "mle"]}, "campaign.methods", "each method once"),
        ({"methods": []}, "campaign.methods", "expected a list"),
        ({"prior_bounds": {"p0": [0, 1]}}, "campaign.prior_bounds", "truths is fixed"),
        ({"truths": "prior", "prior_bounds": {"p9": [0, 1]}}, "campaign.prior_bounds.p9", "unknown parameter"),
        ({"truths": "prior", "prior_bounds": {"p0": [1, 0]}}, "campaign.prior_bounds.p0", "below"),
        ({"truths": "prior", "prior_bounds": {"p0": [-1, 1]}}, "campaign.prior_bounds.p0", "outside problem.bounds"),
        ({"seeds": 3}, "campaign.seeds", "unknown key"),
    ],
)
def test_a_bad_campaign_section_names_its_field(campaign, field, words):
    with pytest.raises(SpecError) as e:
        parse_spec({**GAUSS6, "campaign": campaign})
    assert e.value.field == field and words in e.value.message


def test_campaign_specs_that_cannot_be_fitted_are_refused():
    with pytest.raises(SpecError, match="problem.data must be null"):
        parse_spec({"problem": {"kind": "proxy1d", "data": "x.nc"}, "campaign": {"replicas": 3}})
    with pytest.raises(SpecError, match="resolution smearing only") as e:
        parse_spec({"detector": {"acceptance": {"max": 0.9}}, "campaign": {"methods": ["gan", "mle"]}})
    assert e.value.field == "campaign.methods"


def test_an_invalid_campaign_exits_2_before_any_cluster_or_folder(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**GAUSS6, "campaign": {"replicas": 1}}))
    t0 = time.monotonic()
    r = _cli("campaign", str(path), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "campaign.replicas" in r.stderr and r.stdout == ""
    assert time.monotonic() - t0 < 20 and not (tmp_path / "out" / "g6").exists()
    r = _cli("campaign", str(_spec_file(tmp_path)), "--out", str(tmp_path / "out"), "--replicas", "1")
    assert r.returncode == 2 and "--replicas" in r.stderr


SAMPLE_SPECS = sorted((Path(__file__).parents[1] / "sample_data").glob("*.yaml"))


@pytest.mark.parametrize("path", SAMPLE_SPECS, ids=lambda p: p.name)
def test_every_sample_spec_is_valid_and_the_campaign_one_fits_both_methods(path):
    from qcf_studio.engine.spec import load_spec

    spec = load_spec(path)
    if path.name.startswith("campaign"):
        assert spec.campaign is not None and spec.campaign.methods == ["gan", "mle"]
        assert spec.campaign.replicas >= 30 and spec.ensemble.bootstrap


def test_replica_data_are_the_same_whatever_else_changes():
    base = parse_spec({**GAUSS6, "campaign": {"replicas": 5, "methods": ["mle"]}})
    other = parse_spec(
        {
            **GAUSS6,
            "training": {"method": "gan", "steps": 7},
            "ensemble": {"members": 4},
            "campaign": {"replicas": 40, "methods": ["gan", "mle"]},
        }
    )
    a = measured_data(CampaignPlan(base, "unused").fit_spec(FitKey(3, "mle")))
    b = measured_data(CampaignPlan(other, "unused").fit_spec(FitKey(3, "gan")))
    c = measured_data(CampaignPlan(other, "unused").fit_spec(FitKey(4, "gan")))
    assert np.array_equal(a.events, b.events) and np.array_equal(a.xsec, b.xsec)
    assert not np.array_equal(a.events, c.events)


def test_prior_truths_are_drawn_within_their_bounds_reproducibly():
    spec = parse_spec({**GAUSS6, "campaign": {"replicas": 50, "truths": "prior", "prior_bounds": {"p0": [1.5, 2.5]}}})
    truths = np.array([list(replica_truth(spec, r).values()) for r in range(50)])
    assert np.all((truths[:, 0] >= 1.5) & (truths[:, 0] <= 2.5))
    lo, hi = spec.problem.bounds["p1"]
    assert np.all((truths[:, 1] >= lo) & (truths[:, 1] <= hi)) and np.ptp(truths[:, 1]) > 0.5 * (hi - lo)
    assert np.array_equal(truths, [list(replica_truth(spec, r).values()) for r in range(50)])
    fit = CampaignPlan(spec, "unused").fit_spec(FitKey(7, "mle"))
    assert list(fit.problem.truth.values()) == list(truths[7])


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("mle-r*.nc")}


@pytest.mark.slow
def test_campaign_cli_writes_fits_and_a_summary_and_a_rerun_skips_them(tmp_path):
    spec = _spec_file(tmp_path, replicas=12, truths="prior")
    out = tmp_path / "out"
    r = _cli("campaign", str(spec), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    folder = out / "g6"
    summary_path = Path(r.stdout.strip().splitlines()[-1])
    assert summary_path == folder / "summary.nc"
    assert sorted(_files(folder)) == [f"mle-r{i:04d}.nc" for i in range(12)]
    with xr.open_dataset(summary_path, engine="h5netcdf") as ds:
        ds.load()
    for name, dims in [
        ("estimate", ("method", "replica", "param")),
        ("error", ("method", "replica", "param")),
        ("pull", ("method", "replica", "param")),
        ("truth", ("replica", "param")),
        ("coverage_1sigma", ("method", "param")),
        ("coverage_2sigma", ("method", "param")),
        ("r_bv", ("method", "param")),
        ("r_bv_interval", ("method", "param", "bound")),
        ("pull_mean", ("method", "param")),
        ("pull_width", ("method", "param")),
        ("pull_ks_pvalue", ("method", "param")),
        ("qcf_xi_1sigma", ("method", "qcf", "x")),
        ("qcf_r_bv", ("method", "qcf", "x")),
        ("status", ("method", "replica")),
        ("wall_seconds", ("method", "replica")),
        ("sbc_rank", ("method", "replica", "param")),
    ]:
        assert ds[name].dims == dims, name
    assert list(ds["status"].values[0]) == ["completed"] * 12
    assert ds["truth"].std("replica").min() > 0  # prior truths differ
    pulls = (ds["estimate"] - ds["truth"]) / ds["error_toward_truth"]
    np.testing.assert_allclose(ds["pull"], pulls)
    for r, j in zip(*np.nonzero(ds["error_toward_truth"].values[0] != ds["error"].values[0])):
        with xr.open_dataset(folder / f"mle-r{r:04d}.nc", engine="h5netcdf") as fit:  # MINOS ran there
            assert np.isfinite(float(fit["params_minos_upper"].values[0, j]))
    assert set(ds["sbc_rank"].values.ravel()) <= set(range(101))
    verdicts = yaml.safe_load(ds.attrs["verdicts"])
    assert set(verdicts["mle"]) == {"p0", "p1"}
    assert "p0" in ds.attrs["verdict_mle"] and parse_spec(yaml.safe_load(ds.attrs["spec"])).campaign.replicas == 12
    with xr.open_dataset(folder / "mle-r0003.nc", engine="h5netcdf") as fit:  # an ordinary run's file
        assert fit.attrs["status"] == "completed" and fit.attrs["campaign_replica"] == 3
        np.testing.assert_allclose(fit["params_true"], ds["truth"].sel(replica=3))

    before = _files(folder)
    summary_path.unlink()
    # nothing left to fit: the summary is rebuilt without a cluster (nothing listens on the discard port)
    r = _cli("campaign", str(spec), "--out", str(out), "--scheduler", "tcp://127.0.0.1:9")
    assert r.returncode == 0 and "12 of 12 fits done already" in r.stderr, r.stderr
    assert "fitting the rest" not in r.stderr and r.stdout.strip().splitlines()[-1] == str(summary_path)
    assert _files(folder) == before  # nothing refitted or rewritten
    with xr.open_dataset(summary_path, engine="h5netcdf") as again:
        xr.testing.assert_identical(again["estimate"].load(), ds["estimate"])

    r = _cli("campaign", str(spec), "--out", str(out), "--replicas", "14")  # grown: only the new replicas fitted
    assert r.returncode == 0 and "12 of 14 fits done already" in r.stderr, r.stderr[-2000:]
    grown = _files(folder)
    assert len(grown) == 14 and all(grown[name] == before[name] for name in before)
    assert yaml.safe_load((folder / "campaign.yaml").read_text())["campaign"]["replicas"] == 14

    r = _cli("export", str(summary_path), "--format", "png,html", "--out", str(tmp_path / "figs"))
    assert r.returncode == 0, r.stderr[-2000:]
    written = [Path(line) for line in r.stdout.split()]
    assert {p.name for p in written} >= {"g6-pulls.png", "g6-coverage.png", "g6-r_bv.png", "g6-report.html"}
    assert all(p.stat().st_size > 1000 for p in written)

    changed = _spec_file(tmp_path, replicas=12, truths="prior").read_text().replace("steps: 200", "steps: 300")
    (tmp_path / "changed.yaml").write_text(changed)
    r = _cli("campaign", str(tmp_path / "changed.yaml"), "--out", str(out))
    assert r.returncode == 2 and "training.steps differs" in r.stderr


@pytest.mark.slow
def test_bench_campaign_reports_fits_per_hour_on_each_worker_count():
    r = _cli(
        "bench", "campaign", "--problem", "gauss6", "--method", "mle", "--replicas", "4", "--ranks", "1,2", "--json"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["what"] == "campaign" and out["replicas"] == 4
    assert out["fits_per_hour_1w"] > 0 and out["fits_per_hour_2w"] > 0 and out["wall_seconds_2w"] > 0
    assert out["fits_per_hour_ratio_2w_1w"] == pytest.approx(out["fits_per_hour_2w"] / out["fits_per_hour_1w"])


def _start(spec: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(EXE), "campaign", str(spec), "--out", str(out), "--workers", "2", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_fits(folder: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(_files(folder)) < n:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "no fits finished in time"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_killed_campaign_resumes_without_rewriting_a_finished_fit(tmp_path):
    spec, out = _spec_file(tmp_path, replicas=20), tmp_path / "out"
    proc = _start(spec, out)
    _wait_for_fits(out / "g6", 4, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the client and its embedded cluster, mid-campaign
    proc.wait(30)
    kept = _files(out / "g6")
    assert 4 <= len(kept) < 20
    r = _cli("campaign", str(spec), "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"{len(kept)} of 20 fits done already" in r.stderr
    after = _files(out / "g6")
    assert len(after) == 20 and all(after[name] == kept[name] for name in kept)
    assert not list((out / "g6").glob(".*.part"))


@pytest.mark.slow
def test_ctrl_c_keeps_finished_fits_writes_the_summary_and_exits_130(tmp_path):
    spec, out = _spec_file(tmp_path, replicas=60), tmp_path / "out"
    proc = _start(spec, out)
    _wait_for_fits(out / "g6", 3, proc)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert stdout.strip().splitlines()[-1] == str(out / "g6" / "summary.nc")
    with xr.open_dataset(out / "g6" / "summary.nc", engine="h5netcdf") as ds:
        statuses = list(ds["status"].values[0])
    done = statuses.count("completed")
    assert done == len(_files(out / "g6")) and 3 <= done < 60
    assert set(statuses) <= {"completed", "stopped"}


def _poisoned_problem():
    """gauss6 whose pseudo-data are NaN (every likelihood non-finite) when the truth's p0 is above 3.4."""
    import torch

    from qcf_studio.engine.problems import register_problem
    from qcf_studio.engine.problems.gauss6 import Gauss6

    @register_problem
    class Gauss6Poisoned(Gauss6):
        kind = "gauss6-poisoned-test"

        def pseudo_events(self, theta, n, generator):
            events, xsec = super().pseudo_events(theta, n, generator)
            return (events * torch.nan if float(theta[0]) > 3.4 else events), xsec

    return Gauss6Poisoned


@pytest.mark.slow
def test_a_failing_fit_is_marked_failed_and_the_campaign_completes_the_rest(tmp_path):
    from distributed import Client, LocalCluster

    from qcf_studio.engine.campaign.driver import CampaignRunner

    _poisoned_problem()
    raw = {
        **GAUSS6,
        "problem": {"kind": "gauss6-poisoned-test", "events": 2000, "seed": 3},
        "campaign": {"replicas": 10, "truths": "prior", "prior_bounds": {"p0": [1.0, 4.0]}, "methods": ["mle"]},
    }
    spec = campaign_of(parse_spec(raw))
    poisoned = {r for r in range(10) if replica_truth(spec, r)["p0"] > 3.4}
    assert 0 < len(poisoned) < 10  # the seed gives both kinds
    # Worker threads in this process, where the test's problem is registered: a real Dask cluster all the same.
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        plan = CampaignPlan(spec, tmp_path)
        seen: list[dict[str, str]] = []  # the names of the fits in flight as each fit ends (the Cluster tab's)
        runner = CampaignRunner(client, plan, on_record=lambda record, progress: seen.append(runner.run_names()))
        runner.load_finished()
        summary = runner.run()
    assert any(seen) and all(re.fullmatch(rf"{spec.name} mle-r\d{{4}}", n) for names in seen for n in names.values())
    assert runner.run_names() == {}  # none in flight after the end
    status = summary["status"].values[0]
    assert {r for r in range(10) if status[r] == "failed"} == poisoned
    assert all(status[r] == "completed" for r in range(10) if r not in poisoned)
    assert np.isnan(summary["pull"].values[0, sorted(poisoned)]).all()
    assert int(summary["n_fits"][0]) == 10 - len(poisoned)
    assert sorted(p.name for p in plan.folder.glob("mle-r*.nc")) == [
        f"mle-r{r:04d}.nc" for r in range(10) if r not in poisoned
    ]


def test_an_asymmetric_minos_interval_is_judged_as_quoted(tmp_path):
    """Estimates that scatter 0.5 below the truth and 2.0 above it (a split normal, as near a bound): an interval
    of 2.0 below the estimate and 0.5 above it covers the truth 68% of the time. The pulls divide by the error on
    the truth's side, so such a fit is calibrated, where its symmetric error of 1 would give R_bv 1.46."""
    from qcf_studio.engine.campaign.summary import FitRecord, build_summary
    from qcf_studio.engine.results import qcf_grids

    n = 400
    spec = parse_spec(
        {
            "name": "asym",
            "problem": {"kind": "gauss6", "events": 2000, "seed": 3},
            "training": {"method": "mle"},
            "ensemble": {"members": 1},
            "campaign": {"replicas": n, "methods": ["mle"]},
        }
    )
    plan = CampaignPlan(spec, tmp_path)
    truth = np.asarray(list(replica_truth(spec, 0).values()), dtype=float)
    z = np.random.default_rng(11).normal(size=(n, 2))
    shape = (6, qcf_grids(spec)[0].size)
    records = {}
    for r in range(n):
        est = truth + np.where(z[r] > 0, 2.0, 0.5) * z[r]
        est[1] = truth[1] + z[r, 1]  # no MINOS for p1: its symmetric error, right for its normal scatter
        records[FitKey(r, "mle")] = FitRecord(
            FitKey(r, "mle"),
            "completed",
            1.0,
            estimate=est,
            error=np.ones(2),
            truth=truth,
            qcf_estimate=np.ones(shape),
            qcf_error=np.ones(shape),
            qcf_truth=np.ones(shape),
            below=np.array([2.0, np.nan]),
            above=np.array([0.5, np.nan]),
        )
    ds = build_summary(plan, records).sel({"method": "mle"})
    np.testing.assert_allclose(ds["pull"].values, z)  # exactly the unit normal the estimates came from
    np.testing.assert_allclose(ds["error_toward_truth"].sel(param="p1"), 1.0)
    assert float(ds["r_bv"].sel(param="p0")) == pytest.approx(1.0, abs=0.1)
    low, high = ds["coverage_1sigma_interval"].sel(param="p0").values
    assert low <= 0.683 <= high
    assert json.loads(ds.attrs["verdicts"])["mle"]["p0"] == "calibrated"
    symmetric = np.sqrt(np.mean((ds["estimate"].sel(param="p0") - truth[0]) ** 2))
    assert float(symmetric) == pytest.approx(np.sqrt((0.25 + 4) / 2), rel=0.15)  # what error = 1 would be judged
