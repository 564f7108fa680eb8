from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from asgi_apim.certs import validation
from asgi_apim.certs.pki import Issued, issue_client, issue_server, make_ca, make_crl, new_key
from asgi_apim.certs.truststore import RegisteredCertificate, TrustMaterial, load_trust
from asgi_apim.certs.validation import CertificateValidator, load_pem_chain
from asgi_apim.certs.verdict import EXPIRED, ISSUER_REVOKED, REVOKED, Acceptance, CertificateVerdict
from asgi_apim.config import ApiConfig, CertificateRegistration, MutualSSLConfig
from asgi_apim.identity import public_key_sha256

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
NOW = dt.datetime.now(dt.UTC)


def custom(
    issuer: Issued | None,
    cn: str,
    *,
    key: object = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    ca: bool = False,
) -> Issued:
    """A certificate with chosen validity and key (pki's builders choose those themselves)."""
    key = key or new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer = issuer.key if issuer else key
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(hours=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)  # type: ignore[attr-defined]
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)  # type: ignore[attr-defined]
        .add_extension(
            x509.KeyUsage(
                digital_signature=not ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([CLIENT_AUTH]), critical=False)
    return Issued(b.sign(signer, hashes.SHA256()), key)  # type: ignore[arg-type]


def reg(api: str, alias: str, issued: Issued, tier: str = "Gold") -> RegisteredCertificate:
    cert = issued.cert
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return RegisteredCertificate(api, alias, tier, cert, hashlib.sha256(issued.der()).digest(), is_ca)


OPEN = {"open": "Unlimited"}  # the API named "open" accepts what the truststore validates


def material(
    anchors: Sequence[Issued] = (),
    *,
    registrations: Sequence[RegisteredCertificate] = (),
    crls: Sequence[x509.CertificateRevocationList] = (),
    apis: Sequence[str] = ("open",),
    tiers: Mapping[str, str] = OPEN,
) -> TrustMaterial:
    tiers = {api: tier for api, tier in tiers.items() if api in apis}
    return TrustMaterial(tuple(a.cert for a in anchors), tuple(crls), tuple(registrations), 1, b"d", tuple(apis), tiers)


def ders(*certs: Issued) -> tuple[bytes, ...]:
    return tuple(c.der() for c in certs)


@pytest.fixture(scope="module")
def root() -> Issued:
    return make_ca("root")


@pytest.fixture(scope="module")
def inter(root: Issued) -> Issued:
    return make_ca("intermediate", issuer=root)


@pytest.fixture(scope="module")
def leaf(inter: Issued) -> Issued:
    return issue_client(inter, "alice")


def test_chain_through_an_intermediate_presented_by_the_client(root: Issued, inter: Issued, leaf: Issued) -> None:
    v = CertificateValidator(material([root]))
    verdict = v.validate(ders(leaf, inter))
    assert verdict.reason is None
    assert verdict.accepted_for("open") == Acceptance("open", None, "Unlimited", "truststore")
    assert verdict.subject == "CN=alice,O=asgi-apim dev"
    assert verdict.sha256 == hashlib.sha256(leaf.der()).hexdigest()
    assert verdict.leaf == leaf.cert
    assert verdict.not_after == leaf.cert.not_valid_after_utc.timestamp()
    with pytest.raises(dataclasses.FrozenInstanceError):  # shared by every request while cached
        verdict.reason = "changed"  # type: ignore[misc]
    assert verdict.principals == {} and verdict.principals is verdict.principals
    refused = v.validate(ders(leaf))  # without its intermediate
    assert refused.reason == "not issued by a trusted CA" and refused.acceptances == {}
    assert refused.reason_for("open") == "not issued by a trusted CA"


def test_intermediate_only_in_the_truststore(root: Issued, inter: Issued, leaf: Issued) -> None:
    v = CertificateValidator(material([root, inter]))
    assert v.validate(ders(leaf)).accepted_for("open") is not None
    only_inter = CertificateValidator(material([inter]))  # any truststore certificate is an anchor
    assert only_inter.validate(ders(leaf)).accepted_for("open") is not None


@pytest.mark.parametrize("chain_validation", [True, False])
def test_exact_self_signed(chain_validation: bool, root: Issued) -> None:
    selfie = issue_client(None, "selfie")
    v = CertificateValidator(
        material([root], registrations=[reg("pets", "me", selfie)], apis=("pets", "open")),
        chain_validation=chain_validation,
    )
    verdict = v.validate(ders(selfie))
    assert verdict.reason is None
    assert verdict.accepted_for("pets") == Acceptance("pets", "me", "Gold", "exact")
    assert verdict.accepted_for("open") is None
    assert verdict.reason_for("pets") == "accepted"
    other = issue_client(None, "selfie")  # same name, another key: not the registered certificate
    assert v.validate(ders(other)).acceptances == {}


def test_ca_registration_and_exact_wins(root: Issued, inter: Issued, leaf: Issued) -> None:
    regs = [
        reg("pets", "partner-ca", inter, "Silver"),
        reg("shop", "alice-exact", leaf, "Bronze"),
        reg("shop", "shop-ca", root, "Gold"),
    ]
    v = CertificateValidator(material([], registrations=regs, apis=("pets", "shop")))
    verdict = v.validate(ders(leaf))
    assert verdict.accepted_for("pets") == Acceptance("pets", "partner-ca", "Silver", "ca")
    assert verdict.accepted_for("shop") == Acceptance("shop", "alice-exact", "Bronze", "exact")
    sibling = issue_client(inter, "bob")
    v2 = v.validate(ders(sibling))
    assert v2.accepted_for("pets").how == "ca"  # type: ignore[union-attr]
    assert v2.accepted_for("shop") == Acceptance("shop", "shop-ca", "Gold", "ca")


@pytest.mark.parametrize("chain_validation", [True, False])
def test_a_registered_ca_certificate_is_exact_for_itself_as_well(
    chain_validation: bool, root: Issued, inter: Issued, leaf: Issued
) -> None:
    # a self-signed certificate from `openssl req -x509` is a CA: registered exactly, it must pass as itself
    regs = [reg("pets", "partner-ca", inter, "Silver")]
    v = CertificateValidator(material([], registrations=regs, apis=("pets",)), chain_validation=chain_validation)
    assert v.validate(ders(inter)).accepted_for("pets") == Acceptance("pets", "partner-ca", "Silver", "exact")
    if chain_validation:  # and the leaves it issued, through it
        assert v.validate(ders(leaf)).accepted_for("pets") == Acceptance("pets", "partner-ca", "Silver", "ca")
    assert v.validate(ders(root)).acceptances == {}  # a CA that is not registered is no client


def test_per_api_acceptance(root: Issued) -> None:
    a_leaf, b_leaf = issue_client(root, "a"), issue_client(root, "b")
    v = CertificateValidator(
        material([root], registrations=[reg("a", "A", a_leaf), reg("b", "B", b_leaf)], apis=("a", "b", "open"))
    )
    verdict = v.validate(ders(a_leaf))
    assert set(verdict.acceptances) == {"a", "open"}
    assert verdict.reason is None
    assert "certificate is not registered for API 'b'" in verdict.reason_for("b")


def test_api_without_registrations_or_truststore_tier_accepts_nothing(
    root: Issued, inter: Issued, leaf: Issued
) -> None:
    v = CertificateValidator(material([root], apis=("closed", "open")))
    verdict = v.validate(ders(leaf, inter))
    assert verdict.reason is None  # the chain itself is trusted ...
    assert set(verdict.acceptances) == {"open"}  # ... but only an API that opts in accepts it
    assert verdict.reason_for("closed") == "certificate is not registered for API 'closed'"
    assert CertificateValidator(material([root], apis=("closed",))).validate(ders(leaf, inter)).acceptances == {}
    selfie = issue_client(None, "selfie")  # in the truststore itself: still not registered
    assert CertificateValidator(material([selfie], apis=("closed",))).validate(ders(selfie)).acceptances == {}


def test_truststore_tier_after_exact_and_ca_registrations(root: Issued, inter: Issued, leaf: Issued) -> None:
    other = make_ca("other root")
    by_other, by_root = issue_client(other, "by other"), issue_client(root, "by root")
    regs = [reg("pets", "inter", inter, "Silver"), reg("pets", "pinned", by_root, "Gold")]
    tiers = {"pets": "Bronze"}
    v = CertificateValidator(material([root, other], registrations=regs, apis=("pets",), tiers=tiers))
    assert v.validate(ders(by_root)).accepted_for("pets") == Acceptance("pets", "pinned", "Gold", "exact")
    assert v.validate(ders(leaf, inter)).accepted_for("pets") == Acceptance("pets", "inter", "Silver", "ca")
    assert v.validate(ders(by_other)).accepted_for("pets") == Acceptance("pets", None, "Bronze", "truststore")
    closed = CertificateValidator(material([root, other], registrations=regs, apis=("pets",), tiers={}))
    assert closed.validate(ders(leaf, inter)).accepted_for("pets").how == "ca"  # type: ignore[union-attr]
    refused = closed.validate(ders(by_other))
    assert refused.acceptances == {}
    assert (
        refused.reason_for("pets")
        == "certificate is not registered for API 'pets', nor issued by a CA registered for it"
    )
    private = make_ca("private")  # registered for pets, not in the truststore: its leaves pass as "ca" only
    m = material(
        [root], registrations=[reg("pets", "private", private)], apis=("pets", "shop"), tiers={"pets": "Bronze"}
    )
    member = CertificateValidator(m).validate(ders(issue_client(private, "member")))
    assert member.accepted_for("pets").how == "ca" and member.accepted_for("shop") is None  # type: ignore[union-attr]
    stranger = issue_client(private, "x")
    m2 = material(
        [root], registrations=[reg("shop", "private", private)], apis=("pets", "shop"), tiers={"pets": "Bronze"}
    )
    assert CertificateValidator(m2).validate(ders(stranger)).reason_for("pets") == "not issued by a trusted CA"


def test_leaf_without_eku_or_server_only_is_refused(root: Issued) -> None:
    v = CertificateValidator(material([root]))
    for cert in (issue_client(root, "no-eku", eku=None), issue_server(root)):
        verdict = v.validate(ders(cert))
        assert verdict.reason == "lacks the clientAuth extended key usage" and verdict.acceptances == {}
    both = issue_client(root, "both", eku=[ExtendedKeyUsageOID.SERVER_AUTH, CLIENT_AUTH])
    assert v.validate(ders(both)).accepted_for("open") is not None


def test_san_is_optional(root: Issued) -> None:
    v = CertificateValidator(material([root]))
    assert v.validate(ders(issue_client(root, "nosan", san=None))).accepted_for("open") is not None
    assert v.validate(ders(issue_client(root, "san", san=["client.example"]))).accepted_for("open") is not None


def test_expired_and_not_yet_valid_are_refused_even_when_registered(root: Issued) -> None:
    expired = issue_client(root, "old", not_before=NOW - dt.timedelta(days=10), not_after=NOW - dt.timedelta(days=1))
    future = issue_client(root, "new", not_before=NOW + dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=10))
    regs = [reg("pets", "old", expired), reg("pets", "new", future)]
    for chain_validation in (True, False):
        v = CertificateValidator(
            material([root], registrations=regs, apis=("pets",)), chain_validation=chain_validation
        )
        assert v.validate(ders(expired)).reason == "expired"
        assert v.validate(ders(future)).reason == "not yet valid"
        assert v.validate(ders(expired)).acceptances == {} and v.validate(ders(future)).acceptances == {}


