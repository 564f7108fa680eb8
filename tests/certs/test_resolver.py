"""One path for both sources: the TLS extension and a trusted proxy's header."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization

from asgi_apim.certs import resolver as resolver_mod
from asgi_apim.certs.pki import Issued, issue_client, make_ca
from asgi_apim.certs.resolver import ABSENT, CertificateResolver
from asgi_apim.certs.truststore import TrustReloader
from asgi_apim.config import load_config
from asgi_apim.errors import CertificateHeaderError, CertificateRejected
from tests.asgi import make_scope

HDR = "x-wso2-client-certificate"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Issued]:
    ca = make_ca("Clients CA")
    proxy_ca = make_ca("Proxy CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    (tmp_path / "proxy-ca.pem").write_bytes(proxy_ca.cert_pem())
    return {
        "ca": ca,
        "client": issue_client(ca, "client"),
        "proxy": issue_client(proxy_ca, "nginx"),
        "stranger": issue_client(make_ca("Nobody"), "stranger"),
    }


def build(tmp_path: Path, extra: str = "") -> CertificateResolver:
    (tmp_path / "deployment.toml").write_text(
        f'[mutual_ssl]\ntruststore = ["ca.pem"]\ntrusted_proxies = ["127.0.0.1/32"]\n{extra}\n'
        '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\nmutual_ssl = "mandatory"\n'
        '[[apis.certificates]]\nalias = "clients"\ncertificate = "ca.pem"\ntier = "Gold"\n'
    )
    cfg = load_config(tmp_path / "deployment.toml")
    return CertificateResolver(TrustReloader(cfg.mutual_ssl, cfg.apis), cfg.mutual_ssl)


def header(cert: Issued) -> str:
    return quote(cert.cert_pem().decode(), safe="")


def tls(cert: Issued) -> dict:
    return {"tls": {"client_cert_chain": [cert.cert_pem().decode()], "server_cert": None}}


def test_both_sources_reach_the_same_verdict(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = build(tmp_path)
    from_header = r.resolve(make_scope("GET", "/pets", [(HDR, header(pki["client"]))]))
    from_tls = r.resolve(make_scope("GET", "/pets", extensions=tls(pki["client"])))
    assert from_header.source == "header" and from_tls.source == "tls"
    for outcome in (from_header, from_tls):
        a = outcome.verdict.acceptances["pets"]
        assert (a.alias, a.tier) == ("clients", "Gold")
    assert from_header.verdict.sha256 == from_tls.verdict.sha256


def test_no_certificate_is_absent(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = build(tmp_path)
    assert r.resolve(make_scope("GET", "/pets")) is ABSENT
    assert r.resolve(make_scope("GET", "/pets", [(HDR, "")])) is ABSENT
    assert r.resolve(make_scope("GET", "/pets", [(HDR, "(null)")])) is ABSENT


def test_header_from_untrusted_peer_is_never_believed(
    tmp_path: Path, pki: dict[str, Issued], caplog: pytest.LogCaptureFixture
) -> None:
    r = build(tmp_path)
    caplog.set_level(logging.WARNING, "asgi_apim.certs")
    scope = make_scope(
        "GET", "/pets", [(HDR, header(pki["client"])), ("x-forwarded-for", "127.0.0.1")], client=("10.9.9.9", 1)
    )
    assert r.resolve(scope) is ABSENT
    assert "untrusted peer 10.9.9.9" in caplog.text
    # the TLS connection's own certificate still counts
    scope["extensions"] = tls(pki["client"])
    assert r.resolve(scope).source == "tls"


def test_a_header_sent_twice_is_refused_from_a_trusted_proxy_and_ignored_from_anyone_else(
    tmp_path: Path, pki: dict[str, Issued]
) -> None:
    r = build(tmp_path)
    twice = [(HDR, header(pki["client"])), (HDR, header(pki["stranger"]))]
    assert isinstance(r.resolve(make_scope("GET", "/pets", twice)).error, CertificateHeaderError)
    assert r.resolve(make_scope("GET", "/pets", twice, client=("10.9.9.9", 1))) is ABSENT


def test_rewritten_client_does_not_make_a_peer_trusted(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = build(tmp_path)
    # uvicorn's proxy-headers middleware set client from X-Forwarded-For; the socket peer was 10.9.9.9
    scope = make_scope("GET", "/pets", [(HDR, header(pki["client"]))], client=("127.0.0.1", 1))
    scope["asgi_apim.peer"] = ("10.9.9.9", 1)
    assert r.resolve(scope) is ABSENT


def test_header_twice_is_refused(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = build(tmp_path)
    out = r.resolve(make_scope("GET", "/pets", [(HDR, header(pki["client"])), (HDR, header(pki["client"]))]))
    assert isinstance(out.error, CertificateHeaderError)


def test_garbage_header_is_a_clean_error(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = build(tmp_path)
    out = r.resolve(make_scope("GET", "/pets", [(HDR, "-----BEGIN%20CERTIFICATE-----garbage")]))
    assert out.error is not None and out.error.status == 400


def test_cache_hit_does_not_parse_again(
    tmp_path: Path, pki: dict[str, Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    r = build(tmp_path)
    scope = make_scope("GET", "/pets", [(HDR, header(pki["client"]))])
    first = r.resolve(scope)
    calls = []
    monkeypatch.setattr(resolver_mod, "parse_certificate_header", lambda *a: calls.append(a) or ())
    assert r.resolve(make_scope("GET", "/pets", [(HDR, header(pki["client"]))])) is first
    assert calls == []


def test_values_that_share_the_hint_slice_are_told_apart(
    tmp_path: Path, pki: dict[str, Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cached-header hint is keyed by a slice of the value but compared whole: a value that
    only differs after the slice gets its own outcome, and neither is parsed again."""
    r = build(tmp_path)
    good = header(pki["client"])
    bad = good + quote("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", safe="")
    assert good.encode()[resolver_mod._HINT] == bad.encode()[resolver_mod._HINT]
    resolve = lambda value: r.resolve(make_scope("GET", "/pets", [(HDR, value)]))  # noqa: E731
    accepted, refused = resolve(good), resolve(bad)
    assert "pets" in accepted.verdict.acceptances
    assert refused.verdict is None and isinstance(refused.error, CertificateHeaderError)
    calls = []
    monkeypatch.setattr(resolver_mod, "parse_certificate_header", lambda *a: calls.append(a) or ())
    for _ in range(2):
        assert resolve(good) is accepted
        assert resolve(bad) is refused
    assert calls == []


