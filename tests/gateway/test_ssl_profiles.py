"""SSL profiles over real TLS: a Python ``ssl`` server on loopback that requires a client certificate,
certificates made with the openssl command line, profiles swapped and broken at run time."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jks
import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from asgi_apim.config import parse_config
from asgi_apim.errors import ConfigError, TruststoreError
from asgi_apim.gateway.ssl_profiles import SSLProfile, SSLProfiles, server_key
from asgi_apim.gateway.upstream import ConnectFailed, ConnectionClosed, UpstreamPool, UpstreamRequest
from asgi_apim.secrets.keys import Keyring, generate_key, parse_key
from tests.gateway import openssl_pki as pki
from tests.gateway.servers import Counted, raw_server, read_head

PASSWORD = "s3cret-pass"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("openssl")
    for ca in ("ca1", "ca2"):
        pki.make_ca(d, ca)
    pki.issue(d, "ca1", "server1")
    pki.issue(d, "ca2", "server2")
    pki.issue(d, "ca1", "named", san="DNS:backend.internal")  # no IP: fails hostname verification on 127.0.0.1
    pki.issue(d, "ca1", "client1", client=True)
    pki.issue(d, "ca2", "client2", client=True)
    pki.encrypt_key(d, "client1", PASSWORD)
    pki.pkcs12(d, "client2", PASSWORD, ca="ca2")
    pki.trust_pkcs12(d, "ca1", PASSWORD)
    store = jks.KeyStore.new("jks", [jks.TrustedCertEntry.new("ca1", _der(d / "ca1.pem"))])
    store.save(str(d / "ca1.jks"), PASSWORD)
    return d


def _der(path: Path) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)


def server_context(certs: Path, server: str = "server1") -> ssl.SSLContext:
    """Requires a client certificate issued by ca1 or ca2."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs / f"{server}.pem", certs / f"{server}.key")
    ctx.load_verify_locations(certs / "ca1.pem")
    ctx.load_verify_locations(certs / "ca2.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def who(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers each request with the common name of the client certificate."""
    peer: Any = writer.get_extra_info("peercert")
    name = dict(x[0] for x in peer["subject"])["commonName"].encode()
    while True:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(name), name))
        await writer.drain()


async def ask(srv: Counted, source: Callable[[], tuple[ssl.SSLContext | None, object]]) -> bytes:
    pool = UpstreamPool(srv.origin("https"), ssl_context=source)
    try:
        resp = await pool.request(UpstreamRequest("GET", b"/", [(b"host", b"backend")], None, None))
        return await resp.read()
    finally:
        await pool.aclose()


def profile(**kw: Any) -> SSLProfile:
    return SSLProfile("ssl_profiles[0]", **kw)


@pytest.mark.parametrize("ca", ["ca1.pem", "ca1-trust.p12", "ca1.jks"])
async def test_mutual_tls_with_a_pem_client_certificate_and_an_encrypted_key(certs: Path, ca: str) -> None:
    p = profile(
        ca=certs / ca,
        ca_password=None if ca.endswith(".pem") else PASSWORD,
        certificate=certs / "client1.pem",
        key_file=certs / "client1.enc.key",
        key_password=PASSWORD,
    )
    async with raw_server(who, ssl_context=server_context(certs)) as srv:
        assert await ask(srv, p) == b"client1"


async def test_mutual_tls_with_a_pkcs12_client_certificate(certs: Path) -> None:
    p = profile(ca=certs / "ca2.pem", certificate=certs / "client2.p12", key_password=PASSWORD)
    async with raw_server(who, ssl_context=server_context(certs, "server2")) as srv:
        assert await ask(srv, p) == b"client2"


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_no_client_certificate_is_refused_by_the_backend(certs: Path, version: ssl.TLSVersion) -> None:
    server = server_context(certs)
    server.maximum_version = version
    async with raw_server(who, ssl_context=server) as srv:
        # TLS 1.2 refuses in the handshake; TLS 1.3 after it, by an alert and a close before any response
        with pytest.raises(ConnectFailed if version == ssl.TLSVersion.TLSv1_2 else (ConnectFailed, ConnectionClosed)):
            await ask(srv, profile(ca=certs / "ca1.pem"))


