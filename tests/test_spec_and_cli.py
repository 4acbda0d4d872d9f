"""Spec validation and the CLI contract: validate, data, bad input, exit codes."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import xarray as xr

from qcf_studio.app.cli.commands import main
from qcf_studio.engine.spec import SpecError, default_spec, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data" / "closure-1d.yaml"


def test_sample_spec_is_the_default_closure_spec():
    spec = load_spec(SAMPLE)
    assert spec.problem.kind == "proxy1d"
    assert spec.truth_values() == [2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0]
    assert spec.to_dict() == default_spec().to_dict()


def test_spec_roundtrips_through_yaml():
    spec = load_spec(SAMPLE)
    from qcf_studio.engine.spec import parse_spec_text

    assert parse_spec_text(spec.to_yaml()).to_dict() == spec.to_dict()


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({"problem": {"kind": "proxy1d", "colour": 1}}, "problem.colour", "unknown key"),
        ({"problem": {"bounds": {"Nu": [3, 0]}}}, "problem.bounds.Nu", "must be below"),
        ({"problem": {"events": -10}}, "problem.events", "at least 100"),
        ({"problem": {"truth": {"Nu": "abc"}}}, "problem.truth.Nu", "expected a number"),
        ({"problem": {"truth": {"Zz": 1.0}}}, "problem.truth.Zz", "unknown parameter"),
        ({"problem": {"kind": "nope"}}, "problem.kind", "unknown problem"),
        ({"training": {"steps": 0}}, "training.steps", "at least 1"),
        ({"training": {"lr_g": 2.0}}, "training.lr_g", "(0, 1)"),
        ({"detector": {"resolution": -0.1}}, "detector.resolution", "[0, 0.5]"),
        ({"detector": {"background": {"fraction": 1.5}}}, "detector.background.fraction", "[0, 1)"),
        ({"detector": {"acceptance": {"widht": 0.1}}}, "detector.acceptance.widht", "unknown key"),
        ({"detector": {"surrogate": {"events": 10}}}, "detector.surrogate", "resolution > 0"),
        ({"training": {"method": "mle"}}, "ensemble.members", "use 1"),
        (
            {"training": {"mle_reference": True}, "detector": {"acceptance": {"max": 0.9}}},
            "training.mle_reference",
            "resolution smearing only",
        ),
        ({"training": {"method": "vae"}}, "training.method", "not available"),
        ({"training": {"grid_spacing": "log"}}, "training.grid_spacing", "choose one of auto, uniform, clustered"),
        ({"training": {"disc_edge_features": "yes"}}, "training.disc_edge_features", "true, false or null"),
        ({"training": {"disc_per_observable": 1}}, "training.disc_per_observable", "true, false or null"),
        ({"trainin": {}}, "trainin", "unknown section"),
        ({"version": 7}, "version", "unsupported"),
        ({"cluster": {"device": "gpu"}}, "cluster.device", "choose one of auto, cpu, cuda"),
        ({"cluster": {"device": 0}}, "cluster.device", "expected text"),
        (
            {"training": {"method": "mle"}, "ensemble": {"members": 1}, "cluster": {"device": "cuda"}},
            "cluster.device",
            "runs on the CPU",
        ),
    ],
)
def test_bad_spec_values_name_the_field(raw, field, words):
    with pytest.raises(SpecError) as err:
        parse_spec(raw)
    assert err.value.field == field
    assert words in str(err.value)


def test_grid_spacing_reaches_the_trainer():
    """auto takes the problem's grid (proxy2d: clustered 64); a spec may ask for another."""
    from qcf_studio.engine.data.pseudodata import make_pseudo_data
    from qcf_studio.engine.gan.trainer import GANTrainer
    from qcf_studio.engine.problems import get_problem

    problem = get_problem("proxy2d")
    data = make_pseudo_data(problem, problem.truth_tensor(torch.float64).numpy(), 1000, seed=0)
    grids = {}
    for spacing in ("auto", "uniform"):
        spec = parse_spec({"problem": {"kind": "proxy2d"}, "training": {"grid_spacing": spacing, "grid_points": 40}})
        (x, y) = GANTrainer(problem, data, spec.training, seed=0).grids
        assert x.shape == y.shape == (40,)
        assert float(x[0]) == pytest.approx(0.001) and float(x[-1]) == pytest.approx(0.999)
        grids[spacing] = x
    steps_auto, steps_uniform = torch.diff(grids["auto"]), torch.diff(grids["uniform"])
    assert float(steps_auto[0]) < 0.05 * float(steps_auto.max())  # clustered: dense at the ends
    assert float(steps_uniform.max() - steps_uniform.min()) < 1e-6


def test_cluster_device_defaults_to_auto_and_takes_cpu_or_cuda():
    assert parse_spec({}).cluster.device == "auto"
    for device in ("auto", "cpu", "cuda"):
        assert parse_spec({"cluster": {"device": device}}).cluster.device == device


def _write(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("problem: {kind: proxy1d, colour: red}\n", "problem.colour"),
        ("problem: {bounds: {au: [1, -1]}}\n", "problem.bounds.au"),
        ("problem: {events: -5}\n", "problem.events"),
        ("problem: {truth: {Nu: abc}}\n", "problem.truth.Nu"),
        ("problem: [unclosed\n", "not valid YAML"),
    ],
)
def test_validate_and_run_exit_2_with_one_message(tmp_path, capsys, text, field):
    spec = _write(tmp_path, text)
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0] and str(spec) in err[0]
    out = tmp_path / "runs"
    assert main(["run", str(spec), "--out", str(out)]) == 2
    assert field in capsys.readouterr().err
    assert not out.exists()  # nothing started, nothing written