def test_a_hint_does_not_outlive_its_certificate(
    tmp_path: Path, pki: dict[str, Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt
    import time

    r = build(tmp_path)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    value = header(issue_client(pki["ca"], "short-lived", not_after=soon))
    resolve = lambda: r.resolve(make_scope("GET", "/pets", [(HDR, value)]))  # noqa: E731
    assert "pets" in resolve().verdict.acceptances
    assert "pets" in resolve().verdict.acceptances  # from the hint
    later = soon.timestamp() + 5
    monkeypatch.setattr(time, "time", lambda: later)
    outcome = resolve()
    assert "pets" not in outcome.verdict.acceptances and outcome.verdict.reason == "expired"


def test_cache_entries_never_outlive_the_certificate(
    tmp_path: Path, pki: dict[str, Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt

    r = build(tmp_path)
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    short = issue_client(pki["ca"], "short-lived", not_after=soon)
    r.resolve(make_scope("GET", "/pets", [(HDR, header(short))]))
    ((_, expires),) = [v for k, v in r._cache.items()]
    assert expires <= soon.timestamp() + 1


def test_cached_verdict_ends_when_a_presented_intermediate_expires(
    tmp_path: Path, pki: dict[str, Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt
    import time

    from asgi_apim.certs import validation
    from tests.certs.test_validation import custom

    r = build(tmp_path)
    start = time.time()
    inter = custom(
        pki["ca"], "short-lived intermediate", ca=True, not_after=dt.datetime.fromtimestamp(start + 5, dt.UTC)
    )
    leaf = custom(inter, "long-lived leaf")  # valid for 30 days
    inter_end = inter.cert.not_valid_after_utc.timestamp()
    clock = [start]
    monkeypatch.setattr(validation.time, "time", lambda: clock[0])  # the one time module: the resolver's clock too
    h = [(HDR, quote((leaf.cert_pem() + inter.cert_pem()).decode(), safe=""))]
    first = r.resolve(make_scope("GET", "/pets", h))
    assert first.verdict.acceptances["pets"].how == "ca"
    assert first.verdict.valid_until == inter_end < leaf.cert.not_valid_after_utc.timestamp()
    ((_, expires),) = r._cache.values()
    assert expires == inter_end
    clock[0] = inter_end - 1
    assert r.resolve(make_scope("GET", "/pets", h)) is first
    clock[0] = inter_end + 1  # the verifier, built at start, still has the intermediate's validity
    after = r.resolve(make_scope("GET", "/pets", h))
    assert after is not first and after.verdict.acceptances == {}
    assert after.verdict.reason == "a CA certificate of its chain is expired or not yet valid"


def test_new_truststore_generation_drops_the_cache(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = build(tmp_path)
    scope = lambda: make_scope("GET", "/pets", [(HDR, header(pki["client"]))])  # noqa: E731
    assert "pets" in r.resolve(scope()).verdict.acceptances
    (tmp_path / "ca.pem").write_bytes(make_ca("Replacement").cert_pem())
    assert r.trust.check()
    assert "pets" not in r.resolve(scope()).verdict.acceptances


def test_a_new_generation_s_validator_is_built_in_the_reloader_s_thread(
    tmp_path: Path, pki: dict[str, Issued], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request after a reload uses the validator `TrustReloader.check` prepared in its
    thread: with 100 000 registrations, building it on the event loop stalled every request."""
    import threading

    r = build(tmp_path)
    scope = lambda: make_scope("GET", "/pets", [(HDR, header(pki["client"]))])  # noqa: E731
    assert "pets" in r.resolve(scope()).verdict.acceptances
    built: list[str] = []
    real = resolver_mod.CertificateValidator

    def counting(*args: object, **kwargs: object) -> object:
        built.append(threading.current_thread().name)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(resolver_mod, "CertificateValidator", counting)
    (tmp_path / "ca.pem").write_bytes(make_ca("Replacement").cert_pem())
    reloader = threading.Thread(target=r.trust.check, name="reloader")
    reloader.start()
    reloader.join()
    assert built == ["reloader"]
    assert "pets" not in r.resolve(scope()).verdict.acceptances  # the new generation decides
    assert built == ["reloader"], "nothing built on the request path"


def test_relay_model_requires_a_trusted_proxy_certificate(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = build(tmp_path, "enable_client_validation = true")
    h = [(HDR, header(pki["client"]))]
    out = r.resolve(make_scope("GET", "/pets", h))
    assert isinstance(out.error, CertificateRejected) and "no TLS client certificate" in out.error.detail
    out = r.resolve(make_scope("GET", "/pets", h, extensions=tls(pki["proxy"])))
    assert isinstance(out.error, CertificateRejected) and "not trusted" in out.error.detail
    # the proxy's CA trusted too: the header is believed
    (tmp_path / "deployment.toml").write_text(
        (tmp_path / "deployment.toml")
        .read_text()
        .replace('truststore = ["ca.pem"]', 'truststore = ["ca.pem", "proxy-ca.pem"]')
    )
    cfg = load_config(tmp_path / "deployment.toml")
    r = CertificateResolver(TrustReloader(cfg.mutual_ssl, cfg.apis), cfg.mutual_ssl)
    out = r.resolve(make_scope("GET", "/pets", h, extensions=tls(pki["proxy"])))
    assert out.source == "header" and "pets" in out.verdict.acceptances


def test_in_the_relay_model_a_trusted_proxy_s_own_certificate_is_never_its_client_s(
    tmp_path: Path, pki: dict[str, Issued]
) -> None:
    # nginx presents its own certificate (issued by a CA the API trusts) and sends no header for
    # a client that has none: the request has no client certificate
    r = build(tmp_path, "enable_client_validation = true")
    proxy_signed_by_clients_ca = issue_client(pki["ca"], "nginx")
    assert r.resolve(make_scope("GET", "/pets", extensions=tls(proxy_signed_by_clients_ca))) is ABSENT
    # a client connecting directly from elsewhere: its TLS certificate is its own
    direct = r.resolve(make_scope("GET", "/pets", extensions=tls(pki["client"]), client=("203.0.113.5", 1)))
    assert direct.source == "tls" and "pets" in direct.verdict.acceptances
    # without the relay model a trusted address's TLS certificate is its own (a client on loopback)
    plain = build(tmp_path)
    assert "pets" in plain.resolve(make_scope("GET", "/pets", extensions=tls(pki["client"]))).verdict.acceptances


def test_stranger_is_refused_with_a_reason(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = build(tmp_path)
    out = r.resolve(make_scope("GET", "/pets", [(HDR, header(pki["stranger"]))]))
    assert out.verdict.acceptances == {} or "pets" not in out.verdict.acceptances
    assert out.verdict.reason


def test_reject_ttl_is_short(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = build(tmp_path)
    r.resolve(make_scope("GET", "/pets", [(HDR, header(pki["stranger"]))]))
    ((_, expires),) = r._cache.values()
    import time

    assert expires <= time.time() + resolver_mod._REJECT_TTL + 1


def test_a_crl_reload_is_not_answered_from_the_chain_end_memo(tmp_path: Path, pki: dict[str, Issued]) -> None:
    """Leaves of one CA share the validator's memo of what that CA's chains are accepted for; a
    reloaded CRL is a new truststore generation, a new validator, and every leaf is checked anew."""
    from asgi_apim.certs.pki import make_crl

    ca = pki["ca"]
    alice, bob = issue_client(ca, "alice"), issue_client(ca, "bob")
    (tmp_path / "ca.crl").write_bytes(make_crl(ca, []).public_bytes(serialization.Encoding.PEM))
    r = build(tmp_path, 'crl = ["ca.crl"]')
    scope = lambda cert: make_scope("GET", "/pets", [(HDR, header(cert))])  # noqa: E731
    first = r.resolve(scope(alice))
    assert "pets" in first.verdict.acceptances and r._validator._ends
    old = r._validator
    (tmp_path / "ca.crl").write_bytes(
        make_crl(ca, [bob.cert.serial_number, alice.cert.serial_number]).public_bytes(serialization.Encoding.PEM)
    )
    assert r.trust.check()
    for cert in (bob, alice):
        out = r.resolve(scope(cert))
        assert out.verdict.reason == "revoked" and out.verdict.acceptances == {}
    assert r._validator is not old and not r._validator._ends  # refusals are not memoised either
    carol = r.resolve(scope(issue_client(ca, "carol")))
    assert "pets" in carol.verdict.acceptances and "CN=carol" in carol.verdict.subject
    # a new truststore: the CA's memoised acceptance is not reused
    (tmp_path / "ca.pem").write_bytes(make_ca("Replacement").cert_pem())
    assert r.trust.check()
    assert r.resolve(scope(issue_client(ca, "dave"))).verdict.acceptances == {}


def test_an_uncached_header_is_kept_in_both_caches(tmp_path: Path, pki: dict[str, Issued]) -> None:
    r = build(tmp_path)
    raw = header(pki["client"]).encode()
    out = r.resolve(make_scope("GET", "/pets", [(HDR, raw.decode())]))
    assert type(out) is resolver_mod.CertificateOutcome and out.source == "header" and out.error is None and out.present
    assert r._cache[raw][0] is out and r._hints[raw[resolver_mod._HINT]][:2] == (raw, out)
    assert r._cache[raw][1] == r._hints[raw[resolver_mod._HINT]][2] <= out.verdict.valid_until
    bad = r.resolve(make_scope("GET", "/pets", [(HDR, "%2Dnot a certificate")]))
    assert (
        type(bad) is resolver_mod.CertificateOutcome
        and isinstance(bad.error, CertificateHeaderError)
        and bad.verdict is None
    )
    assert len(r._cache) == 2 and len(r._hints) == 1