async def test_a_backend_certificate_from_another_ca_is_refused(certs: Path) -> None:
    p = profile(ca=certs / "ca2.pem", certificate=certs / "client1.pem", key_file=certs / "client1.key")
    async with raw_server(who, ssl_context=server_context(certs)) as srv:
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await ask(srv, p)


async def test_hostname_verification_is_on_unless_turned_off(certs: Path) -> None:
    kw: dict[str, Any] = dict(ca=certs / "ca1.pem", certificate=certs / "client1.pem", key_file=certs / "client1.key")
    async with raw_server(who, ssl_context=server_context(certs, "named")) as srv:
        with pytest.raises(ConnectFailed, match="match|mismatch"):
            await ask(srv, profile(**kw))
        assert await ask(srv, profile(**kw, hostname_verification=False)) == b"client1"


async def test_the_system_cas_verify_backends_without_a_profile(certs: Path) -> None:
    cfg = parse_config({}, base=certs)
    source = SSLProfiles(cfg).context_for("127.0.0.1", 1)
    ctx, _ = source()
    assert ctx is not None and ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.check_hostname
    async with raw_server(who, ssl_context=server_context(certs)) as srv:
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):
            await ask(srv, source)


async def test_the_default_bundle_verifies_backends_without_a_profile(certs: Path, tmp_path: Path) -> None:
    server = server_context(certs)
    server.verify_mode = ssl.CERT_NONE  # one-way TLS

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        await writer.drain()

    bundle = tmp_path / "bundle.p12"
    shutil.copy(certs / "ca1-trust.p12", bundle)
    raw = {"gateway": {"ca_bundle": str(bundle), "ca_bundle_password": PASSWORD, "ca_bundle_reload_interval": 0}}
    profiles = SSLProfiles(parse_config(raw, base=tmp_path))
    async with raw_server(hello, ssl_context=server) as srv:
        assert await ask(srv, profiles.context_for("127.0.0.1", srv.port)) == b"hello"
        assert profiles.context_for("localhost", 1) is profiles.default


async def test_an_https_origin_is_never_reached_in_clear(certs: Path) -> None:
    async with raw_server(who, ssl_context=server_context(certs)) as srv:
        with pytest.raises(ConnectFailed, match="CERTIFICATE_VERIFY_FAILED"):  # the system's CAs, not plain TCP
            await ask(srv, lambda: (None, 0))


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
async def test_tls_below_1_2_is_refused(certs: Path) -> None:
    server = server_context(certs)
    server.minimum_version = ssl.TLSVersion.TLSv1
    server.maximum_version = ssl.TLSVersion.TLSv1_1
    p = profile(ca=certs / "ca1.pem", certificate=certs / "client1.pem", key_file=certs / "client1.key")
    async with raw_server(who, ssl_context=server) as srv:
        with pytest.raises(ConnectFailed):
            await ask(srv, p)


def _config(certs: Path, work: Path, port: int, **extra: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "servers": [f"127.0.0.1:{port}", "[::1]:9443"],
        "ca": "ca.pem",
        "certificate": "client.pem",
        "key": "client.key",
        "reload_interval": 0.1,
    }
    entry.update(extra)
    return {"ssl_profiles": [entry], "gateway": {"ca_bundle": str(certs / "ca1.pem")}}


def _install(certs: Path, work: Path, ca: str, client: str) -> None:
    shutil.copy(certs / f"{ca}.pem", work / "ca.pem")
    shutil.copy(certs / f"{client}.pem", work / "client.pem")
    shutil.copy(certs / f"{client}.key", work / "client.key")


