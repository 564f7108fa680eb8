from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import jks
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from asgi_apim.certs.pki import Issued, issue_client, make_ca, make_crl
from asgi_apim.certs.truststore import TrustMaterial, TrustReloader, load_trust
from asgi_apim.config import ApiConfig, CertificateRegistration, MutualSSLConfig
from asgi_apim.errors import TruststoreError

PASSWORD = "s3cret-truststore-pw"


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca("root")


@pytest.fixture(scope="module")
def other() -> Issued:
    return make_ca("other root")


def mssl(
    *truststore: Path, crl: tuple[Path, ...] = (), password: str | None = None, interval: float = 10.0
) -> MutualSSLConfig:
    return MutualSSLConfig(truststore=truststore, crl=crl, truststore_password=password, reload_interval=interval)


def subjects(material: TrustMaterial) -> list[str]:
    return [c.subject.rfc4514_string() for c in material.anchors]


def test_pem_file_with_several_certificates(tmp_path: Path, ca: Issued, other: Issued) -> None:
    (tmp_path / "bundle.pem").write_bytes(ca.cert_pem() + other.cert_pem())
    material = load_trust(mssl(tmp_path / "bundle.pem"), [])
    assert material.anchors == (ca.cert, other.cert)
    assert material.generation == 1 and material.crls == () and material.registrations == ()
    assert len(material.digest) == 32


def test_directory_takes_every_certificate_file(tmp_path: Path, ca: Issued, other: Issued) -> None:
    third = make_ca("third")
    d = tmp_path / "trust"
    d.mkdir()
    (d / "a.pem").write_bytes(ca.cert_pem())
    (d / "b.der").write_bytes(other.der())
    (d / "c.crt").write_bytes(third.cert_pem())
    (d / "d.cer").write_bytes(ca.der())  # a duplicate counts once
    (d / "notes.txt").write_text("not a certificate")
    (d / ".hidden.pem").write_text("editor swap file")
    (d / "sub").mkdir()
    material = load_trust(mssl(d), [])
    assert material.anchors == (ca.cert, other.cert, third.cert)


def test_pkcs12_with_password(tmp_path: Path, ca: Issued, other: Issued) -> None:
    client = issue_client(ca, "holder")
    data = pkcs12.serialize_key_and_certificates(
        b"holder", client.key, client.cert, [ca.cert], serialization.BestAvailableEncryption(PASSWORD.encode())
    )
    (tmp_path / "store.p12").write_bytes(data)
    java = pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(other.cert, b"other")], serialization.BestAvailableEncryption(PASSWORD.encode())
    )
    (tmp_path / "trust.pfx").write_bytes(java)
    material = load_trust(mssl(tmp_path / "store.p12", tmp_path / "trust.pfx", password=PASSWORD), [])
    assert material.anchors == (client.cert, ca.cert, other.cert)


@pytest.mark.parametrize("password", [None, "Wr0ng-pw-9"])
def test_pkcs12_wrong_password_names_the_file_not_the_password(
    tmp_path: Path, ca: Issued, password: str | None
) -> None:
    data = pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(ca.cert, b"ca")], serialization.BestAvailableEncryption(PASSWORD.encode())
    )
    (tmp_path / "trust.p12").write_bytes(data)
    with pytest.raises(TruststoreError) as info:
        load_trust(mssl(tmp_path / "trust.p12", password=password), [])
    assert "trust.p12" in str(info.value) and "truststore_password" in str(info.value)
    assert PASSWORD not in str(info.value) and "Wr0ng-pw-9" not in str(info.value)


def test_jks_trusted_certs_and_key_entry_chains(tmp_path: Path, ca: Issued, other: Issued) -> None:
    client = issue_client(ca, "keyholder")
    key_der = client.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    store = jks.KeyStore.new(
        "jks",
        [
            jks.TrustedCertEntry.new("other", other.der()),
            jks.PrivateKeyEntry.new("client", [client.der(), ca.der()], key_der),
        ],
    )
    store.save(str(tmp_path / "trust.jks"), PASSWORD)
    material = load_trust(mssl(tmp_path / "trust.jks", password=PASSWORD), [])
    assert set(material.anchors) == {other.cert, client.cert, ca.cert}
    with pytest.raises(TruststoreError, match=r"trust\.jks.*integrity") as info:
        load_trust(mssl(tmp_path / "trust.jks", password="not-it"), [])
    assert "not-it" not in str(info.value)


