"""``qcf-studio serve``: the Dask client, the shared run manager and the Panel server, and what guards it.

- The server listens on loopback unless told otherwise; anywhere else it requires a login
  (``--auth basic --credentials FILE`` with hashed passwords, or Panel's OAuth providers) unless
  ``--insecure`` says the network is trusted. Checked before anything starts.
- Websocket connections are accepted only from pages of the served address (``--allow-origin`` adds one).
- Every HTTP response says it may not be framed by other sites and its type is not to be sniffed.
- ``GET /`` builds only the page template (header, sidebar, main area) with placeholders; the dashboard is
  built into them once the browser's websocket has connected, so requests that never open a page cost next to
  nothing.
- Every script, stylesheet and font of the page is served by this server (Bokeh's "server" resources, pinned
  here even if ``BOKEH_RESOURCES`` says ``cdn``): it works offline and tells no other site who opened it.
- SIGINT and SIGTERM stop the server, stop the run in progress at the members' next check and save it
  (``stopped``) before the process exits; the embedded workers ignore both signals (``qcf_studio.engine.run.cluster``).
- A browser tab closed while the server was writing to it is not reported as an error (Bokeh drops its
  session anyway); every other error on the server's event loop is, as before.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import panel as pn
from bokeh.settings import settings as bokeh_settings
from tornado.iostream import StreamClosedError
from tornado.web import OutputTransform
from tornado.websocket import WebSocketClosedError

from qcf_studio.app.cluster import close, connect
from qcf_studio.app.dashboard.runs import RunManager
from qcf_studio.app.dashboard.upload import MAX_UPLOAD_BYTES
from qcf_studio.engine.spec import Spec, default_spec

__all__ = [
    "serve",
    "Access",
    "dashboard_page",
    "is_loopback",
    "websocket_origins",
    "SECURITY_HEADERS",
    "quiet_closed_sockets",
]

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
AUTH_CHOICES = ("none", "basic", "oauth")


@dataclass
class Access:
    """Who may use the server: ``auth`` none | basic | oauth, the credentials file for basic, Panel's OAuth
    settings (``provider``, ``key``, ``secret``, ``redirect_uri``, ``extra_params``, ``encryption_key``),
    ``insecure`` to serve a non-loopback address without a login, and extra websocket origins."""

    auth: str = "none"
    credentials: Path | None = None
    oauth: dict[str, Any] = field(default_factory=dict)
    insecure: bool = False
    allow_origin: Sequence[str] = ()


def is_loopback(address: str) -> bool:
    """Whether ``address`` is reachable from this machine only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def websocket_origins(address: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """The ``host:port`` origins whose pages may open the dashboard's websocket: the served address (for
    a wildcard address, this machine's names), plus ``extra``."""
    if is_loopback(address):
        hosts = ["localhost", "127.0.0.1"]
    elif address in ("0.0.0.0", "::", ""):  # this machine's names, as other machines reach it
        hosts = [h for h in (socket.gethostname(), socket.getfqdn()) if not h.startswith("localhost")]
    else:  # Bokeh's origin list takes host names and IPv4 addresses; an IPv6 page needs --allow-origin
        hosts = [] if ":" in address else [address]
    return list(dict.fromkeys([f"{h}:{port}" for h in hosts] + list(extra)))


class SecurityHeaders(OutputTransform):
    """Adds :data:`SECURITY_HEADERS` to every HTTP response of the server (not overriding a handler's own)."""

    def transform_first_chunk(self, status_code, headers, chunk, finishing):  # type: ignore[override]
        for name, value in SECURITY_HEADERS.items():
            if name not in headers:
                headers[name] = value
        return status_code, headers, chunk


def _auth_options(access: Access, address: str) -> dict[str, Any]:
    """``pn.serve`` keyword arguments for ``access``; ``ValueError`` when the combination is unsafe or
    incomplete (checked before Dask or the server start)."""
    from qcf_studio.app.dashboard.auth import HashedPasswordProvider, read_credentials

    if access.auth not in AUTH_CHOICES:
        raise ValueError(f"--auth: choose one of {', '.join(AUTH_CHOICES)}")
    if access.auth == "none":
        if not is_loopback(address) and not access.insecure:
            raise ValueError(
                f"--address {address}: the dashboard would be open to the network without a login; "
                f"use --auth basic --credentials FILE (or --auth oauth), or --insecure on a network "
                f"you trust"
            )
        return {}
    cookie_secret = os.environ.get("QCF_STUDIO_COOKIE_SECRET") or secrets.token_urlsafe(32)
    if access.auth == "basic":
        if access.credentials is None:
            raise ValueError(
                "--auth basic needs --credentials FILE (make one with `qcf-studio credentials FILE --user NAME`)"
            )
        provider = HashedPasswordProvider(read_credentials(access.credentials))
        return {"auth_provider": provider, "cookie_secret": cookie_secret}
    oauth = {k: v for k, v in access.oauth.items() if v}
    if not oauth.get("provider"):
        raise ValueError(
            "--auth oauth needs --oauth-provider (one of Panel's: github, google, azure, okta, "
            "auth0, gitlab, generic, ...)"
        )
    options = {f"oauth_{k}": v for k, v in oauth.items()}
    return {**options, "cookie_secret": cookie_secret}


def dashboard_page(manager: RunManager, spec_text: str) -> Callable[[], pn.template.BaseTemplate]:
    """The function that makes each session's page: the page template (:func:`qcf_studio.layouts.page.page_template`)
    with placeholders in its header, sidebar and main area, filled with the dashboard once the browser's
    websocket has connected. Building the dashboard costs about a second of CPU; a request that never opens
    the page (a script, a scanner) costs only the template and its placeholders."""
    from qcf_studio.app.dashboard.page import Dashboard  # imported once, here: holoviews' extension and the page's code
    from qcf_studio.layouts.page import page_template

    def page() -> pn.template.BaseTemplate:
        # The page's JavaScript is chosen now, before the dashboard exists: the tables need Tabulator's.
        pn.extension("tabulator")
        header = pn.Row(css_classes=["header-holder"])
        sidebar = pn.Column(
            pn.pane.Markdown("Loading the dashboard ..."), sizing_mode="stretch_width", css_classes=["sidebar-holder"]
        )
        main = pn.Column(sizing_mode="stretch_width", css_classes=["dashboard-holder"])

        def build() -> None:
            dash = Dashboard(manager, spec_text)
            pn.state.on_session_destroyed(lambda ctx: dash.dispose())
            header[:] = dash.header()
            sidebar[:] = [dash.sidebar()]
            main[:] = [dash.main()]

        pn.state.onload(build)
        return page_template(header=[header], sidebar=[sidebar], main=[main])

    return page


def serve(
    port: int = 5006,
    address: str = "127.0.0.1",
    scheduler: str | None = None,
    workers: int = 2,
    runs_dir: Path = Path("runs"),
    spec: Spec | None = None,
    show: bool = False,
    data_dir: Path = Path("sample_data"),
    access: Access | None = None,
    security: Any = None,
) -> int:
    """Serve the dashboard until SIGINT or SIGTERM; every browser session shares one cluster and run manager.

    Raises ``ValueError`` (before anything starts) when ``access`` does not allow ``address``.
    """
    access = access or Access()
    auth = _auth_options(access, address)
    origins = websocket_origins(address, port, access.allow_origin)
    spec = spec or default_spec()
    spec_text = spec.to_yaml()
    print(f"qcf-studio: starting Dask ({scheduler or f'LocalCluster, {workers} workers'}) ...", file=sys.stderr)
    client = connect(scheduler, workers, security=security)
    manager = RunManager(client, runs_dir, data_dir)
    print(f"qcf-studio: Dask dashboard-less cluster ready: {client.scheduler_info()['address']}", file=sys.stderr)

    page = dashboard_page(manager, spec_text)
    bokeh_settings.resources.set_value("server")  # from this server, never a CDN: offline, and private
    login = f" (login: {access.auth})" if access.auth != "none" else ""
    print(
        f"qcf-studio: dashboard on http://{address}:{port}{login}  (runs saved in {runs_dir.resolve()})",
        file=sys.stderr,
    )
    server = pn.serve(
        {"/": page},
        port=port,
        address=address,
        show=show,
        title="qcf-studio",
        start=False,
        websocket_origin=origins,
        threaded=False,
        print_url=False,
        websocket_max_message_size=MAX_UPLOAD_BYTES + 2**20,
        **auth,
    )  # uploads of measured data
    server._tornado.transforms.append(SecurityHeaders)

    def stop(signum: int, frame: Any) -> None:
        print(f"qcf-studio: {signal.Signals(signum).name}: stopping the server", file=sys.stderr, flush=True)
        for s in (signal.SIGINT, signal.SIGTERM):  # a second signal must not interrupt the saving below
            signal.signal(s, lambda *_: print("qcf-studio: saving the run first", file=sys.stderr, flush=True))
        server.io_loop.asyncio_loop.call_soon_threadsafe(server.io_loop.stop)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    quiet_closed_sockets(server.io_loop.asyncio_loop)
    try:
        server.start()
        server.io_loop.start()
    finally:
        _shut_down(manager, client)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def quiet_closed_sockets(loop: asyncio.AbstractEventLoop) -> None:
    """Drop asyncio's "Task exception was never retrieved" traceback for a write to a websocket the browser has
    closed (a tab closed or reloaded while a plot update was on its way); other errors reach the loop's
    default handler."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not isinstance(context.get("exception"), (WebSocketClosedError, StreamClosedError)):
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def _shut_down(manager: RunManager, client: Any) -> None:
    """Stop and save the run in progress, stop the campaign in progress (its finished fits and summary are
    kept), then close the cluster."""
    from qcf_studio.app.dashboard.campaigns import shared_campaigns

    if shared_campaigns(manager).busy:
        print("qcf-studio: stopping the campaign in progress (finished fits are kept) ...", file=sys.stderr)
    shared_campaigns(manager).shutdown()
    busy = manager.busy
    if busy:
        print("qcf-studio: stopping the run in progress and saving what the members have ...", file=sys.stderr)
    run = manager.shutdown()
    if busy and run is not None and run.result_path is not None:
        print(f"qcf-studio: run saved: {run.result_path}", file=sys.stderr)
    elif busy and run is not None and run.error:
        print(f"qcf-studio: {run.error.splitlines()[-1]}", file=sys.stderr)
    close(client)
