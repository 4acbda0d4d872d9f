"""What a release needs besides the code: one version everywhere, the licence, the citation file, the typing
markers installed with the packages."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

import engine
from app.cli.commands import main

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_has_one_place_and_the_command_prints_it(capsys):
    project = PYPROJECT["project"]
    if "version" in project:  # a literal version must be engine's
        assert project["version"] == engine.__version__
    else:
        assert "version" in project["dynamic"]
        assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "engine.__version__"}
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"qcf-studio {engine.__version__}"


def test_the_citation_file_is_cff_1_2_with_this_version_and_licence():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0"
    assert {"message", "title", "authors", "version", "license"} <= set(cff)
    assert str(cff["version"]) == engine.__version__
    assert cff["license"] == "BSD-3-Clause" == PYPROJECT["project"]["license"]["text"]
    assert cff["authors"] == [{"name": "The qcf-studio developers"}]


def test_the_licence_is_bsd_3_clause_of_the_developers():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License") and "Copyright (c) 2026, the qcf-studio developers" in text


def test_typed_packages_ship_their_marker():
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for package in ("engine", "qcf_studio"):
        assert (ROOT / package / "py.typed").is_file()
        assert "py.typed" in data[package]
    assert "qcf_studio*" in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert "qcf_studio" in PYPROJECT["tool"]["mypy"]["files"]
