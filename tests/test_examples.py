"""The example notebooks run from top to bottom (in their quick mode) and are stored without outputs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_example_notebooks_are_stored_without_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_the_closure_notebook_runs_fits_compares_and_exports(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("QCF_EXAMPLE_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(ROOT / "examples" / "closure.ipynb", as_version=4)
    # kernel "python3": ipykernel's own, on this interpreter (sys.executable), in the folder tmp_path
    client = NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    started = time.monotonic()
    client.execute()
    print(f"closure.ipynb: {time.monotonic() - started:.1f} s", file=sys.stderr)
    runs = sorted(p.name for p in (tmp_path / "runs").glob("*.nc"))
    assert len(runs) == 2 and runs[0].startswith("closure-1d-2") and runs[1].startswith("closure-1d-mle-")
    assert any(p.suffix == ".png" for p in (tmp_path / "figures").iterdir())
    gan = runs[0].removesuffix(".nc")
    assert (tmp_path / "results" / f"{gan}-hepdata" / "submission.yaml").is_file()
    assert (tmp_path / "results" / f"{gan}-grid" / f"{gan}_u" / f"{gan}_u_0000.dat").is_file()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