def test_expired_intermediate_is_refused(root: Issued) -> None:
    old = custom(
        root, "old intermediate", ca=True, not_before=NOW - dt.timedelta(days=30), not_after=NOW - dt.timedelta(days=1)
    )
    child = custom(old, "child", not_before=NOW - dt.timedelta(days=20))
    verdict = CertificateValidator(material([root])).validate(ders(child, old))
    assert verdict.acceptances == {} and verdict.reason is not None
    assert verdict.reason in ("a CA certificate of its chain is expired or not yet valid", "not issued by a trusted CA")


def test_revoked_leaf_and_intermediate(root: Issued, inter: Issued, leaf: Issued) -> None:
    by_inter = make_crl(inter, [leaf.cert.serial_number])
    by_root = make_crl(root, [inter.cert.serial_number])
    v = CertificateValidator(material([root], crls=[by_inter]))
    assert v.validate(ders(leaf, inter)).reason == "revoked"
    sibling = issue_client(inter, "bob")
    assert v.validate(ders(sibling, inter)).accepted_for("open") is not None
    v2 = CertificateValidator(material([root], crls=[by_root]))
    assert v2.validate(ders(sibling, inter)).reason == "an issuing CA certificate of its chain is revoked"
    assert v2.validate(ders(sibling, inter)).acceptances == {}
    assert v2.validate(ders(issue_client(root, "direct"))).accepted_for("open") is not None