async def test_a_profile_swapped_at_run_time_is_used_by_the_next_request(
    certs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "asgi_apim.gateway.ssl_profiles")
    _install(certs, tmp_path, "ca1", "client1")
    server = server_context(certs)
    async with raw_server(who, ssl_context=server) as srv:
        profiles = SSLProfiles(parse_config(_config(certs, tmp_path, srv.port), base=tmp_path))
        source = profiles.context_for("127.0.0.1", srv.port)
        assert profiles.context_for("::1", 9443) is source and profiles.context_for("127.0.0.1", 1) is not source
        pool = UpstreamPool(srv.origin("https"), ssl_context=source)
        runner = asyncio.ensure_future(profiles.run())
        try:
            for _ in range(2):
                assert await (await pool.request(_get())).read() == b"client1"
            assert srv.connections == 1
            server.load_cert_chain(certs / "server2.pem", certs / "server2.key")  # the backend moves to ca2
            _install(certs, tmp_path, "ca2", "client2")  # and so does its profile
            await _until(lambda: source()[1] == 2)
            assert await (await pool.request(_get())).read() == b"client2"
            assert srv.connections == 2  # the idle connection of the old profile was not used
            assert "SSL profile ssl_profiles[0] reloaded: generation 2" in caplog.text
        finally:
            runner.cancel()
            await pool.aclose()


async def test_a_broken_file_keeps_the_last_good_profile(
    certs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "asgi_apim.gateway.ssl_profiles")
    _install(certs, tmp_path, "ca1", "client1")
    async with raw_server(who, ssl_context=server_context(certs)) as srv:
        profiles = SSLProfiles(parse_config(_config(certs, tmp_path, srv.port), base=tmp_path))
        source = profiles.context_for("127.0.0.1", srv.port)
        (tmp_path / "client.key").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
        assert profiles.check() is False
        assert profiles.check() is False  # the same broken file: logged once
        assert caplog.text.count("reload failed, generation 1 keeps serving") == 1
        assert await ask(srv, source) == b"client1"  # a new connection, under the last good context
        (tmp_path / "ca.pem").unlink()
        assert profiles.check() is False and "cannot be read" in caplog.text
        _install(certs, tmp_path, "ca1", "client1")
        assert profiles.check() is False  # the same contents as the good generation
        assert "files readable again, generation 1 serving" in caplog.text
        shutil.copy(certs / "client2.pem", tmp_path / "client.pem")  # a key that is not the certificate's
        assert profiles.check() is False and "does not match" in caplog.text
        shutil.copy(certs / "client2.key", tmp_path / "client.key")
        assert profiles.check() is True and source()[1] == 2
        assert await ask(srv, source) == b"client2"


async def test_a_reload_is_checked_when_asked_for_once_due(certs: Path, tmp_path: Path) -> None:
    _install(certs, tmp_path, "ca1", "client1")
    p = profile(
        ca=tmp_path / "ca.pem",
        certificate=tmp_path / "client.pem",
        key_file=tmp_path / "client.key",
        reload_interval=0.05,
    )
    _install(certs, tmp_path, "ca2", "client2")
    await asyncio.sleep(0.1)
    assert p()[1] == 1  # due: a check starts in a worker thread, this request keeps the current context
    await _until(lambda: p()[1] == 2)


async def test_an_encrypted_key_password_opens_a_pkcs12_client_certificate(certs: Path, tmp_path: Path) -> None:
    key = generate_key()
    sealed = Keyring(parse_key(key)).encrypt(PASSWORD)
    raw = {
        "encryption": {"key": key},
        "ssl_profiles": [
            {"servers": ["127.0.0.1:1"], "ca": str(certs / "ca2.pem"), "certificate": str(certs / "client2.p12")}
        ],
    }
    raw["ssl_profiles"][0]["key_password"] = sealed
    async with raw_server(who, ssl_context=server_context(certs, "server2")) as srv:
        raw["ssl_profiles"][0]["servers"] = [f"127.0.0.1:{srv.port}"]
        cfg = parse_config(raw, base=tmp_path)
        assert cfg.ssl_profiles[0].key_password == PASSWORD and PASSWORD not in repr(cfg.ssl_profiles[0])
        assert await ask(srv, SSLProfiles(cfg).context_for("127.0.0.1", srv.port)) == b"client2"


def test_a_broken_profile_at_start_up_is_fatal(certs: Path, tmp_path: Path) -> None:
    _install(certs, tmp_path, "ca1", "client1")
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(TruststoreError, match=r"ssl_profiles\[0\]: .*ca.pem"):
        SSLProfiles(parse_config(_config(certs, tmp_path, 8443), base=tmp_path))
    _install(certs, tmp_path, "ca1", "client1")
    with pytest.raises(TruststoreError, match="key_password"):
        SSLProfile("p", ca=None, certificate=certs / "client1.pem", key_file=certs / "client1.enc.key")


