from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from asgi_apim.certs.pki import Issued, issue_client, issue_server, make_ca
from asgi_apim.config import ApiConfig, Config, ResourceConfig, SecurityConfig
from asgi_apim.server import tls
from asgi_apim.server.configs import forget_configs
from asgi_apim.server.protocols import tls_info
from asgi_apim.server.tls import LiveTrust, TrustContextFactory, default_cert_reqs, server_certificate_pem
from tests.server.tlspair import client_context, handshake, server_context


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    ca = make_ca("server CA")
    other = make_ca("partner CA")
    inter = make_ca("partner intermediate", issuer=other)
    return {
        "ca": ca,
        "server": issue_server(ca),
        "other": other,
        "inter": inter,
        "partner": issue_client(other, "partner"),
        "deep": issue_client(inter, "deep"),
        "selfsigned": issue_client(None, "self-signed"),
    }


def _accepts(sctx: ssl.SSLContext, tmp: Path, pki: dict[str, Issued], client: Issued, *extra: Issued) -> bool:
    try:
        server, _ = handshake(sctx, client_context(tmp, pki["ca"], client, *extra))
    except ssl.SSLError:
        return False
    assert server.getpeercert(binary_form=True) == client.der()
    return True


def test_update_reaches_a_registered_live_context(tmp_path: Path, pki: dict[str, Issued]) -> None:
    live = LiveTrust()
    sctx = server_context(tmp_path, pki["server"])
    live.register(sctx)
    assert not _accepts(sctx, tmp_path, pki, pki["partner"])
    material = SimpleNamespace(anchors=[pki["other"].cert], registrations=[])
    live.update(material)
    assert _accepts(sctx, tmp_path, pki, pki["partner"])
    assert not _accepts(sctx, tmp_path, pki, pki["selfsigned"])


def test_registered_leaf_and_intermediate_are_anchors(tmp_path: Path, pki: dict[str, Issued]) -> None:
    live = LiveTrust()
    live.update(
        SimpleNamespace(
            anchors=[],
            registrations=[SimpleNamespace(cert=pki["inter"].cert), SimpleNamespace(cert=pki["selfsigned"].cert)],
        )
    )
    sctx = server_context(tmp_path, pki["server"])
    live.register(sctx)  # certificates known before registration are loaded too
    assert sctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert _accepts(sctx, tmp_path, pki, pki["deep"], pki["inter"])  # the intermediate alone, no root: partial chain
    assert _accepts(sctx, tmp_path, pki, pki["selfsigned"])
    assert not _accepts(sctx, tmp_path, pki, pki["partner"])  # the root of the intermediate is not trusted


def test_every_context_is_kept_current_and_duplicates_are_skipped(tmp_path: Path, pki: dict[str, Issued]) -> None:
    live = LiveTrust()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = server_context(tmp_path / "a", pki["server"]), server_context(tmp_path / "b", pki["server"])
    live.register(first)
    live.register(second)
    assert live.add([pki["other"].cert, pki["other"].der()]) == 1
    assert live.add([pki["other"].cert]) == 0 and len(live) == 1
    assert first.cert_store_stats()["x509_ca"] == second.cert_store_stats()["x509_ca"] == 1
    assert _accepts(first, tmp_path, pki, pki["partner"]) and _accepts(second, tmp_path, pki, pki["partner"])


def _config(*modes: str, resource_mode: str | None = None) -> Config:
    apis = []
    for i, mode in enumerate(modes):
        sec = SecurityConfig(mutual_ssl=mode, application=() if mode == "mandatory" else ("oauth2",))
        resources = ()
        if resource_mode is not None:
            resources = (
                ResourceConfig(
                    path=f"/a{i}/x", security=SecurityConfig(mutual_ssl=resource_mode, application=("basic",))
                ),
            )
        apis.append(ApiConfig(name=f"a{i}", context=f"/a{i}", security=sec, resources=resources))
    return Config(apis=tuple(apis))


