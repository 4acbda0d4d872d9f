"""The comparison of several runs: QCFs with bands against the truth, ratio panels, the parameter table, and the
Compare tab's view."""

from __future__ import annotations

import holoviews as hv
import numpy as np
import pytest

from qcf_studio.app.catalog import load_run
from tests.run_files import copy_to, open_results

hv.extension("bokeh", logo=False)

# --- comparison ---------------------------------------------------------------------------------------------------


def test_compare_refuses_runs_of_different_problems_and_names_them(runs):
    from qcf_studio.layouts.compare import compare_qcfs

    with pytest.raises(ValueError, match="different problems") as err:
        compare_qcfs({"gan 1d": load_run(runs["gan"]), "the 2d one": load_run(runs["proxy2d"])})
    assert "gan 1d" in str(err.value) and "the 2d one" in str(err.value)


def test_compare_overlays_runs_with_bands_against_the_truth_and_ratio_panels(runs):
    from qcf_studio.layouts.compare import compare_qcfs

    gan, mle = open_results(runs["gan"]), open_results(runs["mle"])
    panels = compare_qcfs({"gan": load_run(runs["gan"]), "mle": load_run(runs["mle"])})
    assert len(panels) == 2  # u, d
    top, bottom = list(panels[0])
    curves = {c.label: c for c in top if type(c) is hv.Curve}  # hv.Area is a Curve too
    assert set(curves) == {"gan", "mle", "truth"}
    i = 40
    gan_mean = gan["qcf_pred"].values[:, 0, i].mean()  # two members: the plain mean
    assert curves["gan"].dimension_values(1)[i] == pytest.approx(gan_mean)
    ratio_curves = [c for c in bottom if type(c) is hv.Curve]
    assert ratio_curves[0].dimension_values(1)[i] == pytest.approx(gan_mean / gan["qcf_true"].values[0, i])
    assert ratio_curves[1].dimension_values(1)[i] == pytest.approx(
        mle["qcf_pred"].values[0, 0, i] / mle["qcf_true"].values[0, i]
    )
    for p in panels:
        hv.render(p, backend="bokeh")
    hv.render(compare_qcfs({"a": load_run(runs["proxy2d"]), "b": load_run(runs["proxy2d"])})[0], backend="bokeh")


def test_parameter_table_pulls_and_error_ratio_come_from_the_runs(runs):
    from qcf_studio.layouts.compare import parameter_table

    gan, mle = open_results(runs["gan"]), open_results(runs["mle"])
    table = parameter_table({"gan": load_run(runs["gan"]), "mle": load_run(runs["mle"])})
    assert len(table) == 12 and list(table["param"][:6]) == ["Nu", "au", "bu", "Nd", "ad", "bd"]
    g = table[table["run"] == "gan"].set_index("param")
    est, err, true = (gan[v].values for v in ("params_ensemble", "params_ensemble_err", "params_true"))
    np.testing.assert_allclose(g["pull"], (est - true) / err, rtol=1e-5)
    np.testing.assert_allclose(g["truth"], [2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0])
    # The GAN run's reference is the MLE run's fit of the same data.
    np.testing.assert_allclose(g["mle_estimate"], mle["params_pred"].values[0])
    np.testing.assert_allclose(g["error_ratio"], err / mle["params_pred_std"].values[0], rtol=1e-5)
    m = table[table["run"] == "mle"]
    np.testing.assert_allclose(m["estimate"], mle["params_pred"].values[0])
    assert m["error_ratio"].isna().all()


def test_round_to_error_keeps_two_significant_digits_of_the_error():
    from qcf_studio.layouts.compare import round_to_error

    assert round_to_error(2.18749, 0.0523) == "2.187" and round_to_error(0.0523, 0.0523) == "0.052"
    assert round_to_error(12345.6, 560.0) == "12350" and round_to_error(1.0, 0.1) == "1.00"
    assert round_to_error(-0.00001, 0.0123) == "0.000"  # no "-0.000"
    assert round_to_error(2.187499940395355, float("nan")) == "2.187"  # no usable error: 4 significant digits
    assert round_to_error(float("nan"), 0.1) == ""


def test_compare_table_shows_numbers_rounded_to_their_errors_and_no_empty_columns(runs, tmp_path):
    from qcf_studio.app.dashboard.views import CompareView

    gan = open_results(runs["gan"])
    view = CompareView(runs["gan"].parent, period_ms=None)
    view.picker.value = [str(runs["gan"]), str(runs["mle"])]
    shown = view.table.value
    numbers = ["truth", "estimate", "error", "pull", "mle_estimate", "mle_error", "error_ratio"]
    assert set(numbers) <= set(shown)  # each has a value in some row (the MLE run has no reference of its own)
    cells = shown[numbers].to_numpy().ravel()
    assert all(isinstance(c, str) and "nan" not in c.lower() for c in cells), cells
    g = shown[shown["method"] == "gan"].set_index("param")
    for p in ("Nu", "bd"):
        est, err = (float(gan[v].sel(param=p)) for v in ("params_ensemble", "params_ensemble_err"))
        est_text, err_text = g.loc[p, "estimate"], g.loc[p, "error"]
        decimals = len(err_text.partition(".")[2])
        assert len(est_text.partition(".")[2]) == decimals  # the estimate to the error's last digit
        assert len(err_text.lstrip("0.").replace(".", "")) == 2  # two significant digits of the error
        assert abs(float(est_text) - est) <= 0.5 * 10.0**-decimals + 1e-12
        assert abs(float(err_text) - err) <= 0.5 * 10.0**-decimals + 1e-12
    assert g.loc["Nu", "truth"] == "2.1875" and len(g.loc["Nu", "pull"].partition(".")[2]) == 2
    assert (shown.loc[shown["method"] == "mle", "error_ratio"] == "").all()  # missing: blank, not NaN

    # Two runs without an MLE reference: its three columns are empty for every row and left out.
    copy_to(runs["mle"], tmp_path / "a.nc")
    copy_to(runs["mle"], tmp_path / "b.nc")
    view = CompareView(tmp_path, period_ms=None)
    view.picker.value = [str(tmp_path / "a.nc"), str(tmp_path / "b.nc")]
    assert not {"mle_estimate", "mle_error", "error_ratio"} & set(view.table.value)
    assert {"run", "param", "truth", "estimate", "error", "pull"} <= set(view.table.value)


def test_compare_view_plots_two_runs_and_explains_when_they_cannot_be_compared(runs):
    from qcf_studio.app.dashboard.views import CompareView

    view = CompareView(runs["gan"].parent, period_ms=None)
    view.__panel__()
    assert set(view.picker.options) == {p.stem for p in runs.values()}
    view.picker.value = [str(runs["gan"])]
    assert view.message.visible and not view.table.visible
    view.picker.value = [str(runs["gan"]), str(runs["mle"])]
    assert not view.message.visible and len(view.plot_area) == 2
    assert view.table.visible and len(view.table.value) == 12 and "compare-table" in view.table.css_classes
    view.picker.value = [str(runs["gan"]), str(runs["proxy2d"])]
    assert view.message.visible and "different problems" in view.message.object
    assert len(view.plot_area) == 0 and not view.table.visible
