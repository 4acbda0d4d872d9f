"""``qcf-studio export``: a run's figures (PNG, SVG, PDF), its closure report (multipage PDF, standalone HTML),
a copy of its NetCDF file and its spec.

Everything is checked before anything is written, and every file is first written to a temporary file in
the output directory and renamed into place only once all of them were made, so a failure leaves no
partial files. Figures come from :mod:`qcf_studio.app.export.figures` (matplotlib, no pyplot); the HTML has the figures
inline as SVG and refers to nothing outside itself. No Panel here.
"""

from __future__ import annotations

import html
import io
import os
import re
import shutil
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import xarray as xr
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from qcf_studio.app.catalog import load_run
from qcf_studio.app.export import parse_formats
from qcf_studio.app.export.figures import CAPTIONS, figures, text_table
from qcf_studio.app.export.report import (
    Criterion,
    closure_report,
    closure_verdict,
    criterion_label,
    parameter_table,
    report_markdown,
    run_summary,
    run_title,
    verdict_text,
)

__all__ = [
    "DOWNLOADS",
    "download_filename",
    "download_refusal",
    "export_download",
    "export_run",
    "figures",
    "open_results",
    "markdown_to_html",
    "report_html",
    "AtomicFiles",
    "save_figure",
    "svg_inline",
    "REPORT_CSS",
    "out_folder",
    "write_figures",
]

DPI = 150


def open_results(path: str | Path) -> xr.Dataset:
    """A results file written by ``qcf-studio run``, loaded into memory and checked
    (:func:`qcf_studio.app.catalog.load_run`:
    the same reader as the Runs tab); errors name the file."""
    return load_run(path)


class AtomicFiles:
    """Files written to temporaries in one directory and renamed into place together by :meth:`commit`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pending: list[tuple[Path, Path]] = []

    def write(self, name: str, produce: Callable[[IO[bytes]], None]) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".part", dir=self.directory)
        self.pending.append((Path(tmp), self.directory / name))
        with os.fdopen(fd, "wb") as f:
            produce(f)

    def commit(self) -> list[Path]:
        for tmp, final in self.pending:
            os.chmod(tmp, 0o644)  # mkstemp makes it private; exports are meant to be shared
            os.replace(tmp, final)
        done = [final for _, final in self.pending]
        self.pending = []
        return done

    def discard(self) -> None:
        for tmp, _ in self.pending:
            tmp.unlink(missing_ok=True)
        self.pending = []


def write_figures(
    files: AtomicFiles, stem: str, figs: dict[str, Figure], fmts: Sequence[str], page: Figure
) -> dict[str, bytes]:
    """``<stem>-<name>.<fmt>`` for every figure and image format (png, svg, pdf) in ``fmts``, and the text
    ``page`` as ``<stem>-report.png|svg``; returns the SVG of each figure made on the way (for the HTML report)."""
    svgs: dict[str, bytes] = {}
    for fmt in (f for f in fmts if f != "html"):
        for name, fig in figs.items():
            if fmt == "svg":
                buf = io.BytesIO()
                save_figure(fig, "svg")(buf)
                svgs[name] = buf.getvalue()
                files.write(f"{stem}-{name}.svg", lambda f, b=svgs[name]: f.write(b))
            else:
                files.write(f"{stem}-{name}.{fmt}", save_figure(fig, fmt))
        if fmt in ("png", "svg"):
            files.write(f"{stem}-report.{fmt}", save_figure(page, fmt))
    return svgs


def out_folder(out: Path) -> Path:
    """``out`` as an export's folder (created); a ``ValueError`` if it is a file."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_figure(fig: Figure, fmt: str) -> Callable[[IO[bytes]], None]:
    # No dates in the files: exporting a run twice gives the same SVG and PDF.
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}.get(fmt)
    return lambda f: fig.savefig(f, format=fmt, dpi=DPI, metadata=metadata)


_COLOURS = {"pass": "#1a7f37", "ok": "#1a7f37", "FAIL": "#c62828", "warn": "#b26a00"}


def report_page(ds: xr.Dataset, criteria: list[Criterion]) -> Figure:
    """The report's text (title, summary, verdict, criteria, parameter table) as one A4 page."""
    fig = Figure(figsize=(8.27, 11.69))
    left, y = 0.07, 0.95
    fig.text(left, y, run_title(ds), fontsize=16, weight="bold", va="top")
    y -= 0.035
    fig.text(left, y, run_summary(ds), fontsize=9, va="top", color="0.3")
    y -= 0.04
    v = closure_verdict(criteria)
    colour = {True: _COLOURS["pass"], False: _COLOURS["FAIL"]}.get(v, "0.3")  # type: ignore[arg-type]
    fig.text(left, y, verdict_text(criteria), fontsize=13, weight="bold", va="top", color=colour)
    y -= 0.045
    for c in criteria:
        label = criterion_label(c)
        fig.text(left, y, label, fontsize=9, weight="bold", va="top", color=_COLOURS.get(label, "0.4"))
        lines = textwrap.wrap(c.text, 100)
        fig.text(left + 0.07, y, "\n".join(lines), fontsize=9, va="top", linespacing=1.35)
        y -= 0.0165 * len(lines) + 0.01
    y -= 0.01
    fig.text(left, y, "Parameters", fontsize=12, weight="bold", va="top")
    y -= 0.03
    cols, rows = parameter_table(ds)
    height = min(y - 0.04, 0.022 * (len(rows) + 1))
    text_table(fig, (left, y - height, 1 - 2 * left, height), list(cols), rows, 8)
    return fig


