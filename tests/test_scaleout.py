"""Scale-out on real Dask processes: data-parallel ranks, killed workers, a remote scheduler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import xarray as xr

from qcf_studio.engine.run.distributed import start_run
from qcf_studio.engine.run.runner import measured_data
from qcf_studio.engine.spec import parse_spec
from tests.conftest import small_spec

EXE = Path(sys.executable).parent / "qcf-studio"


def dp_spec(steps: int, ranks: int = 2, **cluster) -> object:
    spec = small_spec(steps=steps)
    spec.ensemble.members = 1
    spec.cluster.mode, spec.cluster.ranks = "data_parallel", ranks
    for k, v in cluster.items():
        setattr(spec.cluster, k, v)
    return parse_spec(spec.to_dict())  # validated like a user's spec


def wait_for_steps(handle, member: int, step: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = handle.history.of(member)["step"]
        if steps and steps[-1] >= step:
            return
        time.sleep(0.1)
    raise AssertionError(f"member {member} did not reach step {step} in {timeout} s")


def kill_worker(client, address: str) -> None:
    """SIGKILL the worker process at ``address`` (its nanny starts a fresh one)."""
    pid = client.run(os.getpid, workers=[address])[address]
    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def fresh_client():
    """A cluster of its own: these tests kill workers."""
    from qcf_studio.app.cluster import close, connect

    client = connect(workers=2)
    yield client
    close(client)


def test_data_parallel_ranks_run_on_distinct_workers_and_rank0_reports(dask_client):
    spec = dp_spec(steps=40)
    handle = start_run(dask_client, spec, measured_data(spec))
    [member] = handle.results(timeout=180)
    assert member.status == "completed" and member.steps_done == 40
    assert member.metrics["step"] == [10, 20, 30, 40]
    assert handle.rank_workers[(0, 0)] != handle.rank_workers[(0, 1)]
    assert handle.rank_history[0].of(1)["step"] == [10, 20, 30, 40]  # rank 1's own losses reached us too
    assert member.comm_seconds > 0
    # both ranks' events count: 2 ranks × 40 steps × (real + generated) events
    assert member.events_processed == 2 * 40 * 2 * 2 * 64 * 64


def test_data_parallel_needs_a_worker_per_rank(dask_client):
    spec = dp_spec(steps=10, ranks=3)
    with pytest.raises(ValueError, match="cluster.ranks: .*2 workers"):
        start_run(dask_client, spec, measured_data(spec))


@pytest.mark.slow
@pytest.mark.parametrize("schedule", ["sync", "grouped"])
def test_data_parallel_closes_reduced_proxy1d(dask_client, schedule):
    """Both schedules bring the truth back on the reduced closure test (50k events, 900 steps, 2 ranks)."""
    spec = small_spec(steps=900, metrics_every=50, snapshot_every=300)
    raw = spec.to_dict()
    raw["problem"]["events"] = 50_000
    raw["ensemble"]["members"] = 1
    raw["cluster"].update(mode="data_parallel", ranks=2, schedule=schedule, group_size=1, sync_every=10)
    spec = parse_spec(raw)
    data = measured_data(spec)
    handle = start_run(dask_client, spec, data)
    members = handle.results(timeout=600)
    from qcf_studio.engine.results import build_results

    ds = build_results(spec, data, members, handle.wall_seconds)
    assert ds.attrs["status"] == "completed"
    assert ds.attrs["closure_max_abs_pull"] <= 3.0
    assert ds.attrs["closure_max_qcf_dev_sigma"] <= 2.0
    core = ds.sel(x=slice(0.1, 0.6))
    assert float(abs(core["qcf_pred"].mean("member") / core["qcf_true"] - 1).max()) < 0.10


@pytest.mark.slow
def test_a_killed_worker_resumes_its_member_from_the_checkpoint(fresh_client):
    spec = small_spec(steps=400)
    spec.cluster.checkpoint_every = 50
    handle = start_run(fresh_client, spec, measured_data(spec))
    wait_for_steps(handle, 0, 160)
    victim = handle.workers[0]
    kill_worker(fresh_client, victim)
    members = handle.results(timeout=300)
    assert [m.status for m in members] == ["completed", "completed"]  # the other member carried on
    m0 = members[0]
    assert m0.resumed_from >= 150 and m0.resumed_from % 50 == 0
    assert m0.metrics["step"] == list(range(10, 401, 10))  # the history up to the checkpoint was kept, no repeats
    assert handle.resumed[0] == [m0.resumed_from]
    assert members[1].resumed_from == 0


@pytest.mark.slow
def test_a_lost_rank_fails_its_member_promptly_and_keeps_its_metrics(fresh_client):
    spec = dp_spec(steps=100_000, timeout=30)
    handle = start_run(fresh_client, spec, measured_data(spec))
    wait_for_steps(handle, 0, 40)
    kill_worker(fresh_client, handle.rank_workers[(0, 1)])
    t0 = time.time()
    [member] = handle.results(timeout=120)
    assert time.time() - t0 < 30  # the peer saw the connection drop; it did not wait for the timeout
    assert member.status == "failed" and "rank" in member.error
    assert member.metrics["step"][:4] == [10, 20, 30, 40]  # what rank 0 streamed is kept


@contextmanager
def dask_processes(tmp_path: Path, *workers: list[str]):
    """A real `dask scheduler` and one `dask worker` process per argument list (after the common ones), as on
    a cluster; yields the scheduler's address once every worker has joined."""
    bin_dir = Path(sys.executable).parent
    info = tmp_path / "scheduler.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [
                str(bin_dir / "dask"),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(info),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.time() + 60
        while not info.exists() and time.time() < deadline:
            time.sleep(0.2)
        for args in workers:
            procs.append(
                subprocess.Popen(
                    [
                        str(bin_dir / "dask"),
                        "worker",
                        "--scheduler-file",
                        str(info),
                        "--nthreads",
                        "1",
                        "--no-dashboard",
                        *args,
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        address = json.loads(info.read_text())["address"]
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(
                sum(int(a[a.index("--nworkers") + 1]) if "--nworkers" in a else 1 for a in workers), timeout=60
            )
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


@pytest.mark.slow
def test_cli_runs_data_parallel_on_a_remote_scheduler(tmp_path):
    """A real `dask scheduler` and `dask worker` processes, as on a cluster; the CLI connects by address."""
    with dask_processes(tmp_path, ["--nworkers", "2"]) as address:
        spec_path = tmp_path / "dp.yaml"
        spec_path.write_text(dp_spec(steps=30).to_yaml())
        r = subprocess.run(
            [str(EXE), "run", str(spec_path), "--out", str(tmp_path / "runs"), "--scheduler", address],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
        with xr.open_dataset(r.stdout.strip().splitlines()[-1], engine="h5netcdf") as ds:
            assert ds.attrs["status"] == "completed" and int(ds["steps_done"][0]) == 30
            assert float(ds["comm_seconds"][0]) > 0


def device_spec(device: str, steps: int = 20) -> object:
    spec = small_spec(steps=steps)
    spec.ensemble.members = 1
    spec.cluster.device = device
    return parse_spec(spec.to_dict())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a GPU worker without CUDA does")
def test_a_cuda_member_goes_to_the_gpu_worker_and_fails_there_without_cuda(tmp_path):
    """`dask worker --resources GPU=1` gets the cuda member; lacking CUDA, the member fails with a message naming
    the worker and cluster.device. A cpu run beside it completes, and the cluster stays up."""
    from distributed import Client

    with dask_processes(tmp_path, ["--resources", "GPU=1", "--name", "gpu-0"], ["--name", "cpu-0"]) as address:
        with Client(address, timeout="30s") as client:
            gpu_worker = next(
                a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w["name"] == "gpu-0"
            )
            cuda, cpu = device_spec("cuda"), device_spec("cpu")
            on_gpu = start_run(client, cuda, measured_data(cuda))
            beside = start_run(client, cpu, measured_data(cpu))
            [failed] = on_gpu.results(timeout=120)
            [done] = beside.results(timeout=120)
            assert failed.status == "failed"
            assert f"worker {gpu_worker}: cluster.device is cuda but this worker has no CUDA device" in failed.error
            assert done.status == "completed" and done.steps_done == 20
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2


def test_cuda_without_gpu_workers_is_refused_before_anything_is_submitted(dask_client):
    spec = device_spec("cuda")
    tasks_before = set(dask_client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks)))
    for mode in ({}, {"mode": "data_parallel", "ranks": 2}):
        for k, v in mode.items():
            setattr(spec.cluster, k, v)
        with pytest.raises(
            ValueError,
            match=r"cluster.device is cuda but no worker offers the GPU resource; start "
            r"workers with `dask worker --resources GPU=1` \(one per GPU\)",
        ):
            start_run(dask_client, spec, measured_data(spec))
    assert set(dask_client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.tasks))) <= tasks_before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine's embedded cluster would have GPU workers")
def test_cli_refuses_cuda_on_an_embedded_cluster_without_gpus(tmp_path):
    spec = tmp_path / "cuda.yaml"
    spec.write_text(device_spec("cuda").to_yaml())
    r = subprocess.run(
        [str(EXE), "run", str(spec), "--out", str(tmp_path / "runs"), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    assert "cluster.device is cuda but no worker offers the GPU resource" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_the_embedded_cluster_gives_each_gpu_a_worker_offering_it():
    from distributed import Client

    from qcf_studio.engine.run.cluster import local_cluster

    with local_cluster(workers=3, gpus=1) as cluster, Client(cluster) as client:
        [worker] = client.scheduler_info(n_workers=-1)["workers"].values()
        assert worker["resources"] == {"GPU": 1} and worker["name"] == 0