def test_a_registered_intermediate_revoked_by_its_root_s_crl_admits_no_leaf(
    root: Issued, inter: Issued, leaf: Issued
) -> None:
    # the chain would stop at the registered intermediate, an anchor: the root's CRL on it would go unread
    by_root = make_crl(root, [inter.cert.serial_number])
    regs = [reg("f", "partner-ca", inter)]
    v = CertificateValidator(material([root], registrations=regs, crls=[by_root], apis=("f",)))
    verdict = v.validate(ders(leaf, inter))
    assert verdict.acceptances == {} and verdict.reason == ISSUER_REVOKED
    assert v.validate(ders(leaf)).acceptances == {}  # nor without the intermediate: it anchors nothing now
    # not revoked: admitted through the registered intermediate
    fine = CertificateValidator(material([root], registrations=regs, apis=("f",)))
    assert fine.validate(ders(leaf, inter)).accepted_for("f") == Acceptance("f", "partner-ca", "Gold", "ca")


def test_a_refusal_for_a_ca_not_yet_valid_is_not_kept_past_the_moment_it_becomes_valid() -> None:
    now = dt.datetime.now(dt.UTC)  # not the module's NOW: a long run would have made the CA valid already
    soon = now + dt.timedelta(seconds=30)
    ca = custom(None, "future CA", not_before=soon, ca=True)
    early_leaf = custom(ca, "leaf", not_before=now - dt.timedelta(days=1))
    verdict = CertificateValidator(material([ca])).validate(ders(early_leaf))
    assert verdict.acceptances == {} and verdict.reason
    assert verdict.valid_until <= soon.timestamp() + 1  # decided again once the CA is valid, not a minute later


