"""Ensemble members on a real Dask LocalCluster: streamed metrics, stop via Event, headless CLI."""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import xarray as xr

from qcf_studio.engine.run.distributed import start_run
from qcf_studio.engine.run.runner import measured_data
from qcf_studio.engine.run.sinks import HistorySink
from qcf_studio.engine.spec import load_spec
from tests.conftest import small_spec


def test_members_run_as_dask_tasks_and_stream_metrics(dask_client):
    spec = small_spec(steps=40)
    received = HistorySink()  # any MetricsSink receives the workers' reports here
    handle = start_run(dask_client, spec, measured_data(spec), sink=received)
    members = handle.results(timeout=120)
    assert [m.status for m in members] == ["completed", "completed"]
    assert [m.steps_done for m in members] == [40, 40]
    # metrics arrived from the workers while training ran, for every member
    assert {m: received.of(m)["step"] for m in (0, 1)} == {0: [10, 20, 30, 40], 1: [10, 20, 30, 40]}
    assert members[0].metrics["step"] == [10, 20, 30, 40]  # the history written into results
    assert set(handle.workers) == {0, 1}
    # distinct seeds: members differ
    assert (members[0].params_pred != members[1].params_pred).any()


def test_stop_event_ends_members_early_and_keeps_results(dask_client):
    from qcf_studio.app.cluster import worker_rows

    spec = small_spec(steps=100_000)
    handle = start_run(dask_client, spec, measured_data(spec))
    deadline = time.time() + 60
    while sum(len(handle.history.of(m)["step"]) for m in (0, 1)) < 4 and time.time() < deadline:
        time.sleep(0.2)
    # the cluster view: each worker holds one member of this run, named after the spec
    rows = worker_rows(dask_client, {handle.run_id: spec.name})
    assert sorted(r["tasks"] for r in rows) == ["test-small · member 0", "test-small · member 1"]
    assert all(r["threads"] == 1 and r["memory_mb"] > 50 for r in rows)
    handle.stop()
    members = handle.results(timeout=60)
    assert [m.status for m in members] == ["stopped", "stopped"]
    assert all(0 < m.steps_done < 100_000 for m in members)