def _inline(text: str) -> str:
    """Markdown inline markup of the report (bold, code) as HTML, everything else escaped."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def markdown_to_html(md: str) -> str:
    """The Markdown subset that :func:`qcf_studio.app.export.report.report_markdown` writes (headings, paragraphs,
    lists,
    tables)."""
    out: list[str] = []
    blocks = re.split(r"\n\s*\n", md.strip())
    for block in blocks:
        lines = block.splitlines()
        if m := re.match(r"(#{1,6}) (.*)", lines[0]):
            out.append(f"<h{len(m.group(1))}>{_inline(m.group(2))}</h{len(m.group(1))}>")
            lines = lines[1:]
            if not lines:
                continue
        if all(line.startswith("- ") for line in lines):
            items = "".join(f"<li>{_cell(line[2:])}</li>" for line in lines)
            out.append(f'<ul class="criteria">{items}</ul>')
        elif all(line.startswith("|") for line in lines):
            rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
            body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
            trs = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
        else:
            out.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(out)


def _cell(text: str) -> str:
    """A criterion's list item, its leading **label** coloured by class."""
    m = re.match(r"\*\*(\w+|n/a)\*\* (.*)", text)
    if not m:
        return _inline(text)
    label = m.group(1)
    css = {"pass": "pass", "ok": "pass", "FAIL": "fail", "warn": "warn"}.get(label, "info")
    return f'<span class="label {css}">{html.escape(label)}</span> {_inline(m.group(2))}'