def test_crl_signed_by_the_wrong_key_is_ignored(root: Issued, inter: Issued, leaf: Issued) -> None:
    impostor = make_ca("intermediate")  # the same name as the real intermediate, another key
    assert impostor.cert.subject == inter.cert.subject
    forged = make_crl(impostor, [leaf.cert.serial_number])
    verdict = CertificateValidator(material([root], crls=[forged])).validate(ders(leaf, inter))
    assert verdict.reason is None and verdict.accepted_for("open") is not None


def test_exact_registration_revoked_by_its_issuers_crl(root: Issued) -> None:
    partner = issue_client(root, "partner")
    crl = make_crl(root, [partner.cert.serial_number])
    for chain_validation in (True, False):
        m = material([root], registrations=[reg("pets", "p", partner)], crls=[crl], apis=("pets",))
        assert CertificateValidator(m, chain_validation=chain_validation).validate(ders(partner)).reason == "revoked"
    selfie = issue_client(None, "selfie")
    own = make_crl(selfie, [selfie.cert.serial_number])  # a self-signed certificate revoking itself
    m = material([], registrations=[reg("pets", "me", selfie)], crls=[own], apis=("pets",))
    assert CertificateValidator(m, chain_validation=False).validate(ders(selfie)).reason == "revoked"


def test_unknown_ca_is_refused(root: Issued) -> None:
    stranger = issue_client(make_ca("stranger"), "mallory")
    verdict = CertificateValidator(material([root])).validate(ders(stranger))
    assert verdict.reason == "not issued by a trusted CA" and verdict.acceptances == {}
    assert CertificateValidator(material([])).validate(ders(stranger)).reason == "not issued by a trusted CA"


def test_chain_validation_off_only_exact_passes(root: Issued, inter: Issued, leaf: Issued) -> None:
    registered = issue_client(inter, "registered")
    m = material([root], registrations=[reg("pets", "ca", inter), reg("pets", "r", registered)], apis=("pets", "open"))
    v = CertificateValidator(m, chain_validation=False)
    refused = v.validate(ders(leaf, inter))
    assert refused.acceptances == {} and "not registered" in (refused.reason or "")
    assert "chain validation is disabled" in refused.reason_for("pets")
    assert v.validate(ders(registered, inter)).accepted_for("pets").how == "exact"  # type: ignore[union-attr]
    assert CertificateValidator(m).validate(ders(leaf, inter)).accepted_for("pets").how == "ca"  # type: ignore[union-attr]