def test_hostname_verification_off_is_logged_at_start_up(
    certs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _install(certs, tmp_path, "ca1", "client1")
    SSLProfiles(parse_config(_config(certs, tmp_path, 8443, hostname_verification=False), base=tmp_path))  # type: ignore[arg-type]
    assert "hostname verification is off for 127.0.0.1:8443" in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_server_keys_are_normalised() -> None:
    assert server_key("[::1]", 443) == "::1:443"
    assert server_key("Backend.Example", 8443) == "backend.example:8443"
    assert server_key("0:0::1", 1) == "::1:1"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"servers": []}, "servers: must list at least one"),
        ({"servers": ["backend"]}, r"servers\[0\]: 'backend' is not host:port"),
        ({"servers": ["backend:0"]}, "is not host:port"),
        ({"servers": ["b:1"], "certificate": "c.pem"}, "key: is required with a PEM certificate"),
        ({"servers": ["b:1"], "key": "c.key"}, "key: needs a PEM certificate"),
        ({"servers": ["b:1"], "certificate": "c.p12", "key": "c.key"}, "key: needs a PEM certificate"),
        ({"servers": ["b:1"], "key_password": "x"}, "key_password: is set but there is no certificate"),
        ({"servers": ["b:1"], "ca_password": "x"}, "ca_password: is set but there is no ca"),
        ({"servers": ["b:1"], "hostname_verification": "no"}, "hostname_verification: must be true or false"),
        ({"servers": ["b:1"], "reload_interval": -1}, "reload_interval: must be a number"),
        ({"servers": ["b:1"], "truststore": "x"}, "unknown"),
    ],
)
def test_profile_configuration_errors_name_the_key(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"ssl_profiles": [entry]}, base=tmp_path)


def test_a_server_in_two_profiles_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ssl_profiles\[1\].servers: b:1 is already in ssl_profiles\[0\]"):
        parse_config({"ssl_profiles": [{"servers": ["B:1"]}, {"servers": ["b:1"]}]}, base=tmp_path)


def test_gateway_ca_bundle_configuration(tmp_path: Path) -> None:
    cfg = parse_config({"gateway": {"ca_bundle": "b.p12", "ca_bundle_password": "x"}}, base=tmp_path)
    assert cfg.gateway_tls.ca_bundle == tmp_path / "b.p12" and cfg.gateway_tls.ca_bundle_password == "x"
    with pytest.raises(ConfigError, match="gateway.ca_bundle_password: is set but there is no ca_bundle"):
        parse_config({"gateway": {"ca_bundle_password": "x"}}, base=tmp_path)
    with pytest.raises(ConfigError, match="unknown"):
        parse_config({"gateway": {"cabundle": "x"}}, base=tmp_path)


def _get() -> UpstreamRequest:
    return UpstreamRequest("GET", b"/", [(b"host", b"backend")], None, None)


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


HOSTS = st.one_of(
    st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a.exploded}]"),
)


@given(host=HOSTS, port=st.integers(1, 65535), upper=st.booleans())
def test_a_server_address_reaches_its_profile_however_written(host: str, port: int, upper: bool) -> None:
    written = f"{host.upper() if upper else host}:{port}"
    cfg = parse_config({"ssl_profiles": [{"servers": [written]}]}, base=Path("/"))
    profiles = SSLProfiles(cfg)
    bare = host.strip("[]")
    assert profiles.context_for(bare, port) is profiles.profiles[0]
    assert profiles.context_for(bare, port % 65535 + 1) is profiles.default


@given(text=st.text(max_size=30))
def test_any_server_text_is_a_host_port_or_a_configuration_error(text: str) -> None:
    try:
        cfg = parse_config({"ssl_profiles": [{"servers": [text]}]}, base=Path("/"))
    except ConfigError as exc:
        assert "ssl_profiles[0].servers[0]" in str(exc)
        return
    host, _, port = cfg.ssl_profiles[0].servers[0].rpartition(":")
    assert host and 0 < int(port) < 65536 and not set(host) & set("/[]@ ")
