"""A GAN ensemble whose data pull a parameter past its bound: the members pile up at it, and the closure report
says the error interval reaches the bound (engine.results.bounds)."""

from __future__ import annotations

import pytest

from qcf_studio.app.export.report import AT_BOUND, closure_report
from qcf_studio.engine.campaign.plan import CampaignPlan, FitKey
from qcf_studio.engine.campaign.summary import build_summary, fit_record, missing_record
from qcf_studio.engine.results import build_results
from qcf_studio.engine.results.bounds import EDGE, errors_at_bound, spec_bounds
from qcf_studio.engine.run.runner import measured_data, train_member
from qcf_studio.engine.run.sinks import HistorySink
from qcf_studio.engine.safe_yaml import load_yaml
from qcf_studio.engine.spec import parse_spec
from qcf_studio.layouts.campaign import verdict_table


def _run(p0_range: list[float]):
    """A bootstrap ensemble of 4 gauss6 GANs on data made with p0 = 2.0, with p0's range as given."""
    data = measured_data(parse_spec({"name": "data", "problem": {"kind": "gauss6", "events": 2000, "seed": 1}}))
    truth = min(2.0, p0_range[1])
    spec = parse_spec(
        {
            "name": "edge",
            "problem": {
                "kind": "gauss6",
                "events": 2000,
                "seed": 1,
                "truth": {"p0": truth, "p1": 1.0},
                "bounds": {"p0": p0_range, "p1": [0.0, 3.0]},
            },
            "training": {"method": "gan", "steps": 600, "batch_params": 16, "events_per_param": 32},
            "ensemble": {"members": 4, "bootstrap": True},
        }
    )
    members = [train_member(spec, m, data, HistorySink()) for m in range(4)]
    return build_results(spec, data, members, 1.0)


@pytest.fixture(scope="module")
def against_the_bound():
    return _run([1.5, 1.99])


def test_members_pulled_past_a_bound_give_an_interval_that_reaches_it(against_the_bound):
    ds = against_the_bound
    assert spec_bounds(ds) == {"p0": (1.5, 1.99), "p1": (0.0, 3.0)}
    near = errors_at_bound(ds)
    assert list(near) == ["p0"], near  # p1 (about 1.0 in [0, 3]) is far from its bounds
    bound, estimate, error = near["p0"]
    members = ds["params_pred"].sel({"param": "p0"}).values
    assert bound == 1.99 and members.max() <= 1.99
    # pressed against the bound: within 1% of the range of it (their spread is then no guide: here they agree
    # to a fraction of their distance from it)
    assert (1.99 - members).min() <= EDGE * 0.49 and 1.5 < estimate < 1.99 and error > 0
    (c,) = [c for c in closure_report(ds) if c.name == AT_BOUND]
    assert c.passed is False and not c.decisive and "p0" in c.text and "bound 1.99" in c.text


def test_a_range_that_leaves_room_flags_nothing():
    ds = _run([1.5, 2.5])
    assert errors_at_bound(ds) == {}
    assert AT_BOUND not in [c.name for c in closure_report(ds)]
    # a likelihood fit is MINUIT's to judge, and a file without a readable spec has no bounds
    assert errors_at_bound(ds.assign_attrs(method="mle")) == {}
    assert spec_bounds(ds.assign_attrs(spec="{")) == {} and errors_at_bound(ds.assign_attrs(spec="")) == {}


def test_a_campaign_counts_the_fits_whose_error_reaches_a_bound(against_the_bound, tmp_path):
    ds = against_the_bound
    spec = parse_spec({**load_yaml(ds.attrs["spec"]), "campaign": {"replicas": 2, "methods": ["gan"]}})
    plan = CampaignPlan(spec, tmp_path)
    record = fit_record(ds, FitKey(0, "gan"))
    assert record.at_bound.tolist() == [True, False]
    summary = build_summary(plan, {FitKey(0, "gan"): record, FitKey(1, "gan"): missing_record(FitKey(1, "gan"))})
    assert summary["at_bound"].sel({"method": "gan"}).values.tolist() == [[1, 0], [0, 0]]
    table = verdict_table(summary).set_index("param")
    assert table.loc["p0", "at_bound"] == 1 and table.loc["p1", "at_bound"] == 0
    # a summary written before the flag was kept has no such column, and still opens
    assert "at_bound" not in verdict_table(summary.drop_vars("at_bound")).columns
