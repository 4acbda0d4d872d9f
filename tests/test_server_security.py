"""An exposed or shared server: logins with hashed passwords, websockets only for logged-in pages of the
served origin, security headers, a cheap GET /, and rendezvous, gloo and the embedded cluster on loopback."""

from __future__ import annotations

import asyncio
import http.client
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
import torch.distributed as dist
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from qcf_studio.app.dashboard.auth import (
    CredentialsError,
    HashedPasswordProvider,
    read_credentials,
    set_user,
    verify_password,
)
from qcf_studio.app.dashboard.server import SECURITY_HEADERS, Access, _auth_options, websocket_origins
from qcf_studio.engine.run.parallel import GradientSharing, host_store

EXE = Path(sys.executable).parent / "qcf-studio"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(pid: int) -> dict[int, str]:
    """port -> address of the TCP sockets process ``pid`` listens on."""
    return {
        c.laddr.port: c.laddr.ip
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
    }


def test_serving_beyond_loopback_without_a_login_is_refused_before_anything_starts(tmp_path):
    start = time.perf_counter()
    r = subprocess.run(
        [str(EXE), "serve", "--address", "0.0.0.0", "--port", str(_free_port()), "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "without a login" in r.stderr and "--auth basic" in r.stderr
    assert time.perf_counter() - start < 20 and "starting Dask" not in r.stderr
    assert _auth_options(Access(insecure=True), "0.0.0.0") == {}
    assert _auth_options(Access(), "127.0.0.1") == {}
    with pytest.raises(ValueError, match="needs --credentials"):
        _auth_options(Access(auth="basic"), "0.0.0.0")
    with pytest.raises(ValueError, match="needs --oauth-provider"):
        _auth_options(Access(auth="oauth"), "0.0.0.0")
    oauth = _auth_options(Access(auth="oauth", oauth={"provider": "github", "key": "k", "secret": "s"}), "0.0.0.0")
    assert oauth["oauth_provider"] == "github" and oauth["oauth_secret"] == "s" and oauth["cookie_secret"]


def test_websocket_origins_are_those_of_the_served_address():
    assert websocket_origins("127.0.0.1", 5006) == ["localhost:5006", "127.0.0.1:5006"]
    assert websocket_origins("10.1.2.3", 80, ["proxy.lab:443"]) == ["10.1.2.3:80", "proxy.lab:443"]
    assert "localhost:5006" not in websocket_origins("0.0.0.0", 5006)


def test_credentials_hold_hashes_never_passwords(tmp_path):
    path = tmp_path / "users"
    set_user(path, "alice", "correct horse battery")
    set_user(path, "bob", "another long one")
    text = path.read_text()
    assert "correct horse" not in text and text.count("scrypt$") == 2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = read_credentials(path)
    assert verify_password("correct horse battery", users["alice"])
    assert not verify_password("correct horse batterY", users["alice"])
    provider = HashedPasswordProvider(users)
    assert provider.check("bob", "another long one") and not provider.check("carol", "another long one")
    path.write_text("alice:hunter2\n")  # a clear-text entry, as Panel's own basic_auth file has
    with pytest.raises(CredentialsError, match="line 1 is not") as err:
        read_credentials(path)
    assert "hunter2" not in str(err.value)
    with pytest.raises(CredentialsError, match="at least 8"):
        set_user(tmp_path / "other", "carol", "short")


@pytest.fixture
def auth_server(tmp_path):
    creds = tmp_path / "users"
    r = subprocess.run(
        [str(EXE), "credentials", str(creds), "--user", "alice", "--password-stdin"],
        input="correct horse battery\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    port = _free_port()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [
            str(EXE),
            "serve",
            "--port",
            str(port),
            "--workers",
            "1",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--auth",
            "basic",
            "--credentials",
            str(creds),
        ],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 90
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            time.sleep(0.5)
    yield port, proc
    proc.terminate()
    proc.wait(60)


def _request(port: int, method: str, path: str, body: str | None = None, cookie: str = ""):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Cookie": cookie} if cookie else {}
    if body is not None:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read().decode("utf-8", "replace"), response


def _ws(port: int, token: str, cookie: str = "", origin: str | None = None) -> list:
    """The first message the server sends on a Bokeh websocket opened with ``token`` (``[]``: none, closed)."""

    async def talk():
        headers = {"Origin": origin or f"http://127.0.0.1:{port}"}
        if cookie:
            headers["Cookie"] = cookie
        request = HTTPRequest(f"ws://127.0.0.1:{port}/ws", headers=headers)
        try:
            conn = await websocket_connect(request, subprotocols=["bokeh", token])
        except (HTTPClientError, OSError) as e:
            return [f"refused: {e}"]
        try:
            message = await asyncio.wait_for(conn.read_message(), 10)
        finally:
            conn.close()
        return [] if message is None else [message]

    out: list = []  # in a thread of its own: Playwright's tests leave an event loop running in this one
    thread = threading.Thread(target=lambda: out.extend(asyncio.run(talk())))
    thread.start()
    thread.join(60)
    return out


@pytest.mark.slow
def test_a_basic_auth_server_admits_only_logged_in_pages_and_websockets(auth_server):
    port, proc = auth_server
    status, headers, _, _ = _request(port, "GET", "/")
    assert status == 302 and "login" in headers["Location"]
    status, headers, page, _ = _request(port, "GET", "/login")
    assert status == 200 and "password" in page
    for name, value in SECURITY_HEADERS.items():
        assert headers.get(name) == value

    form = urllib.parse.urlencode({"username": "alice", "password": "wrong password"})
    status, headers, _, _ = _request(port, "POST", "/login", form)
    assert status == 302 and "error" in headers["Location"] and "user=" not in headers.get("Set-Cookie", "")
    start = time.perf_counter()
    form = urllib.parse.urlencode({"username": "alice", "password": "correct horse battery"})
    status, headers, _, response = _request(port, "POST", "/login", form)
    assert time.perf_counter() - start >= 0.9  # after a failure, the next try from that address waits
    cookies = [v.split(";")[0] for k, v in response.getheaders() if k == "Set-Cookie"]
    cookie = "; ".join(c for c in cookies if c.startswith(("user=", "id_token=")))
    assert status == 302 and "user=" in cookie

    status, headers, page, _ = _request(port, "GET", "/", cookie=cookie)
    assert status == 200 and headers["X-Frame-Options"] == "DENY"
    token = re.search(r'"token":\s*"([^"]+)"', page).group(1)

    assert _ws(port, token)[0] == "refused: HTTP 403: Forbidden"  # no login cookie: no session
    assert _ws(port, token, cookie, origin="http://evil.example")[0] == "refused: HTTP 403: Forbidden"
    (ack,) = _ws(port, token, cookie)  # the logged-in page's own websocket gets the server's first message
    assert not str(ack).startswith("refused")
    assert proc.poll() is None


def test_a_page_request_builds_a_placeholder_and_the_dashboard_waits_for_the_browser(tmp_path):
    import panel as pn
    from bokeh.document import Document
    from panel.io.state import set_curdoc

    from qcf_studio.app.dashboard.runs import RunManager
    from qcf_studio.app.dashboard.server import dashboard_page
    from qcf_studio.engine.spec import default_spec

    page = dashboard_page(RunManager(None, tmp_path / "runs", tmp_path), default_spec().to_yaml())
    doc = Document()
    pn.state._loaded[doc] = False  # a served session whose browser has not connected yet
    with set_curdoc(doc):
        page().server_doc(doc)
    before = len(doc.models)
    buttons = lambda: [m for m in doc.models if getattr(m, "label", None) == "Start"]  # noqa: E731
    assert before < 20 and not buttons()  # what a GET / builds (it used to be the whole page: ~1000 models)
    pn.state._on_load(doc)  # what the browser's connected websocket triggers
    assert len(doc.models) > 10 * before and len(buttons()) == 1


def test_the_rendezvous_store_and_gloo_listen_on_the_given_interface_only():
    store = host_store("127.0.0.1", 1, timeout=10)
    sharing = GradientSharing(dist.PrefixStore("t", store), 0, 1, timeout=10, host="127.0.0.1")
    listening = _listening(os.getpid())
    assert listening[store.port] == "127.0.0.1"  # a default TCPStore listens on every interface
    assert set(listening.values()) <= {"127.0.0.1"}, listening
    assert sharing.world_group.size() == 1
    default = dist.TCPStore("127.0.0.1", 0, 1, True, timedelta(seconds=10), wait_for_workers=False)
    assert _listening(os.getpid())[default.port] in ("0.0.0.0", "::")  # why host_store exists


def test_the_embedded_cluster_listens_on_loopback_only_and_admits_only_its_own_client(dask_client):
    address = dask_client.scheduler.address
    assert address.startswith("tls://127.0.0.1:")
    for worker, pid in dask_client.run(os.getpid).items():
        assert worker.startswith("tls://127.0.0.1:")
        assert set(_listening(pid).values()) <= {"127.0.0.1"}, _listening(pid)
    # Another user of this machine reaches loopback too; without the cluster's certificate they get no client.
    # Each attempt is its own process, as another user's would be (a refused Client can leave the loop of the
    # process that made it in a state a second one trips over).
    probe = (
        "import sys\nfrom distributed import Client\nclient = Client(sys.argv[1], timeout='5s')\n"
        "print('CONNECTED', client.submit(sum, [1, 2]).result())\n"
    )
    for attempt in (address, address.replace("tls://", "tcp://")):
        done = subprocess.run([sys.executable, "-c", probe, attempt], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "CONNECTED" not in done.stdout, (attempt, done.stdout[-500:])


def test_the_embedded_cluster_serves_other_users_of_loopback_no_dask_pages(dask_client):
    """Dask's HTTP servers speak no TLS: the embedded cluster's answer /health alone, not the info pages, JSON
    or proxy routes that would show its workers, tasks and logs to anyone on the machine."""
    import urllib.error
    import urllib.request

    info = dask_client.scheduler_info()
    ports = [info["services"]["dashboard"]] + [w["services"]["dashboard"] for w in info["workers"].values()]
    assert len(ports) == 1 + len(info["workers"])
    for port in ports:
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200
        for path in (
            "/info/main/workers.html",
            "/info/main/logs.html",
            "/json/identity.json",
            "/metrics",
            "/proxy/8786/127.0.0.1/status",
        ):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5)
            assert refused.value.code == 404, (port, path)


# --- a remote scheduler that requires TLS -------------------------------------------------------------------


def _certificates(d: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate (with key) for 127.0.0.1 signed by it, made with the openssl command."""

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=qcf-test-ca",
    )
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    ssl(
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    )
    return d / "ca.pem", d / "node.pem", d / "node.key"


@pytest.mark.slow
def test_a_run_on_a_remote_scheduler_that_requires_tls(tmp_path):
    from tests.test_writes_and_signals import _small

    if not shutil_which("openssl"):
        pytest.skip("no openssl command to make certificates with")
    ca, cert, key = _certificates(tmp_path)
    tls = ["--tls-ca-file", str(ca), "--tls-cert", str(cert), "--tls-key", str(key)]
    port = _free_port()
    dask_bin = Path(sys.executable).parent / "dask"
    procs = [
        subprocess.Popen(
            [
                str(dask_bin),
                "scheduler",
                "--protocol",
                "tls",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
                *tls,
            ],
            stderr=subprocess.DEVNULL,
        )
    ]
    address = f"tls://127.0.0.1:{port}"
    procs.append(
        subprocess.Popen(
            [str(dask_bin), "worker", address, "--nthreads", "1", "--no-dashboard", *tls, "--host", "127.0.0.1"],
            stderr=subprocess.DEVNULL,
        )
    )
    try:
        spec = tmp_path / "tiny.yaml"
        spec.write_text(_small())
        r = subprocess.run(
            [str(EXE), "run", str(spec), "--out", str(tmp_path / "runs"), "--scheduler", address, *tls],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-3000:]
        assert Path(r.stdout.strip().splitlines()[-1]).is_file()
        r = subprocess.run(
            [str(EXE), "run", str(spec), "--out", str(tmp_path / "runs2"), "--scheduler", address],
            capture_output=True,
            text=True,
            timeout=120,
        )  # without the certificates
        assert r.returncode == 2 and "needs --tls-ca-file" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "runs2").exists()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def test_a_websocket_closed_by_the_browser_is_not_reported_but_other_errors_are(caplog):
    """A tab closed while the server wrote a plot update to it left asyncio's "Task exception was never
    retrieved" traceback in the server's output; a real error in a task still is reported."""
    import gc

    from tornado.iostream import StreamClosedError
    from tornado.websocket import WebSocketClosedError

    from qcf_studio.app.dashboard.server import quiet_closed_sockets

    async def fails(error: Exception) -> None:
        raise error

    problems: list[BaseException] = []

    def serve_a_while() -> None:  # in a thread of its own, as another test may have left a loop running in this one
        loop = asyncio.new_event_loop()
        try:
            quiet_closed_sockets(loop)
            for error in (WebSocketClosedError(), StreamClosedError(), RuntimeError("a real bug")):
                task = loop.create_task(fails(error))
                loop.run_until_complete(asyncio.sleep(0.01))
                assert task.done()
                del task  # never retrieved: asyncio reports it when the task is collected
                gc.collect()
        except BaseException as e:  # noqa: BLE001 (raised again in the test's thread)
            problems.append(e)
        finally:
            loop.close()

    server = threading.Thread(target=serve_a_while)
    server.start()
    server.join(30)
    assert not server.is_alive() and not problems, problems
    reported = [r for r in caplog.records if r.name == "asyncio"]
    assert len(reported) == 1 and "never retrieved" in reported[0].getMessage()
    assert isinstance(reported[0].exc_info[1], RuntimeError)
