from __future__ import annotations

import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest

from asgi_apim.certs.pki import Issued, issue_client, issue_server, make_ca
from asgi_apim.config import ApiConfig, Config, ResourceConfig, SecurityConfig
from asgi_apim.server.tls import LiveTrust, default_cert_reqs, server_certificate_pem
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
    live.update(SimpleNamespace(anchors=[], registrations=[SimpleNamespace(cert=pki["inter"].cert), SimpleNamespace(cert=pki["selfsigned"].cert)]))
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
            resources = (ResourceConfig(path=f"/a{i}/x", security=SecurityConfig(mutual_ssl=resource_mode, application=("basic",))),)
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