REPORT_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .3rem; } h2 { font-size: 1.25rem; margin-top: 2rem; }
ul.criteria { list-style: none; padding-left: 0; } ul.criteria li { margin: .45rem 0; }
.label { display: inline-block; min-width: 3.2rem; font-weight: 600; }
.pass { color: #1a7f37; } .fail { color: #c62828; } .warn { color: #b26a00; } .info { color: #57606a; }
table { border-collapse: collapse; font-size: .9rem; } th, td { border: 1px solid #d0d7de; padding: .25rem .6rem; }
th { background: #f6f8fa; } figure { margin: 2rem 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: .9rem; color: #57606a; } pre { background: #f6f8fa; padding: 1rem; overflow-x: auto; }
"""


def svg_inline(svg: bytes) -> str:
    """An SVG file as an element to put into HTML (without its XML prolog and DOCTYPE)."""
    text = svg.decode("utf-8")
    return text[text.index("<svg") :]


def report_html(ds: xr.Dataset, markdown: str, svgs: dict[str, bytes]) -> str:
    """One standalone HTML page: the report, the figures inline as SVG, the spec; no external resources."""
    figs = "\n".join(
        f'<figure id="{name}">{svg_inline(svg)}<figcaption><strong>{name}</strong>: '
        f"{html.escape(CAPTIONS.get(name, ''))}</figcaption></figure>"
        for name, svg in svgs.items()
    )
    spec = html.escape(str(ds.attrs.get("spec", "")))
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(run_title(ds))}</title>\n<style>{REPORT_CSS}</style>\n</head>\n<body>\n"
        f"{markdown_to_html(markdown)}\n<h2>Figures</h2>\n{figs}\n<h2>Spec</h2>\n<pre>{spec}</pre>\n"
        "</body>\n</html>\n"
    )


def export_run(path: str | Path, formats: str | Sequence[str], out_dir: str | Path) -> list[Path]:
    """Export one run into ``out_dir``; returns the files written.

    - ``png``, ``svg``, ``pdf``: ``<stem>-<figure>.<fmt>`` for every figure of
    :func:`qcf_studio.app.export.figures.figures`;
      ``png`` and ``svg`` also ``<stem>-report.<fmt>``: the report's verdict and criteria as one page;
    - ``pdf`` also ``<stem>-report.pdf``: the report's text page, then every figure;
    - ``html``: ``<stem>-report.html``, standalone (figures inline as SVG, the parameter table, the spec);
    - always a copy of the run's ``.nc`` and its spec as ``<stem>-spec.yaml``.

    Raises ``ValueError`` (unknown format, not a results file, ``out_dir`` not a directory) or
    ``FileNotFoundError`` before anything is written.
    """
    fmts = parse_formats(formats)
    path, out = Path(path), Path(out_dir)
    ds = open_results(path)
    out_folder(out)
    stem = path.stem
    criteria = closure_report(ds)
    markdown = report_markdown(ds, criteria)
    figs = figures(ds)
    files = AtomicFiles(out)
    try:
        # the report's text page as an image too (the PDF holds it as page 1)
        svgs = write_figures(files, stem, figs, fmts, report_page(ds, criteria))
        if "pdf" in fmts:
            files.write(f"{stem}-report.pdf", lambda f: _report_pdf(f, ds, criteria, figs))
        if "html" in fmts:
            for name, fig in figs.items():
                if name not in svgs:
                    buf = io.BytesIO()
                    save_figure(fig, "svg")(buf)
                    svgs[name] = buf.getvalue()
            page = report_html(ds, markdown, svgs).encode("utf-8")
            files.write(f"{stem}-report.html", lambda f: f.write(page))
        nc = out / path.name
        if not (nc.exists() and nc.samefile(path)):
            files.write(path.name, lambda f: _copy(path, f))
        spec = str(ds.attrs["spec"]).encode("utf-8")
        files.write(f"{stem}-spec.yaml", lambda f: f.write(spec))
        return files.commit()
    except BaseException:
        files.discard()
        raise


def _copy(src: Path, dst: IO[bytes]) -> None:
    with open(src, "rb") as f:
        shutil.copyfileobj(f, dst)


def _report_pdf(f: IO[bytes], ds: xr.Dataset, criteria: list[Criterion], figs: dict[str, Figure]) -> None:
    meta = {"Title": run_title(ds), "Creator": "qcf-studio export", "CreationDate": None}
    with PdfPages(f, metadata=meta) as pdf:
        pdf.savefig(report_page(ds, criteria))
        for fig in figs.values():
            pdf.savefig(fig)


DOWNLOADS = {  # the dashboard's download buttons: label -> format exported, and the file(s) it gives
    "PNG figures (zip)": "png",
    "SVG figures (zip)": "svg",
    "PDF report": "pdf",
    "HTML report": "html",
    "NetCDF": "nc",
    "Spec (YAML)": "spec",
    "HEPData (tar.gz)": "hepdata",
    "QCF replicas (zip)": "grid",
}


def download_filename(path: str | Path, label: str) -> str:
    """The name :func:`export_download` gives its file."""
    stem, kind = Path(path).stem, DOWNLOADS[label]
    return {
        "nc": Path(path).name,
        "spec": f"{stem}-spec.yaml",
        "png": f"{stem}-figures-png.zip",
        "svg": f"{stem}-figures-svg.zip",
        "hepdata": f"{stem}-hepdata.tar.gz",
        "grid": f"{stem}-grid.zip",
    }.get(kind, f"{stem}-report.{kind}")


def download_refusal(ds: xr.Dataset, path: str | Path, label: str) -> str | None:
    """Why the download ``label`` of :data:`DOWNLOADS` cannot be made for the run ``ds`` read from ``path`` (a
    sentence), or None when it can: the HEPData submission needs hepdata_lib, the replicas a run that has them."""
    kind = DOWNLOADS[label]
    if kind == "hepdata":
        from qcf_studio.app.export.hepdata import require_hepdata_lib
        from qcf_studio.app.extras import MissingExtraError

        try:
            require_hepdata_lib()
        except MissingExtraError as e:
            return str(e)
    if kind == "grid":
        from qcf_studio.engine.results.replicas import replicas_refusal

        return replicas_refusal(ds, Path(path).name)
    return None


def export_download(path: str | Path, label: str) -> tuple[str, bytes]:
    """One download of :data:`DOWNLOADS` for the run at ``path``: ``(file name, content)``. Figures come
    as one zip, the replica grid's folder too, the HEPData submission as its tar.gz; all are made in a temporary
    directory (nothing is left behind). Raises as the export would (:func:`download_refusal` says why first)."""
    import zipfile

    path, kind = Path(path), DOWNLOADS[label]
    name = download_filename(path, label)
    ds = open_results(path)  # the same checks as an export
    if kind == "nc":
        return name, path.read_bytes()
    if kind == "spec":
        return name, str(ds.attrs["spec"]).encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="qcf-export-") as tmp:
        if kind == "hepdata":
            from qcf_studio.app.export.hepdata import export_hepdata

            export_hepdata(path, tmp)
            return name, (Path(tmp) / name).read_bytes()
        if kind == "grid":  # the folder <stem>-grid/ (replicas NetCDF, LHAPDF sets) as one zip
            from qcf_studio.app.export.grid import export_grid

            export_grid(path, tmp)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted((Path(tmp) / f"{path.stem}-grid").rglob("*")):
                    if f.is_file():
                        z.write(f, f.relative_to(tmp).as_posix())
            return name, buf.getvalue()
        files = export_run(path, [kind], tmp)
        if kind in ("png", "svg"):
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for f in files:
                    if f.suffix == f".{kind}":
                        z.write(f, f.name)
            return name, buf.getvalue()
        return name, (Path(tmp) / name).read_bytes()