def test_corrupt_jks_and_pem(tmp_path: Path) -> None:
    (tmp_path / "bad.jks").write_bytes(b"\xfe\xed\xfe\xed" + b"\x00" * 7)
    with pytest.raises(TruststoreError, match=r"bad\.jks: not a readable JKS keystore"):
        load_trust(mssl(tmp_path / "bad.jks"), [])
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TruststoreError, match=r"bad\.pem: not a PEM or DER certificate"):
        load_trust(mssl(tmp_path / "bad.pem"), [])
    (tmp_path / "key.pem").write_bytes(make_ca().key_pem())
    with pytest.raises(TruststoreError, match=r"key\.pem"):
        load_trust(mssl(tmp_path / "key.pem"), [])


def test_missing_file_is_fatal_at_start(tmp_path: Path) -> None:
    with pytest.raises(TruststoreError, match=r"nope\.pem: file not found"):
        load_trust(mssl(tmp_path / "nope.pem"), [])
    with pytest.raises(TruststoreError, match=r"gone: file not found"):
        TrustReloader(mssl(tmp_path / "gone"), [])


def test_a_file_error_names_the_configuration_key_first(tmp_path: Path, ca: Issued) -> None:
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(TruststoreError, match=r"^mutual_ssl\.truststore\[1\]: .*nope\.pem: file not found"):
        load_trust(MutualSSLConfig(truststore=(tmp_path / "ca.pem", tmp_path / "nope.pem")), [])
    with pytest.raises(
        TruststoreError, match=r"^mutual_ssl\.crl\[0\]: .*junk\.pem: not a PEM or DER certificate revocation list"
    ):
        load_trust(MutualSSLConfig(truststore=(tmp_path / "ca.pem",), crl=(tmp_path / "junk.pem",)), [])
    api = ApiConfig(
        name="pets",
        context="/pets",
        certificates=(CertificateRegistration("partner", tmp_path / "junk.pem", "Gold", "pets"),),
    )
    with pytest.raises(TruststoreError, match=r"^apis\[pets\]\.certificates\[partner\]\.certificate: .*junk\.pem"):
        load_trust(MutualSSLConfig(), [api])


def test_crls_pem_and_der(tmp_path: Path, ca: Issued, other: Issued) -> None:
    first, second, third = make_crl(ca, [1, 2]), make_crl(other, [3]), make_crl(ca, [4])
    pem = first.public_bytes(serialization.Encoding.PEM) + second.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "two.pem").write_bytes(pem)
    (tmp_path / "one.crl").write_bytes(third.public_bytes(serialization.Encoding.DER))
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    material = load_trust(mssl(tmp_path / "ca.pem", crl=(tmp_path / "two.pem", tmp_path / "one.crl")), [])
    assert material.crls == (first, second, third)
    (tmp_path / "bad.crl").write_bytes(b"\x30\x03\x02\x01\x01")
    with pytest.raises(TruststoreError, match=r"bad\.crl: not a PEM or DER certificate revocation list"):
        load_trust(mssl(crl=(tmp_path / "bad.crl",)), [])


def test_registrations(tmp_path: Path, ca: Issued) -> None:
    leaf = issue_client(ca, "partner")
    leaf.write(tmp_path / "partner.pem")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem() + leaf.cert_pem())  # first certificate counts
    api = ApiConfig(
        "pets",
        "/pets",
        certificates=(
            CertificateRegistration("partner-a", tmp_path / "partner.pem", "Gold", "pets"),
            CertificateRegistration("issuer", tmp_path / "ca.pem", "Silver", "pets"),
        ),
    )
    material = load_trust(mssl(), [api, ApiConfig("open", "/open")])
    (a, b) = material.registrations
    assert (a.api, a.alias, a.tier, a.cert, a.is_ca) == ("pets", "partner-a", "Gold", leaf.cert, False)
    assert a.sha256 == leaf.cert.fingerprint(hashes.SHA256())
    assert (b.alias, b.tier, b.cert, b.is_ca) == ("issuer", "Silver", ca.cert, True)
    assert material.apis == ("pets", "open")


def test_apis_that_can_accept_no_certificate_are_logged_once_and_tiers_survive_reloads(
    tmp_path: Path, ca: Issued, other: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    from asgi_apim.config import SecurityConfig

    path = tmp_path / "ca.pem"
    path.write_bytes(ca.cert_pem())
    mandatory, optional = SecurityConfig(mutual_ssl="mandatory"), SecurityConfig(mutual_ssl="optional")
    reg = CertificateRegistration("ca", path, "Gold", "registered")
    apis = [
        ApiConfig("closed", "/closed", security=mandatory),
        ApiConfig("half-closed", "/half", security=optional),
        ApiConfig("tiered", "/tiered", security=mandatory, truststore_tier="Bronze"),
        ApiConfig("registered", "/registered", security=mandatory, certificates=(reg,)),
        ApiConfig("no-mtls", "/plain"),
    ]
    caplog.set_level(logging.WARNING, "asgi_apim.certs.truststore")
    reloader = TrustReloader(mssl(path), apis)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "API 'closed' accepts no client certificate: register certificates or set truststore_tier",
        "API 'half-closed' accepts no client certificate: register certificates or set truststore_tier",
    ]
    assert reloader.current.truststore_tiers == {"tiered": "Bronze"}
    path.write_bytes(ca.cert_pem() + other.cert_pem())
    assert reloader.check() is True
    assert reloader.current.truststore_tiers == {"tiered": "Bronze"} and reloader.current.generation == 2
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2  # not again on reload


