"""Nothing is lost and nothing is overwritten: unique names under concurrency, a full disk (a real tmpfs),
unwritable outputs refused before training, stale temporaries cleaned, and SIGINT/SIGTERM to a real
`qcf-studio run` process group saving the run as stopped."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import xarray as xr

from qcf_studio.app.cli.commands import main as cli_main
from qcf_studio.engine.results.files import (
    netcdf_bytes,
    remove_stale_parts,
    save_run,
    write_netcdf_atomic,
    write_netcdf_unique,
)
from qcf_studio.engine.spec import parse_spec

EXE = Path(sys.executable).parent / "qcf-studio"


def _small(steps: int = 20, **training) -> str:
    """A gauss6 spec that trains in seconds on one worker."""
    t = {
        "steps": steps,
        "metrics_every": 10,
        "snapshot_every": 10_000 if steps >= 10_000 else steps,
        "batch_params": 16,
        "events_per_param": 16,
        "gen_width": 16,
        "disc_width": 16,
        **training,
    }
    return parse_spec(
        {
            "name": "tiny",
            "problem": {"kind": "gauss6", "events": 500, "seed": 1},
            "training": t,
            "ensemble": {"members": 1},
            "cluster": {"workers": 1},
        }
    ).to_yaml()


def _dataset(value: float = 1.0) -> xr.Dataset:
    return xr.Dataset({"a": ("x", np.full(100, value))})


def test_writers_at_the_same_moment_never_overwrite_each_other(tmp_path):
    barrier = threading.Barrier(8)
    paths: list[Path] = []

    def write(i: int) -> None:
        barrier.wait()
        paths.append(write_netcdf_unique(_dataset(i), tmp_path, "same-name"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 8 and sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    values = set()
    for p in paths:
        with xr.open_dataset(p, engine="h5netcdf") as ds:
            values.add(float(ds["a"][0]))
    assert values == set(map(float, range(8)))  # every writer's own data, none lost
    with pytest.raises(FileExistsError):
        write_netcdf_atomic(_dataset(99), paths[0])
    assert not list(tmp_path.glob(".*"))  # no temporaries left


def test_two_cli_runs_of_one_spec_into_one_folder_keep_both_results(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(_small())
    out = tmp_path / "runs"
    procs = [
        subprocess.Popen(
            [str(EXE), "run", str(spec), "--out", str(out), "--workers", "1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    printed = [r[0].strip().splitlines()[-1] for r in results]
    assert len(set(printed)) == 2 and all(Path(p).is_file() for p in printed)
    assert len(list(out.glob("*.nc"))) == 2


def test_stale_temporaries_are_removed_and_fresh_ones_kept(tmp_path):
    from qcf_studio.app.dashboard.runs import RunManager

    (tmp_path / "uploads").mkdir()
    stale = [tmp_path / ".old-run-abcd.nc.part", tmp_path / "uploads" / ".up-1234.nc.part"]
    fresh = tmp_path / ".writing-now-efgh.nc.part"
    for p in (*stale, fresh):
        p.write_bytes(b"partial")
    for p in stale:
        os.utime(p, (time.time() - 3600, time.time() - 3600))
    RunManager(None, tmp_path)  # what `serve` does at start; `run` does the same for --out
    assert not any(p.exists() for p in stale) and fresh.exists()
    assert remove_stale_parts(tmp_path, older_than=0) == [fresh]


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(_small())
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    start = time.perf_counter()
    assert cli_main(["run", str(spec), "--out", str(blocker / "sub")]) == 2
    assert time.perf_counter() - start < 5  # no cluster was started, nothing trained
    assert "--out" in capsys.readouterr().err
    assert cli_main(["data", str(spec), "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert cli_main(["data", str(spec), "--out", str(blocker)]) == 2
    assert "never overwritten" in capsys.readouterr().err and blocker.read_text() == "not a folder"
    readonly = tmp_path / "readonly"
    readonly.mkdir(mode=0o500)
    if os.geteuid() != 0:  # root may write anywhere
        assert cli_main(["run", str(spec), "--out", str(readonly)]) == 2
        assert "cannot write there" in capsys.readouterr().err


def test_a_run_that_cannot_be_saved_where_asked_goes_to_the_rescue_folder(tmp_path, monkeypatch):
    ds = _dataset()
    monkeypatch.setenv("QCF_STUDIO_RESCUE_DIR", str(tmp_path / "rescue"))
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the runs folder should be")
    saved = save_run(ds, blocked / "runs", "r")
    assert saved.rescued and saved.path.parent == tmp_path / "rescue"
    assert "Not a directory" in saved.problem and str(saved.path) in saved.problem
    assert saved.path.read_bytes() == netcdf_bytes(ds)


# --- a full disk: a real tmpfs, mounted in a user namespace -------------------------------------------------


def _can_mount_tmpfs() -> str:
    if shutil.which("unshare") is None:
        return "no unshare command"
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
        capture_output=True,
        text=True,
    )
    return "" if r.returncode == 0 else f"unshare -rm cannot mount a tmpfs here: {r.stderr.strip()[:200]}"


def _in_full_tmpfs(mount: Path, fill_kb: int, command: str) -> str:
    """``sh -c`` text that mounts a 256 kB tmpfs at ``mount``, fills all but 256 - ``fill_kb`` kB of it,
    runs ``command``, lists what is left in the tmpfs into ``mount``.listing and exits with its status."""
    return (
        f"mount -t tmpfs -o size=256k tmpfs {mount} && head -c {fill_kb}k /dev/zero > {mount}/filler; "
        f"{command}; rc=$?; ls -A {mount} > {mount}.listing; exit $rc"
    )


@pytest.fixture
def full(tmp_path) -> Path:
    """Where :func:`_in_full_tmpfs` mounts its tmpfs (skips where no tmpfs can be mounted, and says why)."""
    reason = _can_mount_tmpfs()
    if reason:
        pytest.skip(reason)
    (tmp_path / "full").mkdir()
    return tmp_path / "full"


@pytest.mark.slow
def test_a_full_disk_saves_the_run_in_the_rescue_folder_and_exits_1(tmp_path, full):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(_small())
    rescue = tmp_path / "rescue"
    env = {**os.environ, "QCF_STUDIO_RESCUE_DIR": str(rescue)}
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", _in_full_tmpfs(full, 250, f"{EXE} run {spec} --out {full} --workers 1")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 1, r.stderr[-3000:]  # not 139 (the segfault inside HDF5 it was)
    assert "No space left on device" in r.stderr and "saved to" in r.stderr
    path = Path(r.stdout.strip().splitlines()[-1])
    assert path.parent == rescue
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds.attrs["status"] == "completed"
    assert (tmp_path / "full.listing").read_text().split() == ["filler"]  # no .part file left behind


@pytest.mark.slow
def test_an_upload_to_a_full_disk_is_a_message_and_leaves_nothing(tmp_path, full):
    script = (
        "import numpy as np; from qcf_studio.app.dashboard.upload import UploadError, save_upload; "
        "from qcf_studio.engine.problems import get_problem; "
        "from qcf_studio.engine.data.pseudodata import make_pseudo_data; "
        "p = get_problem('proxy1d'); d = make_pseudo_data(p, np.asarray(p.truth), 20000, seed=1)\n"
        f"try:\n    save_upload(d, '{full}', 'big.csv')\n"
        "except UploadError as e:\n    print(e); raise SystemExit(3)"
    )
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", _in_full_tmpfs(full, 200, f'{sys.executable} -c "{script}"')],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[1],
    )
    assert r.returncode == 3, r.stderr[-2000:]
    assert "big.csv: cannot be saved" in r.stdout and "No space left on device" in r.stdout
    assert (tmp_path / "full.listing").read_text().split() == ["filler"]


# --- signals --------------------------------------------------------------------------------------------------


def _start_long_run(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    spec = tmp_path / "long.yaml"
    spec.write_text(_small(steps=100_000))
    out, err = tmp_path / "runs", tmp_path / "stderr.txt"
    proc = subprocess.Popen(
        [str(EXE), "run", str(spec), "--out", str(out), "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=open(err, "w"),
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while "loss_g" not in err.read_text():  # the bar shows losses once the member reported
        assert proc.poll() is None and time.time() < deadline, err.read_text()[-2000:]
        time.sleep(0.5)
    return proc, out, err


def _group_gone(pgid: int, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(_pgid(p) == pgid for p in psutil.process_iter()):
            return True
        time.sleep(0.5)
    return False


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except (ProcessLookupError, PermissionError):
        return None


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_to_the_process_group_saves_the_run_as_stopped(tmp_path, signum, code):
    proc, out, err = _start_long_run(tmp_path)
    os.killpg(proc.pid, signum)  # what a terminal's Ctrl-C (SIGINT) or a batch system (SIGTERM) does
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == code, err.read_text()[-3000:]
    path = Path(stdout.strip().splitlines()[-1])
    assert path.parent == out
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds.attrs["status"] == "stopped"
        assert 0 < int(ds["steps_done"].max()) < 100_000
    assert "Traceback" not in err.read_text()
    assert _group_gone(proc.pid), "worker processes outlived the run"


def test_the_embedded_workers_leave_stop_signals_to_the_client(dask_client):
    pids = dask_client.run(os.getpid)
    for pid in pids.values():
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
    time.sleep(2)
    assert dask_client.run(os.getpid) == pids  # the same processes, alive and answering


@pytest.mark.slow
def test_shutting_the_server_down_saves_the_run_in_progress_as_stopped(dask_client, tmp_path):
    from qcf_studio.app.dashboard.runs import RunManager

    manager = RunManager(dask_client, tmp_path)
    run = manager.start(
        parse_spec(
            {
                "name": "long",
                "problem": {"kind": "gauss6", "events": 500},
                "training": {
                    "steps": 50_000,
                    "metrics_every": 10,
                    "snapshot_every": 5000,
                    "batch_params": 16,
                    "events_per_param": 16,
                },
                "ensemble": {"members": 2},
            }
        )
    )
    deadline = time.time() + 120
    while run.done_steps == 0:
        assert time.time() < deadline and run.status != "failed", run.error
        time.sleep(0.5)
    assert manager.shutdown(timeout=120) is run
    assert run.status == "stopped" and run.result_path is not None and run.result_path.parent == tmp_path
    with xr.open_dataset(run.result_path, engine="h5netcdf") as ds:
        assert ds.attrs["status"] == "stopped"


@pytest.mark.slow
def test_serve_exits_on_sigterm_and_takes_its_workers_along(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [str(EXE), "serve", "--port", str(port), "--workers", "1", "--runs-dir", str(tmp_path / "runs")],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 90
    while "dashboard on" not in log.read_text():
        assert proc.poll() is None and time.time() < deadline, log.read_text()
        time.sleep(0.5)
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()[-2000:]
    assert "SIGTERM: stopping the server" in log.read_text()
    assert _group_gone(proc.pid)
