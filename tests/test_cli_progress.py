"""Progress of `qcf-studio run` and `campaign` on stderr: every method's metrics reach the end of the bar; without a
terminal (a batch job's log) progress is a few plain lines, never carriage-return redraws."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qcf_studio.app.cli.progress import Progress, ProgressBarSink
from qcf_studio.engine.campaign.driver import Progress as CampaignProgress
from qcf_studio.engine.data.pseudodata import make_pseudo_data
from qcf_studio.engine.problems import get_problem
from qcf_studio.engine.run.runner import train_member
from qcf_studio.engine.spec import METHODS, parse_spec

EXE = Path(sys.executable).parent / "qcf-studio"


def _spec(method: str, steps: int, **training) -> dict:
    """A gauss6 spec that trains (or fits) in seconds on one worker."""
    t = {
        "method": method,
        "steps": steps,
        "metrics_every": 2,
        "snapshot_every": steps,
        "batch_params": 16,
        "events_per_param": 16,
        "gen_width": 16,
        "disc_width": 16,
        **training,
    }
    return {
        "version": 1,
        "name": "tiny",
        "problem": {"kind": "gauss6", "events": 1000, "seed": 1},
        "training": t,
        "ensemble": {"members": 1},
        "cluster": {"workers": 1},
    }


def _run_logged(tmp_path: Path, raw: dict, *args: str) -> tuple[subprocess.CompletedProcess, str]:
    """`qcf-studio run` (or `campaign`, in ``args``) with stderr going to a file, as in a batch job."""
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(raw))
    log = tmp_path / "job.log"
    with open(log, "w") as err:
        r = subprocess.run(
            [str(EXE), *(args or ("run",)), str(spec), "--out", str(tmp_path / "out"), "--workers", "1"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            timeout=300,
        )
    return r, log.read_bytes().decode()  # not read_text(), whose universal newlines would hide a '\r'


def _progress_lines(log: str, name: str = "tiny") -> list[str]:
    return [line for line in log.splitlines() if line.startswith(f"{name}: ")]


@pytest.mark.parametrize("method", METHODS)
def test_every_methods_metrics_take_the_progress_to_its_end(method, capsys):
    """An mle fit reports iterations (it stopped at 5% of training.steps) and no loss_g (a KeyError once)."""
    spec = parse_spec(_spec(method, 40))
    problem = get_problem("gauss6")
    data = make_pseudo_data(problem, problem.truth_tensor().numpy(), 1000, seed=1)
    sink = ProgressBarSink(spec.training.steps, 1, spec.name)
    sink.finish([train_member(spec, 0, data, sink)])
    sink.close()
    assert sink.progress.done == sink.progress.total == 40
    last = _progress_lines(capsys.readouterr().err)[-1]
    assert "40/40 steps (100%)" in last and ("nll=" if method == "mle" else "loss_g=") in last


def test_without_a_terminal_progress_is_a_line_every_tenth_and_a_bar_on_a_terminal():
    log = io.StringIO()
    progress = Progress(1000, "job", "step", stream=log)
    for done in range(1, 1001):
        progress.set(done, {"loss": "0.5"})
    progress.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 11  # the first report, then every tenth
    assert lines[-1].startswith("job: 1000/1000 steps (100%)") and lines[-1].endswith("loss=0.5")

    log = io.StringIO()
    progress = Progress(1000, "job", "step", stream=log)
    progress.line_seconds = 0.0  # the time rule: here every report is due
    for done in (1, 2, 3):
        progress.set(done)
    assert len(log.getvalue().splitlines()) == 3

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    progress = Progress(10, "job", "step", stream=term)
    progress.set(10)
    progress.close()
    assert progress.bar is not None and "\r" in term.getvalue() and "100%|" in term.getvalue()


def test_an_mle_run_on_the_command_line_reaches_100_percent_without_a_traceback(tmp_path):
    r, log = _run_logged(tmp_path, _spec("mle", 1500))
    assert r.returncode == 0, log[-2000:]
    assert "Traceback" not in log
    assert "1500/1500 steps (100%)" in _progress_lines(log)[-1], log


def test_a_gan_run_logged_to_a_file_writes_a_few_plain_lines(tmp_path):
    r, log = _run_logged(tmp_path, _spec("gan", 200))
    assert r.returncode == 0, log[-2000:]
    lines = _progress_lines(log)
    assert "\r" not in log and log.endswith("\n") and "Traceback" not in log
    assert 3 <= len(lines) <= 15, lines  # of 100 reports: the first, every tenth, every 30 s
    assert "200/200 steps (100%)" in lines[-1] and "loss_g=" in lines[-1]


@pytest.mark.slow
def test_a_campaign_logged_to_a_file_writes_plain_lines(tmp_path):
    raw = {**_spec("mle", 200), "name": "g6", "campaign": {"replicas": 20, "methods": ["mle"]}}
    r, log = _run_logged(tmp_path, raw, "campaign")
    assert r.returncode == 0, log[-2000:]
    lines = _progress_lines(log, "g6")
    assert "\r" not in log and log.endswith("\n") and "Traceback" not in log
    assert 3 <= len(lines) <= 22, lines
    assert "20/20 fits (100%)" in lines[-1] and "failed=0" in lines[-1]


def test_a_campaigns_time_left_weighs_each_fit_by_its_methods_cost():
    """A GAN fit costing nine likelihood fits: the time left counts the fits still to do at their methods' cost
    (280 s below, where counting fits alike says 120 s)."""
    progress = CampaignProgress(total=8, left={"gan": 4, "mle": 4})
    progress.started = time.monotonic() - 120.0
    assert progress.eta_seconds() is None  # nothing finished in this session yet
    progress.count("gan", "completed", 90.0)
    # the likelihood fits' cost is not known yet: weighed as a GAN fit's, i.e. every fit alike
    assert progress.eta_seconds() == pytest.approx(120.0 / 1 * 7, rel=1e-3)
    progress.count("mle", "completed", 10.0)
    progress.count("mle", "completed", 10.0)
    progress.count("mle", "failed")  # its cost unknown: that of its method
    # done: 90 + 3 × 10 compute seconds in 120 s; left: 3 GAN and 1 likelihood fit, 280 compute seconds
    assert progress.eta_seconds() == pytest.approx(120.0 * 280.0 / 120.0, rel=1e-3)
    assert (progress.done, progress.failed, progress.done_here, progress.left) == (3, 1, 4, {"gan": 3, "mle": 1})


def test_the_progress_line_shows_the_callers_time_left_when_it_has_one():
    log = io.StringIO()
    left = {"seconds": None}
    progress = Progress(10, "camp", "fit", stream=log, time_left=lambda: left["seconds"])
    progress.line_seconds = 0.0
    progress.set(1)
    assert "left" not in log.getvalue()  # not known yet: nothing rather than a guess from the rate
    left["seconds"] = 9000.0
    progress.set(2)
    assert log.getvalue().splitlines()[-1].startswith("camp: 2/10 fits (20%)")
    assert "about 2:30:00 left" in log.getvalue().splitlines()[-1]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    term = Terminal()
    progress = Progress(10, "camp", "fit", stream=term, time_left=lambda: 9000.0)
    progress.set(3, {"failed": 0})
    progress.bar.refresh()
    assert "left=2:30:00" in term.getvalue() and "failed=0" in term.getvalue()
    progress.close()


def test_the_dashboards_durations_read_as_seconds_minutes_or_hours():
    from qcf_studio.app.dashboard.durations import duration_text

    assert [duration_text(s) for s in (0.4, 42.0, 119.4, 725.0, 3599.0, 10_260.0, 3_600.0 * 30)] == [
        "0 s",
        "42 s",
        "119 s",
        "12 min 5 s",
        "59 min 59 s",
        "2 h 51 min",
        "30 h 0 min",
    ]
    assert duration_text(float("nan")) == "unknown" and duration_text(-3.0) == "0 s"
