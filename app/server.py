"""``qcf-studio serve``: the Dask client, the shared run manager and the Panel server."""

from __future__ import annotations

import sys
from pathlib import Path

import panel as pn

from app.cluster import close, connect
from app.runs import RunManager
from app.upload import MAX_UPLOAD_BYTES
from engine.spec import Spec, default_spec

__all__ = ["serve"]


def serve(
    port: int = 5006,
    address: str = "127.0.0.1",
    scheduler: str | None = None,
    workers: int = 2,
    runs_dir: Path = Path("runs"),
    spec: Spec | None = None,
    show: bool = False,
    data_dir: Path = Path("sample_data"),
) -> int:
    """Serve the dashboard until interrupted; every browser session shares one cluster and run manager."""
    spec = spec or default_spec()
    spec_text = spec.to_yaml()
    print(f"qcf-studio: starting Dask ({scheduler or f'LocalCluster, {workers} workers'}) ...", file=sys.stderr)
    client = connect(scheduler, workers)
    manager = RunManager(client, runs_dir, data_dir)
    print(f"qcf-studio: Dask dashboard-less cluster ready: {client.scheduler_info()['address']}", file=sys.stderr)

    def page() -> pn.viewable.Viewable:
        from app.dashboard import Dashboard

        dash = Dashboard(manager, spec_text)
        pn.state.on_session_destroyed(lambda ctx: dash.dispose())
        return dash.__panel__()

    origins = [f"{address}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    print(f"qcf-studio: dashboard on http://{address}:{port}  (runs saved in {runs_dir.resolve()})", file=sys.stderr)
    try:
        pn.serve({"/": page}, port=port, address=address, show=show, title="qcf-studio",
                 websocket_origin=origins, threaded=False, print_url=False,
                 websocket_max_message_size=MAX_UPLOAD_BYTES + 2**20)  # uploads of measured data
    except KeyboardInterrupt:
        pass
    finally:
        manager.stop()
        close(client)
    return 0
