"""``qcf-studio export --format hepdata``: a run as a HEPData submission, its tables written with hepdata_lib.

``<stem>-hepdata/`` holds ``submission.yaml`` (the provenance in its comment, the run's spec as an additional
resource ``<stem>-spec.yaml``), one table per QCF (``qcf_<name>.yaml``: x, and y for 2D QCFs, as independent
variables; the ensemble-mean QCF with its symmetric 1σ error, and the truth where known) and ``parameters.yaml``
(estimate ± error, truth, pull, the likelihood reference). ``<stem>-hepdata.tar.gz`` beside it is the same files
as HEPData's upload takes them. The submission is checked with hepdata-validator before it is renamed into place
(:class:`qcf_studio.app.export.staging.Staging`): nothing half-written or invalid is left behind.

hepdata_lib is an optional extra (``qcf-studio[io]``); without it :func:`require_hepdata_lib` says what to install.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
import yaml

from qcf_studio.app.catalog import load_run
from qcf_studio.app.export.staging import Staging
from qcf_studio.app.extras import MissingExtraError
from qcf_studio.engine import __version__
from qcf_studio.engine.results import closure_summary, estimate, fitted_members, is_bootstrap
from qcf_studio.engine.textlimits import clip

if TYPE_CHECKING:
    from hepdata_lib import Table

__all__ = ["error_kind", "export_hepdata", "require_hepdata_lib", "submission_tables", "write_submission"]


def require_hepdata_lib() -> None:
    """Raise :class:`MissingExtraError` (what to install) when hepdata_lib cannot be imported."""
    try:
        import hepdata_lib  # noqa: F401
    except ImportError:
        raise MissingExtraError(
            "--format hepdata needs hepdata_lib: install qcf-studio[io] (pip install 'qcf-studio[io]')"
        ) from None


def error_kind(ds: xr.Dataset) -> tuple[str, str]:
    """The run's 1σ error as HEPData's short error label and a sentence saying how it is made (as
    :func:`qcf_studio.engine.results.ensemble_estimate` makes it)."""
    n, mle = fitted_members(ds), ds.attrs.get("method") == "mle"
    if is_bootstrap(ds):
        return f"bootstrap 1 sigma ({n} members)", (
            f"the standard deviation of the estimates of {n} members, each fitted to a bootstrap replica of the data, "
            f"times sqrt(1 + 1/{n}): the error of their mean"
        )
    if n == 1 and mle:
        return "Hessian 1 sigma (HESSE)", (
            "the likelihood fit's Hessian (HESSE) error; for a QCF the standard deviation of q(x; theta) for theta "
            "drawn from N(theta_hat, H^-1)"
        )
    if n == 1:
        return "generator 1 sigma", (
            "the standard deviation of the GAN generator's parameter distribution (for a QCF: of q(x; theta) over it)"
        )
    own = "Hessian" if mle else "generator"
    return f"ensemble 1 sigma ({n} members)", (
        f"sqrt(mean of the {n} members' {own} variances + variance of the member means): the ensemble error"
    )


def _numbers(values: np.ndarray) -> list[Any]:
    """Values for a table: floats, ``"-"`` (HEPData's blank) where not finite."""
    return [float(v) if np.isfinite(v) else "-" for v in np.asarray(values, dtype=float).ravel()]


def _errors(errors: np.ndarray) -> list[float | None]:
    return [float(e) if np.isfinite(e) else None for e in np.asarray(errors, dtype=float).ravel()]


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name)[:40] or "qcf"


def _qualify(var: Any, ds: xr.Dataset) -> None:
    a = ds.attrs
    var.add_qualifier("problem", clip(str(a.get("problem", "")), 60))
    var.add_qualifier("method", clip(str(a.get("method", "")), 20))
    var.add_qualifier("members", fitted_members(ds))
    var.add_qualifier("run", clip(str(a.get("name", "")), 60))


def _dependent(
    name: str, values: np.ndarray, ds: xr.Dataset, error: np.ndarray | None, label: str = "", digits: int = 5
) -> Any:
    """A dependent variable: ``values`` (rounded to ``digits`` significant digits, hepdata_lib's default 5) with a
    symmetric ``error`` labelled ``label`` if given, and the run's qualifiers."""
    from hepdata_lib import Uncertainty, Variable

    var = Variable(name, is_independent=False, is_binned=False, zero_uncertainties_warning=False)
    var.digits = digits
    var.values = _numbers(values)
    if error is not None:
        unc = Uncertainty(label, is_symmetric=True)
        unc.values = [e if v != "-" else None for e, v in zip(_errors(error), var.values)]
        var.add_uncertainty(unc)
    _qualify(var, ds)
    return var


