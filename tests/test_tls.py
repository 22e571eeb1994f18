"""Serving over TLS: ``https://`` and ``wss://`` on one port, with a certificate made at
test time (trustme), over real loopback sockets; and the startup errors for files that
cannot be used."""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import h11
import pytest
import trio
import trio_websocket
import trustme

import trio_things.client as ttc
from tests.helpers.servers import demo_server, serve_on_loopback
from trio_things.config import ConfigError, ServerConfig, TlsConfig, load_config
from trio_things.protocol.dialects import SUBPROTOCOL
from trio_things.server import ThingServer


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> TlsConfig:
    issued = ca.issue_cert("127.0.0.1", "localhost")
    certificate, key = tmp_path / "server.pem", tmp_path / "server.key"
    issued.private_key_pem.write_to_path(str(key))
    certificate.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    return TlsConfig(certificate=certificate, key=key)


@pytest.fixture
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def port(tls_files: TlsConfig) -> AsyncIterator[int]:
    server = demo_server(port=0, tls=tls_files)
    with trio.fail_after(20):
        async with serve_on_loopback(server) as served:
            yield served.port


async def https_get(port: int, path: str, context: ssl.SSLContext) -> tuple[int, bytes]:
    """One GET over TLS, read with an h11 client."""
    stream = await trio.open_ssl_over_tcp_stream("127.0.0.1", port, ssl_context=context,
                                                 https_compatible=True)
    async with stream:
        client = h11.Connection(h11.CLIENT)
        await stream.send_all(client.send(h11.Request(
            method="GET", target=path, headers=[("host", f"127.0.0.1:{port}")])))
        await stream.send_all(client.send(h11.EndOfMessage()) or b"")
        status, body = 0, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(bytes(await stream.receive_some()))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body


async def test_the_td_is_served_over_https_with_https_and_wss_forms(
        port: int, client_context: ssl.SSLContext) -> None:
    with trio.fail_after(10):
        status, body = await https_get(port, "/counter/", client_context)
    assert status == 200
    td = json.loads(body)
    base = f"https://127.0.0.1:{port}/"
    assert td["base"] == base
    hrefs = [form["href"] for affordance in td["properties"].values()
             for form in affordance["forms"]]
    assert f"wss://127.0.0.1:{port}/counter/ws" in hrefs
    assert not any(href.startswith(("http:", "ws:")) for href in hrefs)


async def test_a_property_is_observed_over_wss(port: int,
                                               client_context: ssl.SSLContext) -> None:
    with trio.fail_after(10):
        async with trio_websocket.open_websocket(
                "127.0.0.1", port, "/counter/ws", use_ssl=client_context,
                subprotocols=[SUBPROTOCOL]) as ws:
            await ws.send_message(json.dumps({
                "messageID": "1", "messageType": "request", "operation": "observeproperty",
                "name": "count"}))
            replies = [json.loads(await ws.get_message()) for _ in range(2)]
    assert replies[0]["messageType"] == "response"
    assert replies[1]["messageType"] == "notification"
    assert replies[1]["value"] == 0
    assert replies[1]["thingID"].startswith("urn:")


async def test_the_client_reads_and_writes_over_https(
        port: int, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``trio_things.client`` trusts the system's authorities; the test's CA is made
    one through ``SSL_CERT_FILE``, which OpenSSL's default paths honour."""
    authority = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(authority))
    monkeypatch.setenv("SSL_CERT_FILE", str(authority))
    with trio.fail_after(10):
        async with ttc.connect(f"https://127.0.0.1:{port}/counter/") as counter:
            await counter.write("count", 7)
            assert await counter.read("count") == 7


async def test_a_plain_http_client_is_closed_and_others_are_served(
        port: int, client_context: ssl.SSLContext) -> None:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /counter/ HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            while chunk := await stream.receive_some():
                received += chunk
        assert not received.startswith(b"HTTP/")  # no answer in clear text
        status, _ = await https_get(port, "/counter/count", client_context)
    assert status == 200


def test_the_scheme_follows_the_tls_table(tls_files: TlsConfig) -> None:
    assert ThingServer(ServerConfig()).scheme == "http"
    assert ThingServer(ServerConfig(tls=tls_files)).scheme == "https"


# --------------------------------------------------------------------------- startup


def test_an_unreadable_certificate_is_a_one_line_startup_error(
        tls_files: TlsConfig, tmp_path: Path) -> None:
    missing = TlsConfig(certificate=tmp_path / "nope.pem", key=tls_files.key)
    with pytest.raises(ConfigError) as info:
        ThingServer(ServerConfig(tls=missing))
    assert str(info.value) == (f"[server.tls]: cannot read the certificate "
                               f"{str(tmp_path / 'nope.pem')!r}: No such file or directory")


def test_a_key_of_another_certificate_is_refused(ca: trustme.CA, tls_files: TlsConfig,
                                                 tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    ca.issue_cert("example.org").private_key_pem.write_to_path(str(other))
    with pytest.raises(ConfigError, match=r"\[server\.tls\]: the key does not belong to the "
                                          r"certificate \(certificate '.*server\.pem', key "
                                          r"'.*other\.key'\)"):
        ThingServer(ServerConfig(tls=TlsConfig(certificate=tls_files.certificate, key=other)))


def test_a_file_that_is_not_pem_is_refused(tls_files: TlsConfig, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"\[server\.tls\]: the certificate or the key is "
                                          r"not valid PEM"):
        ThingServer(ServerConfig(tls=TlsConfig(certificate=garbage, key=tls_files.key)))


def test_tls_paths_in_toml_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "things.toml"
    path.write_text('[server.tls]\ncertificate = "certs/server.pem"\nkey = "/abs/server.key"\n')
    config = load_config(path)
    assert config.tls == TlsConfig(certificate=tmp_path / "conf" / "certs" / "server.pem",
                                   key=Path("/abs/server.key"))


@pytest.mark.parametrize(("text", "message"), [
    ('[server.tls]\ncertificate = "a.pem"\n', '[server.tls]: needs certificate = "cert.pem" '
                                              'and key = "key.pem"'),
    ('[server.tls]\ncert = "a.pem"\nkey = "k"\n',
     "[server.tls]: unknown key 'cert' (did you mean 'certificate'?)"),
])
def test_tls_table_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "things.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)


def test_serve_from_the_command_line_over_https(
        tls_files: TlsConfig, client_context: ssl.SSLContext, tmp_path: Path) -> None:
    """``trio-things serve things.toml`` with a ``[server.tls]`` table: it announces
    https URLs, answers over TLS, and still ends cleanly on Ctrl-C."""
    config = tmp_path / "things.toml"
    config.write_text(f'[server.tls]\ncertificate = "{tls_files.certificate.name}"\n'
                      f'key = "{tls_files.key.name}"\n'
                      '[things.counter]\nclass = "trio_things.demo:Counter"\n')
    process = subprocess.Popen([sys.executable, "-m", "trio_things.cli", "serve", str(config),
                                "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # blocks until the server listens (or dies)
        assert first.startswith("trio-things: serving 1 Thing(s) at https://127.0.0.1:"), first

        port = int(first.rsplit(":", 1)[1].strip(" /\n"))

        async def get_td() -> tuple[int, bytes]:
            with trio.fail_after(10):
                return await https_get(port, "/counter/", client_context)

        status, body = trio.run(get_td)
        assert status == 200
        assert json.loads(body)["base"] == f"https://127.0.0.1:{port}/"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