def test_open_api_needs_the_truststore_not_just_a_registered_ca(root: Issued) -> None:
    private_ca = make_ca("private")
    member = issue_client(private_ca, "member")
    v = CertificateValidator(
        material([root], registrations=[reg("pets", "private", private_ca)], apis=("pets", "open"))
    )
    verdict = v.validate(ders(member))
    assert verdict.accepted_for("pets").how == "ca"  # type: ignore[union-attr]
    assert verdict.accepted_for("open") is None and verdict.reason_for("open") == "not issued by a trusted CA"
    sub_ca = make_ca("registered sub-CA", issuer=root)  # registered, and issued by the truststore's root
    child = issue_client(sub_ca, "child")
    v2 = CertificateValidator(material([root], registrations=[reg("pets", "sub", sub_ca)], apis=("pets", "open")))
    accepted = v2.validate(ders(child))
    assert accepted.accepted_for("pets").how == "ca" and accepted.accepted_for("open").how == "truststore"  # type: ignore[union-attr]


def test_unparseable_input_gives_a_verdict(root: Issued, leaf: Issued) -> None:
    v = CertificateValidator(material([root]))
    for chain in [(b"garbage",), (b"",), (leaf.der(), b"\x30\x00"), (leaf.der()[:-5],), ()]:
        verdict = v.validate(chain)
        assert verdict.acceptances == {} and verdict.leaf is None
        assert verdict.reason in ("unparseable certificate", "no certificate presented")
    assert v.validate((b"garbage",)).reason_for("open") == "unparseable certificate"


def test_spki_hash_survives_renewal(root: Issued) -> None:
    key = new_key()
    first, renewed = custom(root, "client", key=key), custom(root, "client", key=key)
    v = CertificateValidator(material([root]))
    a, b = v.validate(ders(first)), v.validate(ders(renewed))
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert a.spki_sha256 == b.spki_sha256 == hashlib.sha256(spki).hexdigest()
    assert a.sha256 != b.sha256


def test_loaded_from_files(tmp_path: Path, root: Issued, inter: Issued, leaf: Issued) -> None:
    (tmp_path / "bundle.pem").write_bytes(root.cert_pem() + inter.cert_pem())
    leaf.write(tmp_path / "alice.pem")
    api = ApiConfig(
        "pets", "/pets", certificates=(CertificateRegistration("alice", tmp_path / "alice.pem", "Gold", "pets"),)
    )
    apis = [api, ApiConfig("open", "/open", truststore_tier="Bronze"), ApiConfig("closed", "/closed")]
    m = load_trust(MutualSSLConfig(truststore=(tmp_path / "bundle.pem",)), apis)
    assert m.apis == ("pets", "open", "closed") and m.truststore_tiers == {"open": "Bronze"}
    verdict = CertificateValidator(m).validate(ders(leaf))
    assert verdict.accepted_for("pets") == Acceptance("pets", "alice", "Gold", "exact")
    assert verdict.accepted_for("open") == Acceptance("open", None, "Bronze", "truststore")
    assert verdict.accepted_for("closed") is None
    assert verdict.reason_for("closed") == "certificate is not registered for API 'closed'"
    assert load_pem_chain((tmp_path / "bundle.pem").read_bytes()) == [root.cert, inter.cert]


class CountingLoads:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = x509.load_der_x509_certificate

        def counting(data: bytes) -> x509.Certificate:
            self.calls += 1
            return real(data)

        monkeypatch.setattr(x509, "load_der_x509_certificate", counting)


def test_cache_hit_does_not_parse(monkeypatch: pytest.MonkeyPatch, root: Issued, inter: Issued, leaf: Issued) -> None:
    v = CertificateValidator(material([root]))
    loads = CountingLoads(monkeypatch)
    first = v.validate(ders(leaf, inter), cache_key=b"raw header bytes")
    assert loads.calls == 2
    assert v.validate(ders(leaf, inter), cache_key=b"raw header bytes") is first
    assert v.validate((b"ignored on a hit",), cache_key=b"raw header bytes") is first
    assert loads.calls == 2
    by_der = v.validate(ders(leaf, inter))
    assert loads.calls == 4 and v.validate(ders(leaf, inter)) is by_der and loads.calls == 4
    CertificateValidator(material([root])).validate(ders(leaf, inter), cache_key=b"raw header bytes")
    assert loads.calls == 6  # a new generation's validator starts empty


def test_uncached_validation_neither_reads_nor_fills_the_cache(
    monkeypatch: pytest.MonkeyPatch, root: Issued, leaf: Issued, inter: Issued
) -> None:
    v = CertificateValidator(material([root]))
    loads = CountingLoads(monkeypatch)
    kept = v.validate(ders(leaf, inter))
    fresh = v.validate(ders(leaf, inter), cache=False)
    assert fresh is not kept and fresh.acceptances == kept.acceptances and loads.calls == 4
    assert len(v._cache) == 1 and v.validate(ders(leaf, inter)) is kept