def _table(name: str, description: str, ds: xr.Dataset) -> Table:
    from hepdata_lib import Table

    table = Table(name)
    table.description = description
    table.location = f"qcf-studio run {clip(str(ds.attrs.get('name', '')), 60)}"
    table.keywords["phrases"] = ["QCF", "closure test" if "params_true" in ds else "fit", str(ds.attrs["problem"])]
    return table


def submission_tables(ds: xr.Dataset) -> list[Table]:
    """One table per QCF, then the parameters table (see the module's docstring)."""
    from hepdata_lib import Variable

    label, how = error_kind(ds)
    mean, err = estimate(ds, "qcf")
    spatial = [d for d in mean.dims if d != "qcf"]  # ["x"] or ["x", "y"]
    axes = np.meshgrid(*(ds[d].values for d in spatial), indexing="ij")  # x outermost, as the values run
    names = [str(q) for q in ds["qcf"].values]
    safe = [_file_safe(q) for q in names]
    if len({s.lower() for s in safe}) < len(safe):  # names that differ only in case or odd characters
        safe = [f"{i + 1}_{s}" for i, s in enumerate(safe)]
    tables = []
    for q, s in zip(names, safe):
        args = ", ".join(spatial)
        truth = " The truth the pseudo-data were generated from is a second column." if "qcf_true" in ds else ""
        table = _table(
            f"QCF {s}",
            f"{q}({args}) of problem {ds.attrs['problem']} fitted by {ds.attrs.get('method', '?')}: the mean over the "
            f"fitted members, with its 1 sigma error: {how}.{truth}",
            ds,
        )
        for d, grid in zip(spatial, axes):
            independent = Variable(d, is_independent=True, is_binned=False)
            independent.values = [float(v) for v in grid.ravel()]
            table.add_variable(independent)
        table.add_variable(_dependent(f"{q}({args})", mean.sel(qcf=q).values, ds, err.sel(qcf=q).values, label))
        if "qcf_true" in ds:
            table.add_variable(_dependent(f"{q}({args}) truth", ds["qcf_true"].sel(qcf=q).values, ds, None))
        tables.append(table)
    tables.append(_parameters_table(ds, label, how))
    return tables


def _parameters_table(ds: xr.Dataset, label: str, how: str) -> Table:
    from hepdata_lib import Variable

    mean, err = estimate(ds, "params")
    extra = []
    if "params_true" in ds:
        extra.append("the truth the pseudo-data were generated from (a closure test)")
        extra.append("the pull (estimate - truth) / error")
    if "params_mle" in ds and "params_mle_err" in ds:
        extra.append("the unbinned maximum-likelihood fit of the same data with its HESSE error")
    table = _table(
        "Parameters",
        f"Parameters of problem {ds.attrs['problem']}: the estimate (mean over the fitted members) with its 1 sigma "
        f"error, {how}" + "".join(f"; {e}" for e in extra) + ".",
        ds,
    )
    names = Variable("parameter", is_independent=True, is_binned=False)
    names.values = [clip(str(p), 40) for p in ds["param"].values]
    table.add_variable(names)
    table.add_variable(_dependent("estimate", mean.values, ds, err.values, label))
    if "params_true" in ds:
        table.add_variable(_dependent("truth", ds["params_true"].values, ds, None, digits=12))  # as given
        table.add_variable(_dependent("pull", ((mean - ds["params_true"]) / err).values, ds, None))
    if "params_mle" in ds and "params_mle_err" in ds:
        mle = ds["params_mle"].values
        table.add_variable(
            _dependent("maximum-likelihood reference", mle, ds, ds["params_mle_err"].values, "Hessian 1 sigma (HESSE)")
        )
    return table


def provenance(ds: xr.Dataset, source: str, spec_name: str) -> str:
    """The submission's comment: what was fitted, how, by which versions, the closure verdict, where the spec is."""
    a = ds.attrs
    try:
        versions = ", ".join(f"{k} {v}" for k, v in json.loads(str(a.get("versions", "{}"))).items())
    except (ValueError, AttributeError):
        versions = ""
    closure = (
        closure_summary(a) + "."
        if "closure_passed" in a and "closure_max_abs_pull" in a
        else "No truth is known (measured data): no closure test."
    )
    return clip(
        f"QCFs fitted with qcf-studio {__version__}: problem {a.get('problem')}, method {a.get('method')}, run "
        f"'{a.get('name', '')}' (file {source}), status {a.get('status', '?')}, {fitted_members(ds)} fitted "
        f"member(s) of {ds.sizes['member']}, wall time {float(a.get('wall_seconds', float('nan'))):.1f} s. {closure} "
        f"The run's spec (validated, every default written out) is the additional resource {spec_name}. "
        f"Packages of the run: {versions}.",
        4000,
    )


