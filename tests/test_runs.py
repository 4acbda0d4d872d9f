"""The run manager shared by browser sessions: bounded live buffers, readable paths."""

import numpy as np
import pytest

import qcf_studio.app.dashboard.runs as runs
from qcf_studio.app.dashboard.runs import LiveRun, RunManager
from qcf_studio.engine.spec import SpecError, parse_spec
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


def test_browser_specs_read_data_only_under_the_data_and_runs_dirs(tmp_path, proxy1d_data):
    from qcf_studio.engine.results.files import write_netcdf_atomic

    data_dir, runs_dir = tmp_path / "data", tmp_path / "runs"
    data_dir.mkdir()
    write_netcdf_atomic(proxy1d_data.to_xarray(), data_dir / "ok.nc")
    (tmp_path / "outside.nc").write_bytes((data_dir / "ok.nc").read_bytes())
    manager = RunManager(client=None, runs_dir=runs_dir, data_dir=data_dir)
    manager.check_readable(parse_spec({"problem": {"data": str(data_dir / "ok.nc")}}))
    messages = []
    for outside in (data_dir / ".." / "outside.nc", tmp_path / "missing.nc", data_dir / "link" / ".." / ".." / "x"):
        with pytest.raises(SpecError) as err:
            manager.check_readable(parse_spec({"problem": {"data": str(outside)}}))
        assert err.value.field == "problem.data"
        messages.append(err.value.message)
    # The same words whether a file outside exists or not: the page cannot probe the server's files.
    assert len(set(messages)) == 1 and "can be read here" in messages[0]


def test_browser_specs_are_refused_data_files_that_are_not_measured_data(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "empty.nc").write_bytes(b"")
    (data_dir / "notes.csv").write_text("observable,x\nsigma1,banana\n")
    manager = RunManager(client=None, runs_dir=tmp_path / "runs", data_dir=data_dir)
    for name, words in (("empty.nc", "empty"), ("notes.csv", "not a number"), ("gone.nc", "file not found")):
        with pytest.raises(SpecError) as err:
            manager.check_readable(parse_spec({"problem": {"data": str(data_dir / name)}}))
        assert err.value.field == "problem.data" and words in err.value.message, err.value.message


def test_live_curves_stream_only_new_rows_to_the_browser_and_stay_bounded(monkeypatch):
    from bokeh.models import ColumnDataSource

    import qcf_studio.layouts.live as live

    monkeypatch.setattr(live, "BUFFER_LENGTH", 50)
    streamed = []
    original = ColumnDataSource.stream

    def record(self, new_data, rollover=None, **kw):
        streamed.append((list(new_data["step"]), rollover))
        return original(self, new_data, rollover, **kw)

    monkeypatch.setattr(ColumnDataSource, "stream", record)
    plots = live.LivePlots(("Nu",), ("u",), ("s",), [2.0], 2, ([0.0], [3.0]))
    plots.push_metrics([{"member": 0, "rank": 0, "step": 10, "loss_g": 10.0, "param_Nu": 2.0}])  # before a view
    fig = plots.losses()  # what a browser session holds: starts from what the Buffers hold
    plots.push_metrics(
        [{"member": m, "rank": 0, "step": 20, "loss_g": 20.0, "loss_d": 1.0, "param_Nu": 2.3} for m in (0, 1)]
    )
    plots.push_metrics([{"member": 0, "rank": 0, "step": 30, "loss_g": 30.0, "loss_d": 1.0}])
    # one message per line and push, holding only the new rows
    assert streamed == [([20.0], 50), ([20.0], 50), ([30.0], 50)]
    sources = {id(r.data_source): list(r.data_source.data["loss_g"]) for r in fig.renderers}
    assert sorted(sources.values()) == [[10.0, 20.0, 30.0], [20.0]]  # member 0's line, member 1's line
    dev = plots.parameters().renderers[0].data_source.data["dev_Nu"]  # member 0: (mean − truth) / range
    assert np.allclose(dev[:2], [0.0, 0.1]) and np.isnan(dev[2])
    plots.push_metrics([{"member": 1, "rank": 0, "step": s, "loss_g": 1.0} for s in range(40, 1040, 10)])
    assert len(plots.buffers[(1, 0)].data) == 50  # bounded on the server (the browser rolls over at 50 too)


