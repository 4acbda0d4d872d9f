"""A fit training in the background of this process, for notebooks (:func:`qcf_studio.start`): the dashboard's run
control (:func:`qcf_studio.app.dashboard.runs.drive` filling a :class:`~qcf_studio.app.dashboard.runs.LiveRun`) on a
thread, its live
view (:class:`qcf_studio.app.dashboard.live_view.RunWatch`) for a notebook cell, and its results when it ends.

No Panel imports until :meth:`Fit.view` is called.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from qcf_studio.app.dashboard.runs import LiveRun, drive

if TYPE_CHECKING:
    import xarray as xr
    from distributed import Client

    from qcf_studio.app.dashboard.live_view import RunWatch
    from qcf_studio.engine.spec import Spec

__all__ = ["Fit", "finished_results"]


class Fit:
    """A run of ``spec`` on ``client`` in a background thread, saved in ``out_dir`` when given; ``owns_client``:
    the client (and its embedded cluster) is closed when the run ends."""

    def __init__(self, spec: Spec, client: Client, owns_client: bool, out_dir: Path | None) -> None:
        self.spec = spec
        self.live = LiveRun(spec)
        self._client, self._owns_client, self._out_dir = client, owns_client, out_dir
        self._thread = threading.Thread(target=self._drive, name=f"qcf-fit-{spec.name}", daemon=True)
        self._thread.start()

    def _drive(self) -> None:
        try:
            drive(self._client, self.live, self._out_dir)
        finally:
            if self._owns_client:
                from qcf_studio.app.cluster import close

                close(self._client)

    @property
    def status(self) -> str:
        """``starting``, ``running``, ``stopping``, then ``completed``, ``stopped`` or ``failed``."""
        return self.live.status

    @property
    def path(self) -> Path | None:
        """The results file, once saved (``None`` before, or when no ``out`` folder was given)."""
        return self.live.result_path

    def done(self) -> bool:
        """Whether the run has ended (its results are ready)."""
        return not self._thread.is_alive()

    def stop(self) -> None:
        """Ask the members to stop at their next check; they keep what they produced (status ``stopped``)."""
        self.live.stop()

    def view(self) -> RunWatch:
        """The run's progress, status and live plots (losses, accuracy, parameters, QCFs, observables), updated
        twice a second until it ends: a Panel object for a notebook cell (after ``pn.extension("tabulator")``)."""
        from qcf_studio.app.extras import require_extra

        require_extra("dashboard", "Fit.view()")
        from qcf_studio.app.dashboard.live_view import RunWatch

        return RunWatch(self.live)

    def result(self, timeout: float | None = None) -> xr.Dataset:
        """Wait until the run ends (at most ``timeout`` seconds: ``TimeoutError``) and return its results. Raises
        ``RuntimeError`` with the reason when the run produced none (its data could not be made, the cluster could
        not host it). An interrupt while waiting leaves the fit training: :meth:`stop` stops it."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self.spec.name}: still {self.status} after {timeout} s")
        ds = self.live.result
        if ds is None:
            raise RuntimeError(f"{self.spec.name}: {self.live.status}: {self.live.error}")
        return finished_results(ds, self.path, "", None)

    def __repr__(self) -> str:
        steps = f"step {self.live.done_steps:,} of {self.live.total_steps:,}"
        saved = f", saved as {self.path}" if self.path is not None else ""
        return f"<Fit {self.spec.name}: {self.status}, {steps}{saved}>"


def finished_results(ds: xr.Dataset, path: Path | None, problem: str, signal: int | None) -> xr.Dataset:
    """``ds`` with ``encoding["source"]`` set to the file it was saved as (xarray's convention), after warnings
    for what the caller should know: the run did not complete, it could not be saved where asked, a signal
    stopped it."""
    if path is not None:
        ds.encoding["source"] = str(path)
    name = ds.attrs.get("name", "the run")
    status = ds.attrs.get("status", "?")
    if signal is not None:
        warnings.warn(f"{name}: interrupted; the members stopped and kept what they produced", stacklevel=3)
    elif status != "completed":
        errors = ds.attrs.get("errors", "")
        warnings.warn(f"{name}: {status}{': ' + errors if errors else ''}", stacklevel=3)
    if problem:
        warnings.warn(problem, stacklevel=3)
    return ds