def test_cache_is_bounded(monkeypatch: pytest.MonkeyPatch, root: Issued) -> None:
    certs = [issue_client(root, f"c{i}") for i in range(3)]
    v = CertificateValidator(material([root]), cache_size=2)
    loads = CountingLoads(monkeypatch)
    for c in certs:
        v.validate(ders(c))
    v.validate(ders(certs[2]))
    v.validate(ders(certs[1]))
    assert loads.calls == 3
    v.validate(ders(certs[0]))  # the least recently used was evicted
    assert loads.calls == 4


def test_cache_entry_expires_with_the_certificate_and_after_an_hour(
    monkeypatch: pytest.MonkeyPatch, root: Issued
) -> None:
    start = time.time()
    short = custom(root, "short", not_after=dt.datetime.fromtimestamp(start + 120, dt.UTC))
    long = issue_client(root, "long")
    v = CertificateValidator(material([root]))
    loads = CountingLoads(monkeypatch)
    clock = [start]
    monkeypatch.setattr(validation.time, "time", lambda: clock[0])
    assert v.validate(ders(short)).accepted_for("open") is not None
    assert v.validate(ders(long)).accepted_for("open") is not None
    clock[0] = start + 110
    v.validate(ders(short)), v.validate(ders(long))
    assert loads.calls == 2
    clock[0] = start + 121
    assert v.validate(ders(short)).reason == "expired"
    assert loads.calls == 3
    v.validate(ders(long))
    assert loads.calls == 3
    clock[0] = start + 3601
    assert v.validate(ders(long)).accepted_for("open") is not None
    assert loads.calls == 4


def test_valid_until_is_the_first_expiry_of_the_chain_it_rests_on(root: Issued, inter: Issued, leaf: Issued) -> None:
    ending = custom(None, "anchor ending soon", ca=True, not_after=NOW + dt.timedelta(minutes=10))
    child = custom(ending, "child")
    v = CertificateValidator(material([ending, root]))
    verdict = v.validate(ders(child))
    assert verdict.accepted_for("open") is not None
    assert (
        verdict.valid_until == ending.cert.not_valid_after_utc.timestamp() < child.cert.not_valid_after_utc.timestamp()
    )
    refused = v.validate(ders(issue_client(make_ca("stranger"), "x")))
    assert time.time() + 3500 < refused.valid_until <= time.time() + validation.CACHE_MAX_TTL
    expired = custom(root, "expired", not_before=NOW - dt.timedelta(days=2), not_after=NOW - dt.timedelta(days=1))
    assert v.validate(ders(expired)).valid_until <= time.time()  # never kept


def test_not_yet_valid_intermediate_becomes_valid_when_the_verifier_is_rebuilt(
    monkeypatch: pytest.MonkeyPatch, root: Issued
) -> None:
    start = time.time()
    soon = custom(root, "soon", ca=True, not_before=dt.datetime.fromtimestamp(start + 30, dt.UTC))
    child = custom(soon, "child")
    v = CertificateValidator(material([root]))
    clock = [start]
    monkeypatch.setattr(validation.time, "time", lambda: clock[0])
    early = v.validate(ders(child, soon))
    assert early.acceptances == {}
    assert early.reason in ("a CA certificate of its chain is expired or not yet valid", "not issued by a trusted CA")
    clock[0] = start + 61  # the refusal expired when the intermediate became valid, and the verifier's time moved on
    assert v.validate(ders(child, soon)).accepted_for("open") is not None


def test_facts_about_a_presented_intermediate_are_reused_consistently(root: Issued) -> None:
    inter = custom(root, "resent intermediate", ca=True, not_after=NOW + dt.timedelta(minutes=30))
    revoked_inter = custom(root, "revoked intermediate", ca=True)
    crl = make_crl(root, [revoked_inter.cert.serial_number])
    v = CertificateValidator(material([root], crls=[crl]))
    for i in range(3):  # the second and third use what the first learnt about the intermediates
        ok = v.validate(ders(custom(inter, f"leaf {i}"), inter))
        assert ok.accepted_for("open") is not None
        assert ok.valid_until == inter.cert.not_valid_after_utc.timestamp()
        refused = v.validate(ders(custom(revoked_inter, f"leaf {i}"), revoked_inter))
        assert refused.reason == "an issuing CA certificate of its chain is revoked" and refused.acceptances == {}


