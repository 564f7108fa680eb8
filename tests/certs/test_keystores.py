"""asgi_apim.certs.keystores on its own: each file format read from bytes, and each refusal naming the file
(the truststore's tests read the same files through `load_trust`)."""

from __future__ import annotations

from pathlib import Path

import jks
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from asgi_apim.certs.keystores import certificates_in, crls_in, list_directory, pem_or_der, read_file
from asgi_apim.certs.pki import Issued, issue_client, make_ca, make_crl
from asgi_apim.errors import TruststoreError

PASSWORD = "k3ystore-pw"


@pytest.fixture(scope="module")
def ca() -> Issued:
    return make_ca("keystores root")


def test_pem_and_der(ca: Issued) -> None:
    other = make_ca("second")
    assert certificates_in(Path("two.pem"), ca.cert_pem() + other.cert_pem()) == [ca.cert, other.cert]
    assert certificates_in(Path("one.der"), ca.der()) == [ca.cert]
    assert pem_or_der(Path("one.cer"), ca.der()) == [ca.cert]
    with pytest.raises(TruststoreError, match=r"junk\.pem: not a PEM or DER certificate"):
        certificates_in(Path("junk.pem"), b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


def test_pkcs12_by_suffix_and_its_password(ca: Issued) -> None:
    client = issue_client(ca, "holder")
    data = pkcs12.serialize_key_and_certificates(
        b"holder", client.key, client.cert, [ca.cert], serialization.BestAvailableEncryption(PASSWORD.encode())
    )
    assert certificates_in(Path("store.pfx"), data, PASSWORD) == [client.cert, ca.cert]
    with pytest.raises(TruststoreError, match=r"store\.p12: cannot open the PKCS#12 file") as info:
        certificates_in(Path("store.p12"), data, "Wr0ng")
    assert "Wr0ng" not in str(info.value) and PASSWORD not in str(info.value)


def test_jks_found_by_its_magic_number_whatever_the_suffix(ca: Issued) -> None:
    store = jks.KeyStore.new("jks", [jks.TrustedCertEntry.new("root", ca.der())])
    data = store.saves(PASSWORD)
    assert certificates_in(Path("trust.bin"), data, PASSWORD) == [ca.cert]
    with pytest.raises(TruststoreError, match=r"trust\.jks: the keystore's integrity check failed"):
        certificates_in(Path("trust.jks"), data, "not-it")
    empty = jks.KeyStore.new("jks", []).saves(PASSWORD)
    with pytest.raises(TruststoreError, match=r"empty\.jks: holds no certificate"):
        certificates_in(Path("empty.jks"), empty, PASSWORD)


def test_crls_pem_der_and_refused(ca: Issued) -> None:
    first, second = make_crl(ca, [1]), make_crl(ca, [2, 3])
    pem = first.public_bytes(serialization.Encoding.PEM) + second.public_bytes(serialization.Encoding.PEM)
    assert crls_in(Path("two.pem"), pem) == [first, second]
    assert crls_in(Path("one.crl"), second.public_bytes(serialization.Encoding.DER)) == [second]
    for name, data in (("bad.crl", b"\x30\x03\x02\x01\x01"), ("nocrl.pem", b"-----BEGIN NOTHING-----")):
        with pytest.raises(TruststoreError, match=rf"{name.replace('.', '[.]')}: not a PEM or DER certificate"):
            crls_in(Path(name), data)


def test_files_and_directories(tmp_path: Path, ca: Issued) -> None:
    for name in ("a.pem", "b.P12", "c.jks", "d.txt", ".hidden.pem"):
        (tmp_path / name).write_bytes(ca.cert_pem())
    (tmp_path / "sub.pem").mkdir()
    assert [p.name for p in list_directory(tmp_path)] == ["a.pem", "b.P12", "c.jks"]
    assert read_file(tmp_path / "a.pem") == ca.cert_pem()
    with pytest.raises(TruststoreError, match=r"nope\.pem: file not found"):
        read_file(tmp_path / "nope.pem")
    with pytest.raises(TruststoreError, match=r"sub\.pem: is a directory"):
        read_file(tmp_path / "sub.pem")
    with pytest.raises(TruststoreError, match=r"cannot list the directory"):
        list_directory(tmp_path / "a.pem")
