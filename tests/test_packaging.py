"""What a release needs besides the code: one version everywhere, the licence, the citation file, the typing
markers installed with the packages; dependencies as ranges with the dashboard in an extra, and a clear message where
an extra is missing (a real worker-only install: test_worker_install.py)."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from qcf_studio import engine
from qcf_studio.app.cli.commands import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_has_one_place_and_the_command_prints_it(capsys):
    project = PYPROJECT["project"]
    if "version" in project:  # a literal version must be engine's
        assert project["version"] == engine.__version__
    else:
        assert "version" in project["dynamic"]
        assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "qcf_studio.engine.__version__"}
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"qcf-studio {engine.__version__}"


def test_the_citation_file_is_cff_1_2_with_this_version_and_licence():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "version", "license"} <= set(cff)
    assert str(cff["version"]) == engine.__version__
    assert cff["license"] == "BSD-3-Clause" == PYPROJECT["project"]["license"]  # an SPDX expression (PEP 639)
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    from importlib.metadata import metadata

    installed = metadata("qcf-studio")  # what pip wrote from it
    assert installed["License-Expression"] == "BSD-3-Clause" and "LICENSE" in installed.get_all("License-File")
    assert cff["authors"] == [{"name": "The qcf-studio developers"}]


def test_the_licence_is_bsd_3_clause_of_the_developers():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License") and "Copyright (c) 2026, the qcf-studio developers" in text


def test_typed_packages_ship_their_marker():
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for package in ("qcf_studio.engine", "qcf_studio"):
        assert (ROOT.joinpath(*package.split(".")) / "py.typed").is_file()
        assert "py.typed" in data[package]
    # one import name: the engine, app, layouts and benchmarks are installed under it (symlinks in qcf_studio/)
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["qcf_studio*"]
    for folder in ("engine", "app", "layouts", "benchmarks"):
        assert (ROOT / "qcf_studio" / folder).resolve() == ROOT / folder
    assert {"qcf_studio/__init__.py", "qcf_studio/engine"} <= set(PYPROJECT["tool"]["mypy"]["files"])


def _name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9_.-]+", requirement).group().lower()  # type: ignore[union-attr]


def test_torch_is_a_range_and_the_makefile_pins_it_through_the_constraints_file():
    (torch,) = [r for r in PYPROJECT["project"]["dependencies"] if _name(r) == "torch"]
    assert ">=" in torch and "==" not in torch  # a site's own torch build is kept (test_worker_install.py)
    pins = [line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    assert "torch==2.13.0" in pins  # the CPU wheel on this machine's disk
    makefile = (ROOT / "Makefile").read_text().splitlines()
    install = [line for line in makefile if "pip install" in line and " -e " in line]
    assert len(install) == 1 and "-c constraints.txt" in install[0]
    extras = re.search(r'-e "\.\[([^\]]*)\]"', install[0])
    assert extras is not None and set(extras.group(1).split(",")) == set(PYPROJECT["project"]["optional-dependencies"])


def test_the_core_leaves_the_dashboard_to_its_extra():
    from qcf_studio.app.extras import EXTRAS

    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]
    dashboard = {_name(r) for r in extras["dashboard"]}
    assert dashboard == set(EXTRAS["dashboard"]) and not core & dashboard
    assert {_name(r) for r in extras["hpc"]} == {"dask-jobqueue"} and EXTRAS["hpc"] == ("dask_jobqueue",)
    assert "qcf-studio[dashboard]" in extras["test"]  # `pip install .[test]` runs the whole suite


@pytest.mark.parametrize(
    "argv", [["export", "RUN.nc", "--out", "figs"], ["serve"], ["credentials", "users.txt", "--user", "me"]]
)
def test_a_command_without_its_extra_says_what_to_install(argv, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as in a worker-only install: not importable
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "matplotlib" in err and "pip install 'qcf-studio[dashboard]'" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_notebook_views_without_the_dashboard_say_what_to_install(monkeypatch, tmp_path):
    import qcf_studio
    from qcf_studio.app.extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "panel", None)
    for view in (qcf_studio.runs_view, qcf_studio.compare_view, qcf_studio.live_view):
        with pytest.raises(MissingExtraError, match=r"needs panel.*pip install 'qcf-studio\[dashboard\]'"):
            view(tmp_path)
