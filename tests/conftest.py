"""Shared fixtures: small specs, pseudo-data, and a real Dask LocalCluster."""

from __future__ import annotations

import numpy as np
import pytest

from qcf_studio.engine.data.pseudodata import make_pseudo_data
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.spec import parse_spec
from tests.run_files import runs  # noqa: F401 (a fixture: results files for the view tests)


def small_spec(**training):
    """A proxy1d spec small enough for tests (few events, few steps)."""
    t = {"method": "gan", "steps": 60, "metrics_every": 10, "snapshot_every": 30, **training}
    return parse_spec(
        {
            "name": "test-small",
            "problem": {"kind": "proxy1d", "events": 5000, "seed": 3},
            "training": t,
            "ensemble": {"members": 2},
        }
    )


@pytest.fixture
def proxy1d():
    return get_problem("proxy1d")


@pytest.fixture(scope="session")
def proxy1d_data():
    p = get_problem("proxy1d")
    return make_pseudo_data(p, np.asarray(p.truth), 20_000, seed=5)


@pytest.fixture(scope="session")
def dask_client():
    from qcf_studio.app.cluster import close, connect

    client = connect(workers=2)
    yield client
    close(client)
