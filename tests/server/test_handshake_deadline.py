"""The protocol-run TLS handshake (both event loops) and the request-head deadline's parsing."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hypothesis import given
from hypothesis import strategies as st

from asgi_apim.certs.pki import issue_client, issue_server, make_ca
from asgi_apim.server.deadline import (
    DEFAULT_HEADER_TIMEOUT,
    HEADER_TIMEOUT_ENV,
    header_timeout_for,
    parse_header_timeout,
)
from asgi_apim.server.handshake import refusal_reason, start_handshake
from tests.server.tlspair import client_context, server_context


class Recorder(asyncio.Protocol):
    """An app protocol that hands the TLS transport's peer certificate to a future."""

    def __init__(self, context: ssl.SSLContext, made: asyncio.Future[Any]) -> None:
        self.context = context
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if transport.get_extra_info("sslcontext") is None:
            start_handshake(transport, self, self.context, 5.0)
            return
        self.made.set_result(transport.get_extra_info("ssl_object").getpeercert(binary_form=True))
        transport.close()


async def _exchange(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> bytes | None:
    loop = asyncio.get_running_loop()
    made: asyncio.Future[Any] = loop.create_future()
    server = await loop.create_server(lambda: Recorder(server_ctx, made), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="localhost")
        writer.write(b"x")
        try:
            await reader.read()
        except (ssl.SSLError, ConnectionError):
            pass
        writer.close()
        done, _ = await asyncio.wait([made], timeout=3)
        return made.result() if done else None
    finally:
        server.close()


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_the_handshake_reaches_the_app_or_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, loop_factory: Any
) -> None:
    ca, stranger_ca = make_ca("ca"), make_ca("stranger")
    server_ctx = server_context(tmp_path, issue_server(ca))
    server_ctx.load_verify_locations(cadata=ca.cert_pem().decode())
    client = issue_client(ca, "good")
    good = client_context(tmp_path, ca, client)
    bad = client_context(tmp_path, ca, issue_client(stranger_ca, "bad"), name="bad")

    def run(client_ctx: ssl.SSLContext) -> bytes | None:
        loop = loop_factory()
        try:
            return loop.run_until_complete(_exchange(server_ctx, client_ctx))
        finally:
            loop.close()

    with caplog.at_level(logging.INFO, "asgi_apim.tls"):
        assert run(good) == client.der()
        assert run(bad) is None
    lines = [r.getMessage() for r in caplog.records if r.name == "asgi_apim.tls"]
    assert len(lines) == 1 and lines[0].startswith("TLS handshake refused from 127.0.0.1:")
    assert "unable to get local issuer certificate" in lines[0]


def test_refusal_reasons() -> None:
    error = ssl.SSLError(1, "x")
    error.reason = "HTTP_REQUEST"  # type: ignore[misc]
    assert refusal_reason(error) == (logging.INFO, "plain HTTP sent to the TLS port")
    error.reason = "SOMETHING_NEW"  # type: ignore[misc]
    assert refusal_reason(error) == (logging.INFO, "something new")
    aborted = ConnectionAbortedError("SSL handshake is taking longer than 2.0 seconds: aborting the connection")
    assert refusal_reason(aborted) == (logging.INFO, "handshake not finished in time")
    assert refusal_reason(ConnectionResetError())[0] == logging.DEBUG


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_header_timeout_accepts_any_non_negative_number(seconds: float) -> None:
    parsed = parse_header_timeout(str(seconds))
    assert parsed == (seconds or None)


def _not_a_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return True
    return False


@given(
    st.one_of(
        st.floats(max_value=-1e-9).map(str),
        st.sampled_from(["nan", "inf", "-inf", ""]),
        st.text().filter(_not_a_number),
    )
)
def test_header_timeout_refuses_the_rest(value: str) -> None:
    with pytest.raises(ValueError):
        parse_header_timeout(value)


class _Config:
    def __init__(self, header_timeout: float | None) -> None:
        self.header_timeout = header_timeout


def test_header_timeout_comes_from_config_then_environment_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(HEADER_TIMEOUT_ENV, raising=False)
    assert header_timeout_for(object()) == DEFAULT_HEADER_TIMEOUT
    monkeypatch.setenv(HEADER_TIMEOUT_ENV, "3.5")
    assert header_timeout_for(object()) == 3.5
    assert header_timeout_for(_Config(7.0)) == 7.0
    assert header_timeout_for(_Config(0.0)) is None
    monkeypatch.setenv(HEADER_TIMEOUT_ENV, "soon")
    assert header_timeout_for(object()) == DEFAULT_HEADER_TIMEOUT
