"""Figures and reports of runs and campaigns as files: PNG, SVG, PDF and standalone HTML.

:func:`export_any` takes either kind of file (``qcf-studio export`` and :func:`qcf_studio.export`); the work is in
:mod:`app.export.run` (one run) and :mod:`app.export.campaign` (a campaign's summary).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["export_any", "is_campaign_summary"]


def export_any(path: str | Path, formats: str | Sequence[str], out_dir: str | Path) -> list[Path]:
    """Export the run or the campaign summary at ``path`` into ``out_dir`` in ``formats`` (any of png, svg, pdf,
    html); returns the files written. Raises ``ValueError`` (unknown format, not a results file) or
    ``FileNotFoundError`` before anything is written."""
    from app.extras import require_extra

    require_extra("dashboard", "export")  # matplotlib draws the figures; a campaign's tables come from layouts
    from app.export.run import export_run, parse_formats

    fmts = parse_formats(formats)  # before the file, so a bad flag never reaches the disk
    if is_campaign_summary(path):
        from app.export.campaign import export_campaign

        return export_campaign(path, fmts, out_dir)
    return export_run(path, fmts, out_dir)


def is_campaign_summary(path: str | Path) -> bool:
    """Whether ``path`` is a campaign's summary (its ``kind`` attribute), read without opening it as a run."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            kind = f.attrs.get("kind")
    except (OSError, ValueError):
        return False  # the run reader says what is wrong with it
    return (kind.decode("utf-8", "replace") if isinstance(kind, bytes) else kind) == "qcf-studio campaign"