def test_the_verifier_time_is_never_ahead_of_the_clock(monkeypatch: pytest.MonkeyPatch, root: Issued) -> None:
    start = time.time()
    soon = custom(root, "valid in 5 s", not_before=dt.datetime.fromtimestamp(start + 5, dt.UTC))
    v = CertificateValidator(material([root]))
    clock = [start + 10]
    monkeypatch.setattr(validation.time, "time", lambda: clock[0])
    assert v.validate(ders(soon), cache_key=b"a").accepted_for("open") is not None
    clock[0] = start  # the clock was set back: the verifier built at start + 10 must not be used
    assert v.validate(ders(soon), cache_key=b"b").reason == "not yet valid"


def test_a_leaf_in_the_truststore_is_trusted_itself_but_still_checked(root: Issued) -> None:
    selfie, server = issue_client(None, "selfie"), issue_server(root)
    v = CertificateValidator(material([selfie, server]))
    assert v.validate(ders(selfie)).accepted_for("open") == Acceptance("open", None, "Unlimited", "truststore")
    assert v.validate(ders(server)).reason == "lacks the clientAuth extended key usage"
    assert (
        CertificateValidator(material([root])).validate(ders(root)).reason
        == "is a CA certificate, not a client certificate"
    )


def test_a_dropped_verdict_and_its_principals_are_freed_without_the_garbage_collector(
    root: Issued, leaf: Issued, inter: Issued
) -> None:
    import gc
    import weakref

    from asgi_apim.certs.middleware import certificate_principal
    from asgi_apim.certs.resolver import CertificateOutcome

    v = CertificateValidator(material([root]))
    verdict = v.validate(ders(leaf, inter), cache=False)
    principal = certificate_principal(CertificateOutcome("header", verdict), "open")
    assert principal is not None and principal is certificate_principal(CertificateOutcome("header", verdict), "open")
    # the principal's lazy identity is the verdict's
    assert (principal.subject, principal.throttle_key) == (verdict.subject, f"cert:{verdict.spki_sha256}")
    assert principal.subject.startswith("CN=alice")
    alive = weakref.ref(verdict), weakref.ref(principal)
    gc.disable()
    try:
        del verdict, principal
        assert [ref() for ref in alive] == [None, None]  # freed by reference counting: no cycle
    finally:
        gc.enable()


# the two-certificate chain (a leaf and the anchor that issued it) and the chain-end memo


def _decided(verdict: CertificateVerdict) -> tuple:
    return dict(verdict.acceptances), verdict.reason, dict(verdict.api_reasons), verdict.der, verdict.not_after


