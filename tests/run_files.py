"""Results files for the view tests, made as the CLI makes them: a session fixture and small file helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import xarray as xr

from qcf_studio.engine.results import build_results
from qcf_studio.engine.results.files import write_netcdf_atomic
from qcf_studio.engine.run.runner import measured_data, train_member
from qcf_studio.engine.run.sinks import HistorySink
from qcf_studio.engine.spec import parse_spec

T0 = 1_800_000_000  # file mtimes, seconds: the catalogue sorts by them


def run_spec(kind: str, method: str = "gan", members: int = 1, steps: int = 20, events: int = 2000):
    training = {"method": method, "steps": steps, "metrics_every": 10, "snapshot_every": steps}
    if method == "gan":  # tiny networks and batches: these runs only need to exist, not to close
        training.update(batch_params=16, events_per_param=16, gen_width=16, disc_width=16)
    return parse_spec(
        {
            "name": f"{kind}-{method}",
            "problem": {"kind": kind, "events": events, "seed": 3},
            "training": training,
            "ensemble": {"members": members},
        }
    )


def _train(spec, data):
    return [train_member(spec, m, data, HistorySink()) for m in range(spec.ensemble.members)]


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """CLI-like result files: proxy1d GAN (2 members, MLE reference), proxy1d MLE, proxy2d GAN, multiset2d GAN."""
    d = tmp_path_factory.mktemp("runs")
    out = {}
    gan_spec, mle_spec = run_spec("proxy1d", members=2), run_spec("proxy1d", "mle")
    data = measured_data(gan_spec)
    (mle,) = _train(mle_spec, data)
    out["mle"] = write_netcdf_atomic(build_results(mle_spec, data, [mle], 1.5), d / "proxy1d-mle-20261201-100000.nc")
    gan = build_results(gan_spec, data, _train(gan_spec, data), 12.5, reference=mle)
    out["gan"] = write_netcdf_atomic(gan, d / "proxy1d-gan-20261201-110000.nc")
    for kind in ("proxy2d", "multiset2d"):
        spec = run_spec(kind, steps=10)
        data2 = measured_data(spec)
        out[kind] = write_netcdf_atomic(build_results(spec, data2, _train(spec, data2), 3.0), d / f"{kind}-gan.nc")
    for i, key in enumerate(("mle", "gan", "proxy2d", "multiset2d")):
        os.utime(out[key], (T0 + i, T0 + i))
    return out


def open_results(path: Path) -> xr.Dataset:
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()


def copy_to(src: Path, dst: Path, edit=None) -> Path:
    ds = open_results(src)
    if edit is not None:
        ds = edit(ds)
    dst.unlink(missing_ok=True)  # replaced (qcf-studio itself never overwrites a file)
    return write_netcdf_atomic(ds, dst)