def test_validate_accepts_the_sample_spec(capsys):
    assert main(["validate", str(SAMPLE)]) == 0
    assert "valid" in capsys.readouterr().out


def test_data_writes_pseudo_data_netcdf(tmp_path):
    spec = _write(tmp_path, "problem: {kind: proxy1d, events: 2000, seed: 4}\n")
    out = tmp_path / "data.nc"
    assert main(["data", str(spec), "--out", str(out)]) == 0
    with xr.open_dataset(out, engine="h5netcdf") as ds:
        assert ds["events"].shape == (2, 2000)
        assert list(ds["observable"].values) == ["sigma1", "sigma2"]
        assert ds["xsec"].shape == (2,) and (ds["xsec"] > 0).all()
        assert list(ds["params_true"].values) == [2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0]
        again = tmp_path / "again.nc"
        main(["data", str(spec), "--out", str(again)])
        with xr.open_dataset(again, engine="h5netcdf") as ds2:
            assert (ds2["events"].values == ds["events"].values).all()  # seeded: reproducible
    assert not list(tmp_path.glob("*.part"))


def test_missing_data_file_is_named(tmp_path, capsys):
    spec = _write(tmp_path, "problem: {kind: proxy1d, data: nowhere.nc}\n")
    assert main(["validate", str(spec)]) == 2
    assert "problem.data" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "qcf-studio"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "validate" in r.stdout


@pytest.mark.parametrize("what", ["sampler", "gan"])
def test_bench_prints_one_json_line_with_a_rate(capsys, what):
    import json

    assert main(["bench", what, "--events", "2000", "--repeats", "2", "--device", "cpu", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["bench"] == what and out["events_per_second"] > 0 and out["events"] <= 2000
    assert out["device"] == "cpu"


def test_bench_gan_reports_the_reference_and_the_problems_own_discriminator(capsys):
    import json

    args = ["bench", "gan", "--problem", "multiset2d", "--events", "2000", "--repeats", "2", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["disc"] == "6-64-64-1"  # 2 coordinates + 4 labels, one shared network
    assert out["disc_problem"] == "4 × 6-64-64-1"  # a network per data set, 3 features per coordinate
    assert out["events_per_second_problem_disc"] > 0
    from qcf_studio.engine.accel.native import native_enabled

    assert out["pass_block"] == ("native" if native_enabled() else "torchscript")  # how the blocks ran
    assert out["accelerator"].startswith("accel (")


@pytest.mark.slow
def test_bench_gan_members_counts_the_steps_of_all_members_in_one_window(capsys):
    """Two trainers on two real LocalCluster workers at once; the rate is their steps' events over the window."""
    import json

    args = [
        "bench",
        "gan",
        "--problem",
        "proxy2d",
        "--events",
        "2000",
        "--members",
        "2",
        "--window",
        "2",
        "--warmup",
        "20",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["members"] == 2 and out["threads_per_member"] == 1 and out["disc"] == "2-64-64-1"
    steps = out["member_steps"]
    assert len(steps) == 2 and min(steps) > 0
    assert all(0 < s < 2.0 for s in out["member_median_seconds"])
    assert out["events_per_second"] == pytest.approx(sum(steps) * out["events"] / 2.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["bench", "dp", "--members", "2"], "--members: only for bench ensemble and bench gan"),
        (["bench", "gan", "--members", "0"], "--members: must be at least 1"),
        (["bench", "gan", "--members", "2", "--window", "0"], "--window: must be a positive number"),
    ],
)
def test_bench_refuses_members_where_they_mean_nothing(capsys, args, message):
    assert main(args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no CUDA")
def test_bench_on_cuda_without_cuda_exits_2(capsys):
    assert main(["bench", "gan", "--events", "2000", "--device", "cuda", "--json"]) == 2
    assert "--device cuda: this process has no CUDA device" in capsys.readouterr().err


def test_bench_rejects_an_unknown_problem(capsys):
    assert main(["bench", "gan", "--problem", "nope"]) == 2
    assert "--problem" in capsys.readouterr().err


def test_disc_per_observable_defaults_to_the_problem_and_a_spec_overrides_it():
    from qcf_studio.engine.data.pseudodata import make_pseudo_data
    from qcf_studio.engine.gan.trainer import GANTrainer
    from qcf_studio.engine.problems import get_problem

    problem = get_problem("multiset2d")
    data = make_pseudo_data(problem, problem.truth_tensor(torch.float64).numpy(), 500, seed=0)
    for setting, networks in ((None, 4), (False, 1), (True, 4)):
        raw = {"problem": {"kind": "multiset2d"}, "training": {"disc_per_observable": setting, "grid_points": 16}}
        trainer = GANTrainer(problem, data, parse_spec(raw).training, seed=0)
        assert len(trainer.discriminator.networks) == networks
        trainer.train_step()  # the per-observable pass takes the step's layout of rows
        assert all(p.grad is not None for p in trainer.discriminator.parameters())