@pytest.mark.parametrize(
    "config, tls, expected",
    [
        (_config("mandatory"), True, 1),
        (_config("disabled", "optional"), True, 1),
        (_config("disabled"), True, 0),
        (_config("disabled", resource_mode="optional"), True, 1),
        (_config("mandatory"), False, 0),
        (Config(), True, 0),
    ],
)
def test_default_cert_reqs(config: Config, tls: bool, expected: int) -> None:
    assert default_cert_reqs(config, tls) == expected


def test_server_certificate_pem(tmp_path: Path, pki: dict[str, Issued]) -> None:
    path = tmp_path / "chain.pem"
    path.write_bytes(pki["server"].cert_pem() + pki["ca"].cert_pem())
    assert server_certificate_pem(path) == pki["server"].cert_pem().decode()
    path.write_bytes(b"not a certificate")
    assert server_certificate_pem(path) is None
    assert server_certificate_pem(tmp_path / "missing.pem") is None


class _UvicornConfig:
    """The fields of uvicorn's Config the factory reads."""

    def __init__(self, certfile: Path, ca_certs: Path | None = None) -> None:
        self.ssl_certfile = str(certfile)
        self.ssl_ca_certs = str(ca_certs) if ca_certs else None


def _factory_setup(
    tmp_path: Path, pki: dict[str, Issued], cert_reqs: ssl.VerifyMode
) -> tuple[Path, Callable[[], ssl.SSLContext]]:
    pki["ca"].write(tmp_path / "ca.pem")
    pki["selfsigned"].write(tmp_path / "partner.pem")
    (tmp_path / "deployment.toml").write_text(
        f'[encryption]\nkey = "{"ab" * 32}"\n[mutual_ssl]\ntruststore = ["ca.pem"]\n'
        '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\nmutual_ssl = "mandatory"\n'
        '[[apis.certificates]]\nalias = "p"\ncertificate = "partner.pem"\n'
    )

    def default() -> ssl.SSLContext:
        return server_context(tmp_path, pki["server"], cert_reqs=cert_reqs)

    return tmp_path / "deployment.toml", default


def test_factory_trusts_the_configuration(
    tmp_path: Path, pki: dict[str, Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls, "live_trust", LiveTrust())
    forget_configs()
    config, default = _factory_setup(tmp_path, pki, ssl.CERT_OPTIONAL)
    ctx = TrustContextFactory(str(config))(_UvicornConfig(tmp_path / "server.pem"), default)
    assert ctx.verify_mode == ssl.CERT_OPTIONAL and ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert (
        ctx.cert_store_stats()["x509_ca"] == 1 and ctx.cert_store_stats()["x509"] == 2
    )  # the CA and the registered leaf
    assert _accepts(ctx, tmp_path, pki, pki["selfsigned"]) and not _accepts(ctx, tmp_path, pki, pki["partner"])
    server, _ = handshake(ctx, client_context(tmp_path, pki["ca"]))
    assert tls_info(server)["server_cert"] == pki["server"].cert_pem().decode()
    tls.live_trust.add([pki["other"].cert])
    assert _accepts(ctx, tmp_path, pki, pki["partner"])  # registered with the live trust


@pytest.mark.parametrize("cert_reqs, ca_certs", [(ssl.CERT_NONE, False), (ssl.CERT_OPTIONAL, True)])
def test_factory_leaves_uvicorns_meaning_alone(
    tmp_path: Path, pki: dict[str, Issued], monkeypatch: pytest.MonkeyPatch, cert_reqs: ssl.VerifyMode, ca_certs: bool
) -> None:
    monkeypatch.setattr(tls, "live_trust", LiveTrust())
    config, default = _factory_setup(tmp_path, pki, cert_reqs)
    uv = _UvicornConfig(tmp_path / "server.pem", tmp_path / "ca.pem" if ca_certs else None)
    ctx = TrustContextFactory(str(config))(uv, default)
    assert ctx.cert_store_stats()["x509"] == 0 and len(tls.live_trust) == 0
    assert not ctx.verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
