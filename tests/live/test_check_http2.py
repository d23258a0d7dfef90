"""The auditor over HTTP/2 (``--http2``, ``--h2c``): the same checklist, plus what HTTP/2 adds.

Against a raw ``h2`` server (``tests/live_apps/h2_servers.py``) over cleartext with prior
knowledge and over TLS with ALPN, and through nginx with ``http2`` on, a self-signed
certificate and ``docs/nginx.conf.example`` as the docs ship it, in front of the example app.
"""

from __future__ import annotations

import collections.abc as cabc
import subprocess
import sys
import typing as t
from pathlib import Path

import pytest
from click.testing import CliRunner

from flask_ssecors.checker._check import check_stream
from flask_ssecors.checker._cli import check_command
from tests.live.test_nginx import CONFIG
from tests.live.test_nginx import documented_server
from tests.support.example_server import ExampleServer
from tests.support.servers import free_port
from tests.support.servers import LiveServer
from tests.support.servers import require_binary
from tests.support.servers import stop
from tests.support.servers import wait_for_port

ORIGIN = "https://app.example.com"
TIMEOUT = 2.0


class H2Server(LiveServer):
    """``tests/live_apps/h2_servers.py``: h2c, or TLS offering ``alpn``."""

    def __init__(self, tls: tuple[Path, Path] | None = None, alpn: str = "h2") -> None:
        super().__init__("tests.live_apps.h2_servers")
        self.tls, self.alpn = tls, alpn
        if tls is not None:
            self.url = f"https://{self.host}:{self.port}"

    def command(self) -> list[str]:
        tls = [str(self.tls[0]), str(self.tls[1]), self.alpn] if self.tls else []
        return [sys.executable, "-m", self.target, str(self.port), *tls]


@pytest.fixture(scope="module")
def h2c() -> t.Iterator[H2Server]:
    with H2Server() as server:
        yield server


def flagged(report: t.Any) -> list[tuple[str, str]]:
    return [(i.id, i.status) for i in report.items if i.status != "pass"]


@pytest.mark.live
def test_h2c_stream_passes_every_item_plus_http2(h2c: H2Server) -> None:
    url = f"{h2c.url}/good/events"
    report = check_stream(url, ORIGIN, credentials=True, timeout=TIMEOUT, http2=True)
    assert flagged(report) == []
    ids = [i.id for i in report.items]
    assert ids[0] == "http2" and "resume" in ids and "hop-by-hop" in ids
    assert report.items[0].detail == "HTTP/2: cleartext with prior knowledge (h2c)."
    status = next(i for i in report.items if i.id == "status")
    assert status.detail == '"HTTP/2 200".'


@pytest.mark.live
def test_connection_specific_headers_are_an_http2_protocol_error(h2c: H2Server) -> None:
    url = f"{h2c.url}/connection-header/events"
    report = check_stream(url, ORIGIN, credentials=True, timeout=TIMEOUT, http2=True)
    assert flagged(report) == [("hop-by-hop", "fail")]
    [item] = [i for i in report.items if i.id == "hop-by-hop"]
    assert '"connection: keep-alive"; "transfer-encoding: chunked"' in item.detail
    assert "net::ERR_HTTP2_PROTOCOL_ERROR" in item.detail


@pytest.mark.live
def test_tls_alpn_negotiates_h2(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with H2Server(tls=certificate) as server:
        report = check_stream(
            f"{server.url}/good/events", ORIGIN, credentials=True, timeout=TIMEOUT, http2=True
        )
    assert flagged(report) == []
    assert report.items[0].detail == "HTTP/2: ALPN chose h2."


@pytest.mark.live
def test_a_server_without_http2_fails_the_http2_item(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    with H2Server(tls=certificate, alpn="http/1.1") as server:
        result = CliRunner().invoke(
            check_command, [f"{server.url}/good/events", "--origin", ORIGIN, "--http2", "-q"]
        )
    assert result.exit_code == 1, result.output
    assert "  FAIL  http2: the TLS handshake chose http/1.1, not h2" in result.stdout


@pytest.mark.parametrize(
    ("url", "flag", "message"),
    [
        ("http://127.0.0.1:1/events", "--http2", "add --h2c"),
        ("https://127.0.0.1:1/events", "--h2c", "--h2c is for http:// URLs"),
    ],
)
def test_http2_flags_must_fit_the_scheme(url: str, flag: str, message: str) -> None:
    result = CliRunner().invoke(check_command, [url, "--origin", ORIGIN, flag])
    assert result.exit_code == 2
    assert message in result.output


# -- through nginx ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx_h2(
    certificate: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> cabc.Iterator[tuple[str, ExampleServer]]:
    """nginx with ``docs/nginx.conf.example``, its listen line made ``ssl http2``."""
    binary = require_binary("nginx")
    tmp = tmp_path_factory.mktemp("nginx-h2")
    app = ExampleServer(tmp / "gunicorn.log", env={"EXAMPLE_TICK_SECONDS": "0.3"}).start()
    port = free_port()
    server = documented_server(app.api_port, port).replace(
        f"listen 127.0.0.1:{port};",
        f"listen 127.0.0.1:{port} ssl http2;\n"
        f"    ssl_certificate {certificate[0]};\n"
        f"    ssl_certificate_key {certificate[1]};",
    )
    assert "ssl http2" in server
    conf = tmp / "nginx.conf"
    conf.write_text(CONFIG.format(tmp=tmp, servers=server))
    args = [binary, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
    process = subprocess.Popen(
        [*args, "-g", f"daemon off; pid {tmp}/nginx.pid;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"https://127.0.0.1:{port}", app
    finally:
        stop(process)
        app.stop()


@pytest.mark.live
@pytest.mark.nginx
def test_example_app_through_nginx_over_http2(
    nginx_h2: tuple[str, ExampleServer],
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every item passes over HTTP/2 but ``x-accel-buffering``, a warning: nginx consumes the
    header (and the timing items show it did not buffer)."""
    base, app = nginx_h2
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    report = check_stream(
        f"{base}/ticks", app.page_origin, credentials=True, timeout=5.0, http2=True
    )
    assert flagged(report) == [("x-accel-buffering", "warn")]
    items = {i.id: i for i in report.items}
    assert items["http2"].detail == "HTTP/2: ALPN chose h2."
    assert items["status"].detail == '"HTTP/2 200".'
    assert items["hop-by-hop"].detail == "no connection-specific header, as HTTP/2 requires."
    assert "the next event" in items["resume"].detail