def test_two_certificate_chain_is_verified_and_checked(monkeypatch: pytest.MonkeyPatch, root: Issued) -> None:
    """A leaf issued by a truststore certificate: accepted without the generic chain facts, but
    cryptography's verifier runs for every leaf and each refusal still stands."""
    m = material([root], registrations=[reg("pets", "clients", root)], apis=("pets", "open"), tiers=OPEN)
    good, sibling = issue_client(root, "good"), issue_client(root, "sibling")
    revoked = issue_client(root, "revoked")
    v = CertificateValidator(dataclasses.replace(m, crls=(make_crl(root, [revoked.cert.serial_number]),)))
    calls: list[int] = []
    real_verify = v._verifier.verify

    def verify(leaf, intermediates, now):  # type: ignore[no-untyped-def]
        calls.append(leaf.serial_number)
        return real_verify(leaf, intermediates, now)

    def no_facts(*args):  # type: ignore[no-untyped-def]
        raise AssertionError("the two-certificate chain went through _facts")

    monkeypatch.setattr(v._verifier, "verify", verify)
    monkeypatch.setattr(v, "_facts", no_facts)
    verdict = v.validate(ders(good))
    assert verdict.reason is None
    assert verdict.accepted_for("pets") == Acceptance("pets", "clients", "Gold", "ca")
    assert verdict.accepted_for("open") == Acceptance("open", None, "Unlimited", "truststore")
    assert verdict.valid_until <= min(good.cert.not_valid_after_utc.timestamp(), time.time() + validation.CACHE_MAX_TTL)
    # the memo of the chain's end is warm: every refusal below must still be found
    assert v.validate(ders(sibling)).accepted_for("pets") is not None
    assert v.validate(ders(revoked)).reason == REVOKED
    expired = issue_client(
        root, "expired", not_before=NOW - dt.timedelta(days=10), not_after=NOW - dt.timedelta(days=1)
    )
    assert v.validate(ders(expired)).reason == EXPIRED
    server_only = issue_client(root, "server-only", eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    assert v.validate(ders(server_only)).reason == "lacks the clientAuth extended key usage"
    stranger = issue_client(make_ca("stranger"), "mallory")
    assert v.validate(ders(stranger)).reason == "not issued by a trusted CA"
    for refused in (revoked, expired, server_only, stranger):
        assert v.validate(ders(refused)).acceptances == {}
    assert calls[:3] == [good.cert.serial_number, sibling.cert.serial_number, revoked.cert.serial_number]
    assert len(calls) >= 6


def test_two_certificate_chain_ends_with_its_anchor(root: Issued) -> None:
    short = custom(None, "short-lived root", ca=True, not_after=NOW + dt.timedelta(days=2))
    leaf = custom(short, "leaf", not_after=NOW + dt.timedelta(days=20))
    verdict = CertificateValidator(material([short])).validate(ders(leaf), cache=False)
    assert verdict.accepted_for("open") is not None
    assert verdict.valid_until <= short.cert.not_valid_after_utc.timestamp()


def test_chain_end_memo_gives_each_leaf_its_own_identity(root: Issued, inter: Issued) -> None:
    v = CertificateValidator(material([root], registrations=[reg("pets", "clients", root)], apis=("pets", "open")))
    alice, bob = issue_client(root, "alice"), issue_client(root, "bob")
    first, second = v.validate(ders(alice)), v.validate(ders(bob))
    assert len(v._ends) == 1  # the second verdict came from the memo
    assert first.acceptances is second.acceptances
    assert (first.der, first.subject, first.spki_sha256) == (
        alice.der(),
        "CN=alice,O=asgi-apim dev",
        public_key_sha256(alice.cert),
    )
    assert (second.der, second.subject, second.spki_sha256) == (
        bob.der(),
        "CN=bob,O=asgi-apim dev",
        public_key_sha256(bob.cert),
    )
    assert first.principals is not second.principals
    # a longer chain has an end of its own
    carol = issue_client(inter, "carol")
    assert v.validate(ders(carol, inter)).accepted_for("pets") is not None and len(v._ends) == 2


@pytest.mark.parametrize("birds", [False, True], ids=["by-the-end", "a-scope-of-its-own"])
def test_chain_end_memo_decides_as_a_fresh_validator(root: Issued, inter: Issued, birds: bool) -> None:
    """Leaves of every kind through one validator (whose memo fills) are decided exactly as by a
    new validator each: exact registrations, revocations, other CAs and APIs that need a chain
    of their own are not taken from the memo."""
    exact = issue_client(root, "exact")
    revoked = issue_client(root, "revoked")
    by_inter = issue_client(inter, "by-inter")
    inter_revoked = issue_client(inter, "inter-revoked")
    m = TrustMaterial(
        (root.cert,),
        (make_crl(root, [revoked.cert.serial_number]), make_crl(inter, [inter_revoked.cert.serial_number])),
        (reg("pets", "clients", root), reg("pets", "exact", exact), *([reg("birds", "inter", inter)] if birds else [])),
        1,
        b"d",
        ("pets", "birds", "open", "closed"),
        {"open": "Unlimited"},
    )
    leaves = [
        issue_client(root, "a"),
        exact,
        revoked,
        issue_client(root, "b"),
        (by_inter, inter),
        issue_client(root, "c"),
        (inter_revoked, inter),
        (issue_client(inter, "d"), inter),
        issue_client(make_ca("other"), "e"),
        exact,
    ]
    shared = CertificateValidator(m)
    for item in leaves * 2:
        chain = ders(*item) if isinstance(item, tuple) else ders(item)
        assert _decided(shared.validate(chain, cache=False)) == _decided(
            CertificateValidator(m).validate(chain, cache=False)
        )
    assert (
        bool(shared._ends) is not birds
    )  # "birds" needs a chain to the intermediate: no verdict rests on the end alone


def test_chain_end_memo_is_bounded(monkeypatch: pytest.MonkeyPatch, root: Issued) -> None:
    monkeypatch.setattr(validation, "_MEMO_SIZE", 2)
    cas = [make_ca(f"ca {i}") for i in range(4)]
    v = CertificateValidator(material(cas))
    for ca in cas:
        assert v.validate(ders(issue_client(ca, "x")), cache=False).accepted_for("open") is not None
        assert len(v._ends) <= 2