def test_live_view_draws_a_loss_curve_for_every_data_parallel_rank():
    from qcf_studio.engine.run.stream import replay
    from qcf_studio.layouts.live import LivePlots

    spec = parse_spec(
        {
            "problem": {"kind": "proxy1d"},
            "ensemble": {"members": 1},
            "cluster": {"mode": "data_parallel", "ranks": 2, "workers": 2},
        }
    )
    run = LiveRun(spec)
    for step in (10, 20):
        replay({"type": "metrics", "member": 0, "step": step, "metrics": {"loss_d": 1.0, "param_Nu": 2.0}}, run)
        replay({"type": "rank_metrics", "member": 0, "rank": 1, "step": step, "metrics": {"loss_d": 3.0}}, run)
    assert run.steps == {0: 20}  # progress counts rank 0 only
    plots = LivePlots(("Nu",), ("u",), ("s",), [2.0], 1, ([0.0], [3.0]), ranks=2)
    rows, _ = run.metrics_since(0)
    plots.push_metrics(rows)
    loss_d = {
        item.label["value"]: list(item.renderers[0].data_source.data["loss_d"])
        for item in plots.losses().legend[0].items
        if item.label["value"].startswith("loss_d")
    }
    assert loss_d == {"loss_d · member 0 rank 0": [1.0, 1.0], "loss_d · member 0 rank 1": [3.0, 3.0]}
    params = plots.parameters().renderers
    assert len(params) == 1 and list(params[0].data_source.data["dev_Nu"]) == [0.0, 0.0]  # rank 0's generator only


def test_cluster_view_names_the_run_member_and_rank_of_each_task():
    from qcf_studio.app.cluster import describe_task

    names = {"0123456789ab": "closure-2d"}
    assert describe_task("member-1-0123456789ab", names) == "closure-2d · member 1"
    assert describe_task("member-0-rank-3-0123456789ab", names) == "closure-2d · member 0 · rank 3"
    assert describe_task("mle-reference-0123456789ab", names) == "closure-2d · MLE reference"
    assert describe_task("member-2-fedcba987654", names) == "run fedcba987654 · member 2"  # another client's run
    assert describe_task(("sum-abc", 0), names) == "('sum-abc', 0)"


def test_the_keys_start_run_gives_its_tasks_read_back_as_their_run_member_and_rank():
    from qcf_studio.engine.run.task_keys import RunTask, member_key, new_run_id, parse_task_key, reference_key

    run = new_run_id()
    assert parse_task_key(member_key(run, 3)) == RunTask(run, 3)
    assert parse_task_key(member_key(run, 0, rank=2)) == RunTask(run, 0, 2)
    assert parse_task_key(reference_key(run)).is_reference
    assert parse_task_key(f"bench-gan-member-1-{run}") is None and parse_task_key(("sum-abc", 0)) is None


def test_large_ensembles_draw_curves_of_the_first_members_only_and_say_so():
    import panel as pn

    from qcf_studio.engine.problems import get_problem
    from qcf_studio.layouts.live import MAX_DRAWN_MEMBERS, LivePlots
    from qcf_studio.layouts.page import live_panels

    p = get_problem("proxy1d")
    plots = LivePlots(p.param_names, p.qcf_names, p.observable_names, p.truth, 64, (p.lo, p.hi))
    # loss_g and loss_d per member drawn, each smoothed and raw
    assert len(plots.losses().renderers) == 2 * 2 * MAX_DRAWN_MEMBERS
    plots.push_metrics([{"member": m, "step": 10, "loss_g": 0.7} for m in range(64)])  # all reported, none fails
    assert sorted(plots.rows()["member"].unique()) == list(range(MAX_DRAWN_MEMBERS))
    note = [v for v in live_panels(plots, None, False) if isinstance(v, pn.pane.Markdown)][0]
    assert "members 0–7 of 64 are drawn" in note.object
    small = LivePlots(p.param_names, p.qcf_names, p.observable_names, p.truth, 2, (p.lo, p.hi))
    assert "drawn" not in " ".join(str(getattr(v, "object", "")) for v in live_panels(small, None, False))
