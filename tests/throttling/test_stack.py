"""Throttling inside the whole stack: real certificates through the trusted proxy header."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from asgi_apim import protect
from asgi_apim.certs.pki import Issued, issue_client, make_ca
from tests.asgi import call, echo_user
from tests.auth.idp import ISSUER, claims, rsa_key
from tests.throttling.conftest import Clock

HEADER = "X-WSO2-CLIENT-CERTIFICATE"


def renew(ca: Issued, old: Issued) -> Issued:
    """A new certificate (new serial, new validity) for the same key pair."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(old.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    return Issued(builder.sign(ca.key, hashes.SHA256()), old.key)


def stack(tmp_path: Path, ca: Issued) -> object:
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    (tmp_path / "deployment.toml").write_text(
        '[encryption]\nkey = "' + "cd" * 32 + '"\n'
        '[mutual_ssl]\ntrusted_proxies = ["127.0.0.1/32"]\ntruststore = ["ca.pem"]\n'
        '[throttling]\nheaders = "ratelimit"\n[throttling.tiers]\nTiny = "2/minute"\n'
        '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\nmutual_ssl = "mandatory"\n'
        '[[apis.certificates]]\nalias = "partners"\ncertificate = "ca.pem"\ntier = "Tiny"\n'
    )
    return protect(echo_user, tmp_path / "deployment.toml")


async def as_(app: object, cert: Issued) -> int:
    header = quote(cert.cert_pem().decode(), safe="")
    return (await call(app, "GET", "/pets/whoami", [(HEADER, header)], client=("127.0.0.1", 5000))).status


async def test_per_certificate_isolation_and_renewal_through_the_stack(tmp_path: Path, clock: Clock) -> None:
    ca = make_ca("throttle CA")
    app = stack(tmp_path, ca)
    alice, bob = issue_client(ca, "alice"), issue_client(ca, "bob")
    assert [await as_(app, alice) for _ in range(3)] == [200, 200, 429]
    assert await as_(app, bob) == 200
    renewed = renew(ca, alice)
    assert renewed.cert.serial_number != alice.cert.serial_number
    assert await as_(app, renewed) == 429  # same public key: the count carries over
    rekeyed = issue_client(ca, "alice")
    assert await as_(app, rekeyed) == 200  # new key pair: a count of its own


async def test_tier_comes_from_the_certificate_registration(tmp_path: Path, clock: Clock) -> None:
    app = stack(tmp_path, make_ca("throttle CA"))
    client = issue_client(None, "x")  # not issued by the registered CA: refused before throttling
    header = quote(client.cert_pem().decode(), safe="")
    assert (await call(app, "GET", "/pets/whoami", [(HEADER, header)], client=("127.0.0.1", 5000))).status == 401
    ca_client = issue_client(make_ca("other"), "y")
    assert await as_(app, ca_client) == 401


async def test_the_throttling_subscriber_claim_counts_oauth2_callers(tmp_path: Path, clock: Clock) -> None:
    key = rsa_key()
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [key.jwk()]}))
    (tmp_path / "deployment.toml").write_text(
        '[encryption]\nkey = "' + "cd" * 32 + '"\n'
        '[throttling]\nsubscriber_claim = ["client_id", "sub"]\n[throttling.tiers]\nTiny = "2/minute"\n'
        f'[[key_managers]]\nname = "idp"\nissuer = "{ISSUER}"\naudience = "pets"\n'
        'jwks_file = "jwks.json"\ndefault_tier = "Tiny"\n'
        '[[apis]]\nname = "pets"\ncontext = "/pets"\n'
        '[apis.security]\nmutual_ssl = "disabled"\napplication = ["oauth2"]\n'
    )
    app = protect(echo_user, tmp_path / "deployment.toml")

    async def as_client(client_id: str, azp: str) -> int:
        token = key.sign(claims(client_id=client_id, azp=azp, iat=None))  # the test clock runs up to a minute ahead
        return (
            await call(app, "GET", "/pets/whoami", [("authorization", f"Bearer {token}")], client=("127.0.0.1", 5000))
        ).status

    # one application (client_id) behind three authorised parties: one count
    assert [await as_client("app-1", azp) for azp in ("a", "b", "c")] == [200, 200, 429]
    assert await as_client("app-2", "a") == 200  # another application: a count of its own