def test_check_reloads_on_change_and_increments_generation(tmp_path: Path, ca: Issued, other: Issued) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.cert_pem())
    reloader = TrustReloader(mssl(path), [])
    first = reloader.current
    assert reloader.check() is False and reloader.current is first
    path.write_bytes(ca.cert_pem() + other.cert_pem())
    assert reloader.check() is True
    second = reloader.current
    assert second.generation == 2 and second.anchors == (ca.cert, other.cert) and second.digest != first.digest
    assert reloader.check() is False and reloader.current is second


def test_directory_listed_anew(tmp_path: Path, ca: Issued, other: Issued) -> None:
    d = tmp_path / "trust"
    d.mkdir()
    (d / "a.pem").write_bytes(ca.cert_pem())
    reloader = TrustReloader(mssl(d), [])
    (d / "b.pem").write_bytes(other.cert_pem())
    assert reloader.check() is True and reloader.current.anchors == (ca.cert, other.cert)
    (d / "a.pem").unlink()
    assert reloader.check() is True and reloader.current.anchors == (other.cert,)
    assert reloader.current.generation == 3


def test_crl_reload(tmp_path: Path, ca: Issued) -> None:
    crl_path = tmp_path / "ca.crl"
    crl_path.write_bytes(make_crl(ca, []).public_bytes(serialization.Encoding.DER))
    reloader = TrustReloader(mssl(crl=(crl_path,)), [])
    revoking = make_crl(ca, [42])
    crl_path.write_bytes(revoking.public_bytes(serialization.Encoding.PEM))
    assert reloader.check() is True
    assert reloader.current.crls == (revoking,)
    assert reloader.current.crls[0].get_revoked_certificate_by_serial_number(42) is not None


def test_corrupt_file_keeps_last_good_and_logs_once(
    tmp_path: Path, ca: Issued, other: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.cert_pem())
    reloader = TrustReloader(mssl(path), [])
    good = reloader.current
    path.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    with caplog.at_level(logging.WARNING, logger="asgi_apim.certs.truststore"):
        assert reloader.check() is False
        assert reloader.check() is False
    assert reloader.current is good
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ca.pem" in warnings[0].getMessage() and "generation 1" in warnings[0].getMessage()
    path.write_bytes(other.cert_pem())
    assert reloader.check() is True
    assert reloader.current.anchors == (other.cert,) and reloader.current.generation == 2
    assert (reloader.reloads, reloader.failures) == (1, 1)  # for metrics: the same broken file counts once


def test_missing_file_keeps_last_good(tmp_path: Path, ca: Issued, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.cert_pem())
    leaf = issue_client(ca)
    leaf.write(tmp_path / "leaf.pem")
    api = ApiConfig(
        "pets", "/pets", certificates=(CertificateRegistration("x", tmp_path / "leaf.pem", "Gold", "pets"),)
    )
    reloader = TrustReloader(mssl(path, password=PASSWORD), [api])
    good = reloader.current
    (tmp_path / "leaf.pem").unlink()
    with caplog.at_level(logging.WARNING, logger="asgi_apim.certs.truststore"):
        assert reloader.check() is False
        assert reloader.check() is False
    assert reloader.current is good
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and "leaf.pem: file not found" in messages[0]
    assert all(PASSWORD not in r.getMessage() for r in caplog.records)
    leaf.write(tmp_path / "leaf.pem")  # the same content back: nothing to rebuild
    assert reloader.check() is False and reloader.current is good


async def test_run_reloads_and_notifies_on_the_loop_thread(tmp_path: Path, ca: Issued, other: Issued) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(ca.cert_pem())
    reloader = TrustReloader(mssl(path, interval=0.02), [])
    seen: list[tuple[int, int]] = []
    reloader.subscribe(lambda m: seen.append((m.generation, threading.get_ident())))
    reloader.subscribe(lambda m: 1 / 0)  # a failing subscriber does not stop the others or the loop
    task = asyncio.create_task(reloader.run())
    try:
        await asyncio.sleep(0.1)
        assert seen == []
        path.write_bytes(other.cert_pem())
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen == [(2, threading.get_ident())]
        assert reloader.current.anchors == (other.cert,)
        path.write_bytes(ca.cert_pem())
        for _ in range(200):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.01)
        assert [g for g, _ in seen] == [2, 3]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert task.cancelled()