def test_cli_run_writes_results_and_prints_the_path(tmp_path):
    spec = tmp_path / "small.yaml"
    spec.write_text(small_spec(steps=30).to_yaml())
    exe = Path(sys.executable).parent / "qcf-studio"
    with socket.socket() as busy:  # another Dask cluster on this machine holds port 8787
        try:
            busy.bind(("", 8787))
            busy.listen()
        except OSError:
            pass  # someone else's does
        r = subprocess.run(
            [str(exe), "run", str(spec), "--out", str(tmp_path / "runs"), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert r.returncode == 0, r.stderr
    assert "already in use" not in r.stderr  # no warning about a port the user never asked for
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.parent == tmp_path / "runs" and path.suffix == ".nc"
    assert "step" in r.stderr  # the progress bar
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds.attrs["status"] == "completed"
        assert ds.sizes["member"] == 2 and int(ds["step"].max()) == 30


def _refuse_specs_and_data_files(refuse: bool) -> int:
    """On a worker: every engine function that parses a spec or reads measured data raises from now on
    (``refuse=False``: they are put back). Returns how many names it replaced."""
    import qcf_studio.engine.data.datafiles  # noqa: F401 (read as engine.data.datafiles)
    import qcf_studio.engine.run.distributed  # noqa: F401 (read as engine.run.distributed)
    import qcf_studio.engine.run.runner  # noqa: F401 (read as engine.run.runner)
    import qcf_studio.engine.spec  # noqa: F401 (read as engine.spec)
    from qcf_studio import engine

    targets = [
        engine.spec.parse_spec,
        engine.spec.parse_spec_text,
        engine.spec.load_spec,
        engine.data.datafiles.read_measured,
        engine.data.datafiles.read_measured_file,
        engine.run.runner.measured_data,
    ]

    def refusing(f):
        def refuse_call(*args, **kwargs):
            raise AssertionError(f"a worker called {f.__name__}")

        refuse_call.original = f
        return refuse_call

    replaced = 0
    for name, module in list(sys.modules.items()):
        if not name.startswith(("qcf_studio.engine", "qcf_studio.app")):
            continue
        for attr, value in list(vars(module).items()):
            if refuse and any(value is t for t in targets):
                setattr(module, attr, refusing(value))
                replaced += 1
            elif not refuse and hasattr(value, "original"):
                setattr(module, attr, value.original)
                replaced += 1
    return replaced


@pytest.mark.parametrize("mode", ["ensemble", "data_parallel"])
def test_workers_train_on_the_data_the_client_read_even_when_they_cannot_see_its_file(dask_client, tmp_path, mode):
    """Tasks get the validated spec object and the data read on the client, never YAML or a path: with the
    data file gone after the client read it (a remote worker that cannot see the client's files) and every
    spec parser and data reader refused on the workers, the run completes bit for bit as with the file."""
    from qcf_studio.engine.results import build_results

    sample = Path(__file__).parents[1] / "sample_data"
    for name in ("closure-1d-measured.yaml", "closure-1d-small.nc"):
        shutil.copy(sample / name, tmp_path / name)
    spec = load_spec(tmp_path / "closure-1d-measured.yaml")  # problem.data: closure-1d-small.nc next to it
    t = spec.training
    t.steps, t.metrics_every, t.snapshot_every = 20, 10, 20
    if mode == "ensemble":
        t.mle_reference = True  # the reference fit is a task of its own
    else:
        spec.ensemble.members = 1
        spec.cluster.mode, spec.cluster.ranks = "data_parallel", 2
    data = measured_data(spec)  # on the client, once
    with_file = start_run(dask_client, spec, data)
    expected, expected_ref = with_file.results(timeout=180), with_file.reference(timeout=180)

    (tmp_path / "closure-1d-small.nc").unlink()
    try:
        assert all(n > 0 for n in dask_client.run(_refuse_specs_and_data_files, True).values())
        without_file = start_run(dask_client, spec, data)
        members, reference = without_file.results(timeout=180), without_file.reference(timeout=180)
    finally:
        dask_client.run(_refuse_specs_and_data_files, False)
    assert [m.error for m in members] == [""] * spec.ensemble.members
    assert [m.status for m in members] == ["completed"] * spec.ensemble.members
    for got, want in zip(members, expected):
        assert (got.params_pred == want.params_pred).all() and (got.qcf_pred == want.qcf_pred).all()
        assert got.metrics["loss_g"] == want.metrics["loss_g"]
    if mode == "ensemble":
        assert reference is not None and (reference.params_pred == expected_ref.params_pred).all()
    ds = build_results(spec, data, members, without_file.wall_seconds, reference)
    assert ds.attrs["status"] == "completed" and ds.attrs["spec"] == spec.to_yaml()  # the spec, recorded as YAML


@pytest.mark.slow
def test_reduced_proxy1d_closure(tmp_path):
    """A smaller version of the default closure test: 50k events, 900 steps, two members."""
    spec = small_spec(steps=900, metrics_every=50, snapshot_every=300)
    spec.problem.events = 50_000
    path = tmp_path / "closure.yaml"
    path.write_text(spec.to_yaml())
    exe = Path(sys.executable).parent / "qcf-studio"
    r = subprocess.run(
        [str(exe), "run", str(path), "--out", str(tmp_path)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    with xr.open_dataset(r.stdout.strip().splitlines()[-1], engine="h5netcdf") as ds:
        assert ds.attrs["closure_max_abs_pull"] <= 3.0
        assert ds.attrs["closure_max_qcf_dev_sigma"] <= 2.0
        # The mean QCFs come back: within 10% where the data constrain them (x <= 0.6).
        core = ds.sel(x=slice(0.1, 0.6))
        rel = abs(core["qcf_pred"].mean("member") / core["qcf_true"] - 1)
        assert float(rel.max()) < 0.10


def test_a_member_that_dies_is_marked_failed_and_the_run_still_writes(dask_client, tmp_path):
    import dataclasses

    import numpy as np

    from qcf_studio.engine.results import build_results
    from qcf_studio.engine.results.files import write_netcdf_atomic

    spec = small_spec(steps=40)
    good = measured_data(spec)
    broken = dataclasses.replace(good, events=np.full_like(good.events, np.nan))  # poisons every loss
    handle = start_run(dask_client, spec, broken)
    members = handle.results(timeout=120)
    assert [m.status for m in members] == ["failed", "failed"]
    assert all("non-finite" in m.error for m in members)
    ds = build_results(spec, good, members, handle.wall_seconds)
    assert ds.attrs["status"] == "failed" and "non-finite" in ds.attrs["errors"]
    write_netcdf_atomic(ds, tmp_path / "failed.nc")
    assert (tmp_path / "failed.nc").exists()


def _temporaries_faults_before_and_after_task_setup() -> tuple[float, float]:
    """On a worker: page faults per call of a computation with 4 MB temporaries, before and after the
    training tasks' set-up."""
    import resource

    from qcf_studio.engine.run.distributed import _task_setup

    torch.set_num_threads(1)
    x = torch.rand(1_000_000)

    def faults(calls: int = 20) -> float:
        for _ in range(10):  # the heap settles (see test_engine's retained-memory test)
            ((x * 2.0 + 1.0) * (x - 0.5)).sum()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(calls):
            ((x * 2.0 + 1.0) * (x - 0.5)).sum()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls

    default = faults()
    _task_setup()
    return default, faults()


def test_training_tasks_keep_freed_memory_on_their_worker():
    # A fresh worker with Dask's default environment (MALLOC_TRIM_THRESHOLD_=65536, as `dask worker` and
    # dask-jobqueue start them): glibc trims the task thread's heap after each large free, so every call
    # faults its temporaries in again; the tasks' set-up stops that.
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            default, retained = client.submit(_temporaries_faults_before_and_after_task_setup, pure=False).result()
    assert default > 500  # 3 900 here: each 4 MB temporary's 1 000 pages, in again
    assert retained < 50


def test_the_client_uses_one_torch_thread_while_its_embedded_cluster_fills_the_cores():
    """The client's pseudo-data and results beside workers at nice 10: with a thread per core its torch spun
    against them (a campaign's pseudo-data took 20 times as long). The number it had comes back at close."""
    from qcf_studio.engine.run import cluster

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        client = cluster.local_client(1, "cpu")
        try:
            assert torch.get_num_threads() == 1
            data = measured_data(small_spec())  # the client's own torch work runs with it
            assert data.events.shape[0] == 2
        finally:
            cluster.close(client)
        # another embedded cluster of this process (the session's) still up: it keeps one thread
        assert torch.get_num_threads() == (1 if cluster._embedded["count"] else 2)
    finally:
        torch.set_num_threads(before)
