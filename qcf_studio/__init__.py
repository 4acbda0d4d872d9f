"""qcf-studio from Python: validate a spec, run a fit (headless or watched live in a notebook), read its results,
run a closure campaign, export figures, and the dashboard's views as notebook components.

A thin layer: each function is the ``qcf-studio`` command or the dashboard view of the same name, called from
Python (:mod:`qcf_studio.app.cli`, :mod:`qcf_studio.app.dashboard`, :mod:`qcf_studio.app.export`, :mod:`engine`).
Importing it is cheap; torch,
Dask and Panel are imported by the functions that need them.

Example::

    import qcf_studio

    spec = qcf_studio.validate("sample_data/closure-1d.yaml")
    ds = qcf_studio.run(spec, out="runs")            # an embedded Dask cluster, started and closed
    ds.params_pred.mean("member") - ds.params_true
    qcf_studio.export(ds.encoding["source"], "figs")  # PNG figures of the saved run

In a notebook (after ``import panel as pn; pn.extension("tabulator")``)::

    fit = qcf_studio.start(spec, out="runs")          # trains in the background
    fit.view()                                        # live losses, parameters, QCFs, observables
    ds = fit.result()                                 # waits for the end
    qcf_studio.compare_view("runs")                   # pick runs to overlay
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qcf_studio.engine import __version__
from qcf_studio.engine.specfields import SpecError

if TYPE_CHECKING:
    import panel as pn
    import xarray as xr
    from distributed import Client

    from qcf_studio.app.notebook import Fit
    from qcf_studio.engine.spec import Spec

__all__ = [
    "__version__",
    "SpecError",
    "validate",
    "run",
    "start",
    "open_run",
    "campaign",
    "export",
    "live_view",
    "runs_view",
    "compare_view",
]


def validate(spec: str | Path | dict[str, Any] | Spec) -> Spec:
    """The validated :class:`~qcf_studio.engine.spec.Spec`, every default written out.

    Arguments:
        spec: a YAML file's path, YAML text, the spec as a dict, or a ``Spec`` (validated again: it may have
            been edited). Relative ``problem.data`` paths are relative to a file's folder, else to the working
            directory.

    Raises :class:`SpecError` naming the field (``problem.bounds.Nu: ...``).

    Example::

        >>> spec = qcf_studio.validate({"name": "quick", "problem": {"kind": "gauss6"}})
        >>> spec.training.method
        'gan'
    """
    from qcf_studio.engine.spec import Spec, load_spec, parse_spec, parse_spec_text

    if isinstance(spec, Spec):
        return parse_spec(spec.to_dict())
    if isinstance(spec, dict):
        return parse_spec(spec)
    if isinstance(spec, str) and ("\n" in spec or (":" in spec and not _is_file(spec))):
        return parse_spec_text(spec)
    return load_spec(spec)


def _is_file(text: str) -> bool:
    try:
        return Path(text).is_file()
    except (OSError, ValueError):  # a name too long, a NUL: not a file's name
        return False


def run(
    spec: str | Path | dict[str, Any] | Spec,
    cluster: str | Client | None = None,
    progress: bool = True,
    out: str | Path | None = None,
) -> xr.Dataset:
    """Train ``spec`` (as ``qcf-studio run`` does) and return its results (the contract of docs/results.md).

    Arguments:
        cluster: ``None``: an embedded Dask LocalCluster of the spec's ``cluster.workers`` processes, started and
            closed; ``"tcp://host:port"``: an existing scheduler; a ``distributed.Client``: used and left open.
        progress: a progress bar (lines where stderr is not a terminal, as in a notebook) on stderr.
        out: a folder to save the results in, atomically and under a new name (``<name>-<UTC time>.nc``), as the
            command does; ``ds.encoding["source"]`` is then the file. Not saved when ``None``.

    An interrupt (Ctrl-C, a notebook's stop button) stops the members at their next check; the results hold
    what they produced (status ``stopped``), with a warning. A run that did not complete warns too.

    Example::

        >>> ds = qcf_studio.run("sample_data/closure-1d.yaml", out="runs")
        >>> ds.attrs["status"], ds.encoding["source"]
        ('completed', 'runs/closure-1d-20261206-101500.nc')
    """
    from qcf_studio.app.cli.run import train
    from qcf_studio.app.notebook import finished_results
    from qcf_studio.app.signals import Interrupted

    checked = validate(spec)
    try:
        trained = train(checked, out, cluster, progress=progress, out_label="out")
    except Interrupted as e:
        raise KeyboardInterrupt(f"{e}: interrupted before training started; nothing to keep") from None
    saved = trained.saved
    return finished_results(trained.ds, saved.path if saved else None, saved.problem if saved else "", trained.signal)


def start(
    spec: str | Path | dict[str, Any] | Spec, cluster: str | Client | None = None, out: str | Path | None = None
) -> Fit:
    """Start training ``spec`` in the background and return at once: a :class:`~qcf_studio.app.notebook.Fit` with
    ``.view()`` (its live plots, a Panel object for a notebook cell), ``.result()`` (waits; the Dataset),
    ``.stop()``, ``.status`` and ``.path``. ``cluster`` and ``out`` as for :func:`run` (an embedded cluster is
    closed when the run ends).

    Example::

        >>> fit = qcf_studio.start("sample_data/closure-1d.yaml", out="runs")
        >>> fit.view()        # in a notebook cell: losses, parameters, QCFs filling in
        >>> ds = fit.result()
    """
    from qcf_studio.app.cluster import connect
    from qcf_studio.app.notebook import Fit
    from qcf_studio.engine.results.files import check_writable, remove_stale_parts

    checked = validate(spec)
    out_dir = None
    if out is not None:
        out_dir = check_writable(out, "out")
        remove_stale_parts(out_dir)
    if cluster is None or isinstance(cluster, str):
        return Fit(checked, connect(cluster, checked.cluster.workers, checked.cluster.device), True, out_dir)
    return Fit(checked, cluster, False, out_dir)


def open_run(path: str | Path) -> xr.Dataset:
    """The results file at ``path`` as a Dataset in memory (file closed), checked against the results contract
    (:func:`qcf_studio.app.catalog.load_run`, the reader the dashboard and the export use); ``ValueError`` if it is
    none.
    ``ds.encoding["source"]`` is ``path``.

    Example::

        >>> ds = qcf_studio.open_run("runs/closure-1d-20261206-101500.nc")
        >>> float(ds.pull.max())
    """
    from qcf_studio.app.catalog import load_run

    ds = load_run(path)
    ds.encoding["source"] = str(path)  # as for run(): the file the Dataset came from
    return ds


def campaign(
    spec: str | Path | dict[str, Any] | Spec,
    out: str | Path,
    replicas: int | None = None,
    methods: Sequence[str] | None = None,
    cluster: str | Client | None = None,
    progress: bool = True,
) -> xr.Dataset:
    """A closure campaign (as ``qcf-studio campaign`` runs it): fit many pseudo-data replicas of ``spec`` in
    ``out/<name>/`` (resumable: finished fits are kept and skipped) and return the summary (also
    ``out/<name>/summary.nc``): pulls, coverage, R_bv, ξ_1σ and verdicts per method and parameter.

    Arguments:
        replicas, methods: replace the spec's ``campaign.replicas`` and ``campaign.methods`` (e.g. ``["mle"]``).
        cluster, progress: as for :func:`run`.

    Example::

        >>> summary = qcf_studio.campaign("sample_data/closure-1d-mle.yaml", "runs", replicas=30)
        >>> summary.attrs["verdict_mle"]
    """
    from qcf_studio.app.cli.campaign import fit_campaign
    from qcf_studio.app.signals import Interrupted

    checked = validate(spec)
    try:
        done = fit_campaign(
            checked, out, replicas, list(methods) if methods else None, cluster, progress=progress, out_label="out"
        )
    except Interrupted as e:
        raise KeyboardInterrupt(f"{e}: interrupted before the campaign started; nothing to keep") from None
    if done.signal is not None:
        import warnings

        warnings.warn(f"{checked.name}: interrupted; finished fits are kept, the summary counts them", stacklevel=2)
    return done.summary


def export(
    path: str | Path, out_dir: str | Path, formats: str | Sequence[str] = ("png",), *, format: str | None = None
) -> list[Path]:
    """Write the figures (and reports) of the run or campaign summary at ``path`` into ``out_dir``, as
    ``qcf-studio export`` does, or a run's results as data. Returns what was written.

    Arguments:
        formats: any of ``png``, ``svg``, ``pdf``, ``html`` (all or none of their files are written, renamed into
            place together, a copy of the NetCDF and its spec among them); for a run also ``hepdata`` (a HEPData
            submission folder and its ``.tar.gz``; needs ``qcf-studio[io]``) and ``grid`` (the QCF replicas as
            NetCDF, and LHAPDF6 sets for 1D QCFs on x in (0, 1]): each a folder renamed into place whole.
            docs/results.md describes every file.
        format: the same, for one format (``format="hepdata"``); it replaces ``formats``.

    Example::

        >>> qcf_studio.export("runs/closure-1d-20261206-101500.nc", "figs", formats=("png", "pdf"))
        [PosixPath('figs/closure-1d-20261206-101500-losses.png'), ...]
        >>> qcf_studio.export("runs/closure-1d-20261206-101500.nc", "out", format="grid")
        [PosixPath('out/closure-1d-20261206-101500-grid/closure-1d-20261206-101500-replicas.nc'), ...]
    """
    from qcf_studio.app.export import export_any

    chosen = format if format is not None else formats
    return export_any(path, chosen if isinstance(chosen, str) else list(chosen), out_dir)


def live_view(fit_or_path: Fit | str | Path) -> pn.viewable.Viewer | pn.Column:
    """The live view of a fit in flight (``fit.view()`` of :func:`start`), or of a finished run's file as the
    dashboard's Runs tab replays it (its report, downloads and plots).

    Example::

        >>> qcf_studio.live_view("runs/closure-1d-20261206-101500.nc")
    """
    from qcf_studio.app.extras import require_extra
    from qcf_studio.app.notebook import Fit

    if isinstance(fit_or_path, Fit):
        return fit_or_path.view()
    require_extra("dashboard", "qcf_studio.live_view")
    import panel as pn

    from qcf_studio.app.dashboard.views import run_panels

    return pn.Column(*run_panels(Path(fit_or_path)), sizing_mode="stretch_width")


def runs_view(runs_dir: str | Path = "runs", open: str | Path | None = None) -> pn.viewable.Viewer:
    """The dashboard's Runs tab for ``runs_dir``: a table of its results files (refreshed every few seconds);
    selecting one, or naming it in ``open``, shows its closure report and plots.

    Example::

        >>> qcf_studio.runs_view("runs")
    """
    from qcf_studio.app.extras import require_extra

    require_extra("dashboard", "qcf_studio.runs_view")
    from qcf_studio.app.dashboard.views import RunsBrowser

    view = RunsBrowser(runs_dir)
    if open is not None:
        view.open(open)
    return view


def compare_view(runs_dir: str | Path = "runs", runs: Sequence[str | Path] = ()) -> pn.viewable.Viewer:
    """The dashboard's Compare tab for ``runs_dir``: QCFs of two or more runs of one problem overlaid with ±1σ
    bands and ratios, and their parameters side by side (estimate, pull, GAN/MLE error ratio). ``runs``: the
    files to compare at once (else picked in the view).

    Example::

        >>> qcf_studio.compare_view("runs", runs=[gan.encoding["source"], mle.encoding["source"]])
    """
    from qcf_studio.app.extras import require_extra

    require_extra("dashboard", "qcf_studio.compare_view")
    from qcf_studio.app.dashboard.views import CompareView

    view = CompareView(runs_dir)
    if runs:
        offered = {Path(v).resolve(): v for v in view.picker.options.values()}
        missing = [str(r) for r in runs if Path(r).resolve() not in offered]
        if missing:
            raise ValueError(f"not readable runs of {runs_dir}: {', '.join(missing)}")
        view.picker.value = [offered[Path(r).resolve()] for r in runs]
    return view
