"""Runs and campaigns as files: figures and reports (PNG, SVG, PDF, standalone HTML) and, for a run, its results
as data for others (a HEPData submission, a replica grid).

:func:`export_any` takes either kind of file (``qcf-studio export`` and :func:`qcf_studio.export`); the work is in
:mod:`qcf_studio.app.export.run` (one run's figures), :mod:`qcf_studio.app.export.campaign` (a campaign's summary),
:mod:`qcf_studio.app.export.hepdata` and :mod:`qcf_studio.app.export.grid`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["DATA_FORMATS", "FORMATS", "export_any", "is_campaign_summary", "parse_formats"]

FORMATS = ("png", "svg", "pdf", "html")  # figures and reports
DATA_FORMATS = ("hepdata", "grid")  # a run's results as data: a HEPData submission, a replica grid


def export_any(path: str | Path, formats: str | Sequence[str], out_dir: str | Path) -> list[Path]:
    """Export the run or the campaign summary at ``path`` into ``out_dir`` in ``formats`` (any of png, svg, pdf,
    html; for a run also hepdata and grid); returns what was written (files, and the folders of hepdata and grid).
    Raises ``ValueError`` (unknown format, not a results file), ``FileNotFoundError`` or
    :class:`qcf_studio.app.extras.MissingExtraError` (hepdata without hepdata_lib) before anything is
    written."""
    fmts = parse_formats(formats, FORMATS + DATA_FORMATS)  # before the file, so a bad flag never reaches the disk
    figures, data = [f for f in fmts if f in FORMATS], [f for f in fmts if f in DATA_FORMATS]
    if figures:
        from qcf_studio.app.extras import require_extra

        require_extra("dashboard", "export")  # matplotlib draws the figures; a campaign's tables come from layouts
    if "hepdata" in data:
        from qcf_studio.app.export.hepdata import require_hepdata_lib

        require_hepdata_lib()
    if is_campaign_summary(path):
        if data:
            raise ValueError(f"--format {','.join(data)}: exports a run, and {path} is a campaign's summary")
        from qcf_studio.app.export.campaign import export_campaign

        return export_campaign(path, figures, out_dir)
    grid = None
    if "grid" in data:  # a run without replicas is refused before any format writes
        from qcf_studio.app.export.grid import replica_grid

        grid = replica_grid(path)
    written = []
    if figures:
        from qcf_studio.app.export.run import export_run

        written = export_run(path, figures, out_dir)
    if "hepdata" in data:
        from qcf_studio.app.export.hepdata import export_hepdata

        written += export_hepdata(path, out_dir)
    if grid is not None:
        from qcf_studio.app.export.grid import export_grid

        written += export_grid(path, out_dir, grid)
    return written


def parse_formats(formats: str | Sequence[str], allowed: Sequence[str] = FORMATS) -> list[str]:
    """``"png,pdf"`` or ``["png", "pdf"]`` → ``["png", "pdf"]``; ``ValueError`` naming ``--format`` unless each is
    one of ``allowed``."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = []
    for f in (str(i).strip().lower() for i in items):
        if f not in allowed:
            raise ValueError(f"--format: unknown format {f!r}; choose from {', '.join(allowed)} (comma-separated)")
        if f not in out:
            out.append(f)
    if not out:
        raise ValueError(f"--format: no format given; choose from {', '.join(allowed)}")
    return out


def is_campaign_summary(path: str | Path) -> bool:
    """Whether ``path`` is a campaign's summary (its ``kind`` attribute), read without opening it as a run."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            kind = f.attrs.get("kind")
    except (OSError, ValueError):
        return False  # the run reader says what is wrong with it
    return (kind.decode("utf-8", "replace") if isinstance(kind, bytes) else kind) == "qcf-studio campaign"