_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml's emitter


def _write_table(table: Table, directory: Path) -> None:
    """``table`` as its data file and its entry in ``submission.yaml``: what hepdata_lib's ``Table.write_yaml``
    writes (each variable is its ``make_dict``), emitted by libyaml where hepdata_lib uses PyYAML's Python emitter
    (multiset2d's tables: 2.4 s instead of 4.9 s)."""
    data: dict[str, list[Any]] = {"independent_variables": [], "dependent_variables": []}
    for var in table.variables:
        entry = var.make_dict()
        entry["values"] = [dict(v) for v in entry["values"]]  # (defaultdicts, which the safe dumper does not know)
        data["independent_variables" if var.is_independent else "dependent_variables"].append(entry)
    data_file = f"{table.name.lower().replace(' ', '_')}.yaml"
    with open(directory / data_file, "w", encoding="utf-8") as f:
        yaml.dump(data, f, Dumper=_Dumper, default_flow_style=False, allow_unicode=True)
    entry = {
        "name": table.name,
        "description": table.description,
        "location": table.location,
        "data_file": data_file,
        "keywords": [{"name": k, "values": v} for k, v in table.keywords.items()],
    }
    with open(directory / "submission.yaml", "a", encoding="utf-8") as f:
        yaml.dump(entry, f, Dumper=_Dumper, default_flow_style=False, explicit_start=True, allow_unicode=True)


def write_submission(ds: xr.Dataset, source: str, directory: Path, stem: str) -> None:
    """The submission's files into the (empty) ``directory``."""
    from hepdata_lib import Submission

    spec_name = f"{_file_safe(stem)}-spec.yaml"
    (directory / spec_name).write_text(str(ds.attrs["spec"]), encoding="utf-8")
    submission = Submission()
    submission.comment = provenance(ds, source, spec_name)
    submission.add_additional_resource(
        "The qcf-studio spec of the run (YAML: problem, detector, training, ensemble, cluster)", spec_name
    )
    # Submission.create_files would also write submission.tar.gz into the working directory: its first document
    # is written here as it writes it.
    head = {
        "data_license": submission.get_license(),
        "comment": submission.comment,
        "additional_resources": submission.additional_resources,
    }
    with open(directory / "submission.yaml", "w", encoding="utf-8") as f:
        yaml.dump(head, f, Dumper=_Dumper, default_flow_style=False, explicit_start=True, allow_unicode=True)
    for table in submission_tables(ds):
        _write_table(table, directory)


def validation_errors(directory: Path) -> list[str]:
    """What hepdata-validator finds wrong with the submission in ``directory`` (empty when it is valid)."""
    from hepdata_validator.full_submission_validator import FullSubmissionValidator

    validator = FullSubmissionValidator()
    if validator.validate(directory=str(directory)):
        return []
    return [f"{Path(f).name}: {m.message}" for f, ms in validator.get_messages().items() for m in ms]


def export_hepdata(path: str | Path, out_dir: str | Path, validate: bool = True) -> list[Path]:
    """Write ``<stem>-hepdata/`` and ``<stem>-hepdata.tar.gz`` for the run at ``path`` into ``out_dir``; returns
    both. Raises :class:`MissingExtraError` without hepdata_lib, ``ValueError`` or ``FileNotFoundError`` for a file
    that is not a run, before anything is written. ``validate``: check the submission with hepdata-validator first
    (about half the time of a 2D problem's export) and write nothing if it fails."""
    from qcf_studio.app.export.run import out_folder

    require_hepdata_lib()
    path, out = Path(path), Path(out_dir)
    ds = load_run(path)
    out_folder(out)
    folder, archive = f"{path.stem}-hepdata", f"{path.stem}-hepdata.tar.gz"
    with Staging(out, folder) as staging:
        directory = staging.path(folder)
        directory.mkdir()
        write_submission(ds, path.name, directory, path.stem)
        errors = validation_errors(directory) if validate else []
        if errors:  # a bug here, not the user's: say what, write nothing
            raise ValueError(f"{path}: the HEPData submission does not validate: {'; '.join(errors)[:2000]}")
        with tarfile.open(staging.path(archive), "w:gz") as tar:
            for f in sorted(directory.iterdir()):
                tar.add(f, arcname=f.name)
        return staging.commit([folder, archive])
