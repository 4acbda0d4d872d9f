"""A worker-only install, for real: a fresh virtual environment with the package and its ``[hpc]`` extra (no
``[dashboard]``) trains, validates and runs a campaign without Panel, HoloViews, Bokeh or matplotlib; and pip keeps a
torch that is already there when it installs the package.

Slow (1½ minutes on the shared 2-core machine with pip's cache warm, 6 December 2026; most of it pip): it installs
torch from this machine's CPU wheel through constraints.txt, as the Makefile does, and the other dependencies from the
package index or pip's cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "constraints.txt"
DASHBOARD = ("panel", "holoviews", "bokeh", "matplotlib")
# what `pip install .` needs from the repository (a copy: pip builds in the source tree)
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "engine", "app", "layouts", "benchmarks", "qcf_studio")

TINY_RUN = """\
version: 1
name: worker-run
problem: {kind: proxy1d, events: 2000, seed: 3}
training: {method: gan, steps: 20, metrics_every: 10, snapshot_every: 10}
ensemble: {members: 1}
cluster: {workers: 1}
"""
TINY_CAMPAIGN = """\
version: 1
name: worker-campaign
problem: {kind: gauss6, events: 2000, seed: 3}
training: {method: mle}
ensemble: {members: 1}
campaign: {replicas: 2, methods: [mle]}
cluster: {workers: 1}
"""


def _copy_sources(dest: Path) -> Path:
    dest.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


def _env() -> dict[str, str]:
    # nothing from this checkout: the venv's own packages only (the tests run with the repository on PYTHONPATH)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["QCF_NATIVE"] = "0"  # the C++ block's build (about 30 s) is tested in test_native.py, not here
    return env


def _run(args: list[str | Path], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"{r.args}: exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _new_venv(path: Path) -> Path:
    _ok(_run([sys.executable, "-m", "venv", path], cwd=path.parent))
    return path / "bin" / "python"


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_sources(tmp_path_factory.mktemp("worker-install") / "src")


@pytest.fixture(scope="module")
def worker(source: Path) -> Path:
    """A venv with torch (the Makefile's CPU pin) and ``qcf-studio[hpc]``, installed as a worker would be."""
    python = _new_venv(source.parent / "venv")
    pip = [python, "-m", "pip", "install", "--quiet", "-c", CONSTRAINTS]
    _ok(_run([*pip, "torch"], cwd=source.parent, timeout=600))
    _ok(_run([*pip, f"{source}[hpc]"], cwd=source.parent, timeout=600))
    return python


def test_a_worker_install_trains_and_runs_campaigns_without_the_dashboard(worker: Path, tmp_path: Path):
    bin_dir = worker.parent
    found = f"[m for m in {DASHBOARD!r} if u.find_spec(m)]"
    probe = (
        "import importlib.util as u, json; from qcf_studio import engine; "
        f"print(json.dumps([engine.__file__, {found}, [m for m in ('engine', 'app') if u.find_spec(m)]]))"
    )
    where, present, top_level = json.loads(_ok(_run([worker, "-c", probe], cwd=tmp_path)))
    assert where.startswith(str(worker.parent.parent)) and present == []  # the venv's copy, no web stack
    assert top_level == []  # installed under one name: nothing called engine or app in site-packages
    (tmp_path / "run.yaml").write_text(TINY_RUN)
    (tmp_path / "campaign.yaml").write_text(TINY_CAMPAIGN)
    qcf = bin_dir / "qcf-studio"

    _ok(_run([qcf, "validate", "run.yaml"], cwd=tmp_path))
    results = Path(_ok(_run([qcf, "run", "run.yaml", "--out", "runs"], cwd=tmp_path)).splitlines()[-1])
    check = (
        "import sys, xarray as xr; ds = xr.open_dataset(sys.argv[1], engine='h5netcdf'); "
        "print(ds.attrs['status'], ds.sizes['step'], ds.sizes['member'])"
    )
    assert _ok(_run([worker, "-c", check, tmp_path / results], cwd=tmp_path)).split() == ["completed", "2", "1"]
    summary = Path(_ok(_run([qcf, "campaign", "campaign.yaml", "--out", "runs"], cwd=tmp_path)).splitlines()[-1])
    assert (tmp_path / summary).is_file()

    # what needs the dashboard says which extra to install, in one line
    r = _run([qcf, "export", results, "--out", "figs"], cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "pip install 'qcf-studio[dashboard]'" in r.stderr and not (tmp_path / "figs").exists()
    view = "import qcf_studio\ntry:\n    qcf_studio.runs_view('runs')\nexcept ImportError as e:\n    print(e)"
    assert "pip install 'qcf-studio[dashboard]'" in _ok(_run([worker, "-c", view], cwd=tmp_path))


def _resolved_torch(python: Path, project: Path, guard: Path, report: Path) -> list[str]:
    """The torch versions pip would install along with ``project[hpc]`` (a dry run)."""
    dry_run = [python, "-m", "pip", "install", "--quiet", "--dry-run", "--report", report, "-c", guard]
    _ok(_run([*dry_run, f"{project}[hpc]"], cwd=report.parent))
    installs = json.loads(report.read_text())["install"]
    return [i["metadata"]["version"] for i in installs if i["metadata"]["name"].lower() == "torch"]


def test_installing_keeps_a_torch_of_another_version(source: Path, tmp_path: Path):
    # A RESOLVER CHECK with a stand-in: no other real torch can be installed offline here (other releases are
    # multi-GB CUDA downloads), so the venv holds only the metadata of a "torch 2.9.0", which pip reads as an
    # installed torch. The question is pip's: does it keep an installed torch, or replace it?
    python = _new_venv(tmp_path / "venv")
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(_ok(_run([python, "-c", purelib], cwd=tmp_path)).strip())
    stand_in = site / "torch-2.9.0.dist-info"
    stand_in.mkdir()
    (stand_in / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.9.0\n")
    (stand_in / "INSTALLER").write_text("pip\n")
    (stand_in / "RECORD").write_text("")
    # the resolver may choose any torch up to this machine's CPU wheel, never a CUDA release
    guard = tmp_path / "guard.txt"
    guard.write_text("torch<=2.13.0\n")

    assert _resolved_torch(python, source, guard, tmp_path / "report.json") == []  # kept
    # the check can fail: with the exact pin that pyproject.toml used to have, pip replaces the site's torch
    pinned = tmp_path / "pinned"
    shutil.copytree(source, pinned, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    text, n = re.subn(r'"torch>=[^"]*"', '"torch==2.13.0"', (pinned / "pyproject.toml").read_text())
    assert n == 1
    (pinned / "pyproject.toml").write_text(text)
    assert [v.split("+")[0] for v in _resolved_torch(python, pinned, guard, tmp_path / "pinned.json")] == ["2.13.0"]
