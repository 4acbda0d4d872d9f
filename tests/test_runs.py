"""The run manager shared by browser sessions: bounded live buffers, readable paths."""

import pytest

import app.runs as runs
from app.runs import LiveRun, RunManager
from engine.spec import SpecError, parse_spec
from tests.conftest import small_spec


def test_sessions_pull_only_new_metrics_and_memory_stays_bounded(monkeypatch):
    monkeypatch.setattr(runs, "MAX_METRICS", 100)
    run = LiveRun(small_spec())
    for s in range(1, 51):
        run.log_metrics(0, s, {"loss_g": 0.7})
    rows, seen = run.metrics_since(0)
    assert len(rows) == 50 and seen == 50 and run.status == "running"
    for s in range(51, 301):
        run.log_metrics(0, s, {"loss_g": 0.7})
    assert len(run.metrics) == 100  # bounded
    rows, seen2 = run.metrics_since(seen)
    assert seen2 == 300 and [r["step"] for r in rows] == list(range(201, 301))  # the oldest scrolled out
    assert run.metrics_since(seen2)[0] == []
    assert run.done_steps == 300


def test_browser_specs_read_data_only_under_the_data_and_runs_dirs(tmp_path):
    data_dir, runs_dir = tmp_path / "data", tmp_path / "runs"
    data_dir.mkdir()
    (data_dir / "ok.nc").write_bytes(b"")
    (tmp_path / "outside.nc").write_bytes(b"")
    manager = RunManager(client=None, runs_dir=runs_dir, data_dir=data_dir)
    manager.check_readable(parse_spec({"problem": {"data": str(data_dir / "ok.nc")}}))
    with pytest.raises(SpecError) as err:
        manager.check_readable(parse_spec({"problem": {"data": str(data_dir / ".." / "outside.nc")}}))
    assert err.value.field == "problem.data"


def test_live_curves_draw_a_bounded_number_of_points():
    import pandas as pd

    from layouts.live import MAX_POINTS, _thin

    df = pd.DataFrame({"step": range(10, 100_001, 10)})
    thin = _thin(df)
    assert len(thin) <= MAX_POINTS + 1
    assert thin["step"].iloc[0] == 10 and thin["step"].iloc[-1] == 100_000  # ends kept
    assert _thin(df.head(50)).equals(df.head(50))  # short histories untouched
