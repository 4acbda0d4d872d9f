"""A closure campaign's figures and report: PNG, SVG, PDF and standalone HTML, from its ``summary.nc``.

As :mod:`qcf_studio.app.export.run` does for one run: everything is made first, written to temporary files in the output
directory and renamed into place together, so a failure leaves no partial files; figures come from
:mod:`qcf_studio.app.export.campaign_figures` (matplotlib, no pyplot); the HTML holds the figures inline as SVG and
refers to
nothing outside itself, and every value from the file in it is escaped. No Panel here.
"""

from __future__ import annotations

import html
import io
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

import xarray as xr
from matplotlib.backends.backend_pdf import PdfPages

from qcf_studio.app.campaign_files import load_summary
from qcf_studio.app.export import parse_formats
from qcf_studio.app.export.campaign_figures import CAMPAIGN_CAPTIONS, campaign_figures, campaign_title, verdict_page
from qcf_studio.app.export.run import REPORT_CSS, AtomicFiles, out_folder, save_figure, svg_inline, write_figures
from qcf_studio.engine.results.files import netcdf_bytes
from qcf_studio.layouts.campaign import verdict_table

__all__ = [
    "export_campaign",
    "export_summary",
    "campaign_report_html",
    "CAMPAIGN_DOWNLOADS",
    "campaign_download",
    "campaign_download_name",
]


def campaign_report_html(ds: xr.Dataset, svgs: dict[str, bytes]) -> str:
    """One standalone HTML page: title, criteria, the verdict table, the figures inline as SVG, the spec."""
    esc = html.escape
    criteria = "".join(
        f"<li><strong>{esc(str(m))}</strong>: {esc(str(ds.attrs.get(f'criterion_{m}', '')))}</li>"
        for m in ds["method"].values
    )
    table = verdict_table(ds)
    head = "".join(f"<th>{esc(c.replace('_', ' '))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>" for row in table.itertuples(index=False)
    )
    figs = "\n".join(
        f'<figure id="{esc(name)}">{svg_inline(svg)}<figcaption><strong>{esc(name)}</strong>: '
        f"{esc(CAMPAIGN_CAPTIONS.get(name, ''))}</figcaption></figure>"
        for name, svg in svgs.items()
    )
    title = esc(campaign_title(ds))
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
        f"<style>{REPORT_CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n<h2>Criteria</h2>\n<ul>{criteria}</ul>\n"
        f"<h2>Verdicts</h2>\n<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>\n"
        f"<h2>Figures</h2>\n{figs}\n<h2>Spec</h2>\n<pre>{esc(str(ds.attrs.get('spec', '')))}</pre>\n"
        "</body>\n</html>\n"
    )


def _svg(fig) -> bytes:  # noqa: ANN001
    buf = io.BytesIO()
    save_figure(fig, "svg")(buf)
    return buf.getvalue()


def export_summary(ds: xr.Dataset, formats: str | Sequence[str], out_dir: str | Path, stem: str) -> list[Path]:
    """Export the campaign summary ``ds`` into ``out_dir`` as ``<stem>-<figure>.<fmt>`` per figure (png, svg,
    pdf), ``<stem>-report.pdf`` (verdict page, then every figure; with pdf), ``<stem>-report.png|svg`` (the
    verdict page) and ``<stem>-report.html`` (standalone); returns the files written."""
    fmts = parse_formats(formats)
    out = out_folder(Path(out_dir))
    figs = campaign_figures(ds)
    page = verdict_page(ds)
    files = AtomicFiles(out)
    try:
        svgs = write_figures(files, stem, figs, fmts, page)
        if "pdf" in fmts:

            def report(f) -> None:  # noqa: ANN001
                meta = {"Title": campaign_title(ds), "Creator": "qcf-studio campaign export", "CreationDate": None}
                with PdfPages(f, metadata=meta) as pdf:
                    pdf.savefig(page)
                    for fig in figs.values():
                        pdf.savefig(fig)

            files.write(f"{stem}-report.pdf", report)
        if "html" in fmts:
            svgs = {name: svgs.get(name) or _svg(fig) for name, fig in figs.items()}
            text = campaign_report_html(ds, svgs).encode("utf-8")
            files.write(f"{stem}-report.html", lambda f: f.write(text))
        return files.commit()
    except BaseException:
        files.discard()
        raise


def export_campaign(summary_path: str | Path, formats: str | Sequence[str], out_dir: str | Path) -> list[Path]:
    """Export the campaign whose summary is ``summary_path`` (checked as the dashboard reads it) into
    ``out_dir``; files are named after the campaign's folder (``<name>-pulls.png``, ``<name>-report.html``, ...).
    Raises ``ValueError`` (unknown format, not a campaign summary) before anything is written."""
    fmts = parse_formats(formats)  # before the file, so a bad flag never reaches the disk
    path = Path(summary_path)
    ds = load_summary(path)
    return export_summary(ds, fmts, out_dir, path.parent.name if path.stem == "summary" else path.stem)


CAMPAIGN_DOWNLOADS = {  # the Campaign tab's download buttons: label -> what it gives
    "PNG figures (zip)": "png",
    "SVG figures (zip)": "svg",
    "PDF report": "pdf",
    "HTML report": "html",
    "Summary (NetCDF)": "nc",
}


def campaign_download_name(stem: str, label: str) -> str:
    """The name :func:`campaign_download` gives its file."""
    kind = CAMPAIGN_DOWNLOADS[label]
    return {"nc": f"{stem}-summary.nc", "png": f"{stem}-figures-png.zip", "svg": f"{stem}-figures-svg.zip"}.get(
        kind, f"{stem}-report.{kind}"
    )


def campaign_download(ds: xr.Dataset, stem: str, label: str) -> tuple[str, bytes]:
    """One download of :data:`CAMPAIGN_DOWNLOADS` for the summary ``ds``: ``(file name, content)``."""
    kind, name = CAMPAIGN_DOWNLOADS[label], campaign_download_name(stem, label)
    if kind == "nc":
        return name, netcdf_bytes(ds)
    with tempfile.TemporaryDirectory(prefix="qcf-campaign-export-") as tmp:
        files = export_summary(ds, [kind], tmp, stem)
        if kind in ("png", "svg"):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for f in files:
                    z.write(f, f.name)
            return name, buf.getvalue()
        return name, (Path(tmp) / name).read_bytes()
