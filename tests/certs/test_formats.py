import base64
import hashlib
import itertools
from urllib.parse import quote, quote_plus, unquote, unquote_to_bytes

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgi_apim.certs.formats import (
    FORMATS,
    MAX_CERTIFICATES,
    MAX_HEADER_BYTES,
    _from_pem,
    _from_url_pem,
    _pem_blocks,
    _url_decode,
    parse_certificate_header,
    pem_chain_to_der,
)
from asgi_apim.certs.pki import Issued, issue_client, make_ca
from asgi_apim.errors import CertificateHeaderError

ROOT = make_ca("formats root")
ROOT_ESCAPED = quote(ROOT.cert_pem().decode(), safe="")
INTERMEDIATE = make_ca("formats intermediate", issuer=ROOT)
LEAF = issue_client(INTERMEDIATE, "formats-leaf")
CHAIN: tuple[Issued, ...] = (LEAF, INTERMEDIATE, ROOT)
DERS = tuple(c.der() for c in CHAIN)
PEMS = tuple(c.cert_pem().decode() for c in CHAIN)
PEM_CHAIN = "".join(PEMS)

HYPO = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def b64(der: bytes) -> str:
    return base64.b64encode(der).decode()


def sf(der: bytes) -> str:
    return f":{b64(der)}:"


def malformed(value: object, fmt: str = "auto") -> str:
    with pytest.raises(CertificateHeaderError) as info:
        parse_certificate_header(value, fmt)  # type: ignore[arg-type]
    return info.value.detail


def test_certificates_are_real() -> None:
    leaf, inter, root = (x509.load_der_x509_certificate(d) for d in DERS)
    leaf.verify_directly_issued_by(inter)
    inter.verify_directly_issued_by(root)


# url_pem ------------------------------------------------------------------


@pytest.mark.parametrize("safe", ["", "/"], ids=["nginx-all-escaped", "quote-default"])
@pytest.mark.parametrize("fmt", ["url_pem", "auto"])
def test_url_pem_nginx_escaping(safe: str, fmt: str) -> None:
    single = quote(PEMS[0], safe=safe)
    assert "%0A" in single and "%20" in single
    assert parse_certificate_header(single, fmt) == DERS[:1]
    assert parse_certificate_header(quote(PEM_CHAIN, safe=safe), fmt) == DERS
    assert parse_certificate_header(quote(PEM_CHAIN, safe=safe).encode("latin-1"), fmt) == DERS


@pytest.mark.parametrize("fmt", ["url_pem", "auto"])
def test_url_pem_alb_raw_plus_and_equals(fmt: str) -> None:
    assert "+" in PEM_CHAIN  # otherwise this test would not tell unquote from unquote_plus
    value = quote(PEM_CHAIN, safe="+=/")
    assert "+" in value and "%2B" not in value
    assert parse_certificate_header(value, fmt) == DERS


@pytest.mark.parametrize("fmt", ["url_pem", "auto"])
def test_url_pem_form_encoded_by_java(fmt: str) -> None:
    value = quote_plus(PEM_CHAIN)
    assert value.startswith("-----BEGIN+CERTIFICATE-----%0A")
    assert parse_certificate_header(value, fmt) == DERS


@pytest.mark.parametrize("escape", ["%C3%A9", "%FF", "%00", "%25"])
@pytest.mark.parametrize("fmt", ["url_pem", "auto"])
def test_url_pem_escapes_that_decode_to_non_base64(escape: str, fmt: str) -> None:
    value = quote(PEMS[0], safe="").replace("%0A", "%0A" + escape, 3)
    assert "base64" in malformed(value, fmt)
    assert "base64" in malformed(f"Cert={value}", "xfcc")


# pem ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "transform",
    [
        lambda p: p,
        lambda p: p.replace("\n", " "),
        lambda p: p.replace("\n", "\n\t"),
        lambda p: p.replace("\n", "\t"),
        lambda p: p.replace("\n", "\r\n"),
    ],
    ids=["plain", "apache-spaces", "tab-folded", "tabs", "crlf"],
)
@pytest.mark.parametrize("fmt", ["pem", "url_pem", "auto"])
def test_pem_variants(transform, fmt: str) -> None:
    assert parse_certificate_header(transform(PEMS[0]), fmt) == DERS[:1]
    assert parse_certificate_header(transform(PEM_CHAIN), fmt) == DERS


def test_pem_rejects_text_around_and_unterminated_blocks() -> None:
    assert "outside" in malformed("subject=CN=x\n" + PEMS[0], "pem")
    assert "outside" in malformed(PEMS[0] + "trailer", "pem")
    assert "outside" in malformed(PEMS[0][:-30], "pem")
    assert "base64" in malformed(PEMS[0].replace("M", "*", 2), "pem")


# base64_der ---------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["base64_der", "auto"])
def test_base64_der_alphabets_and_padding(fmt: str) -> None:
    der = DERS[0]
    assert parse_certificate_header(b64(der), fmt) == (der,)
    assert parse_certificate_header(base64.urlsafe_b64encode(der).decode(), fmt) == (der,)
    assert parse_certificate_header(b64(der).rstrip("="), fmt) == (der,)
    assert parse_certificate_header(base64.urlsafe_b64encode(der).decode().rstrip("="), fmt) == (der,)


def test_base64_der_missing_padding_really_missing() -> None:
    candidates = (
        c.der()
        for c in itertools.chain((LEAF, INTERMEDIATE, ROOT), (issue_client(ROOT, f"p{i}") for i in itertools.count()))
    )
    unpadded = next(d for d in candidates if len(d) % 3)
    value = b64(unpadded).rstrip("=")
    assert len(value) % 4
    assert parse_certificate_header(value, "base64_der") == (unpadded,)


@pytest.mark.parametrize("sep", [",", ", ", " ,\t"])
@pytest.mark.parametrize("fmt", ["base64_der", "auto"])
def test_traefik_comma_chain(sep: str, fmt: str) -> None:
    assert parse_certificate_header(sep.join(b64(d) for d in DERS), fmt) == DERS


def test_base64_der_empty_chain_member() -> None:
    assert "certificate 2" in malformed(f"{b64(DERS[0])},,{b64(DERS[1])}", "base64_der")


# DER structure ------------------------------------------------------------


@pytest.mark.parametrize(
    "der",
    [
        b"\x02\x01\x00",  # INTEGER, not SEQUENCE
        DERS[0] + b"\x00",  # trailing byte
        DERS[0][:-1],  # truncated
        b"\x30\x80" + DERS[0][2:] + b"\x00\x00",  # indefinite length (BER)
        b"\x30\x81\x05" + b"\x00" * 5,  # non-minimal length
        b"\x30\x82\x00\x05" + b"\x00" * 5,  # leading zero length octet
        b"\x30\x85\x00\x00\x00\x00\x01\x00",  # length of length too long
        b"\x30",
        b"",
    ],
)
@pytest.mark.parametrize("fmt", ["base64_der", "rfc9440", "pem"])
def test_structural_der_check(der: bytes, fmt: str) -> None:
    value = {
        "base64_der": b64(der) or "AA",
        "rfc9440": f":{b64(der)}:",
        "pem": f"-----BEGIN CERTIFICATE-----\n{b64(der)}\n-----END CERTIFICATE-----\n",
    }[fmt]
    malformed(value, fmt)


def test_short_form_der_is_accepted() -> None:
    tiny = b"\x30\x03\x02\x01\x00"
    assert parse_certificate_header(b64(tiny), "base64_der") == (tiny,)


# xfcc ---------------------------------------------------------------------


def xfcc_cert(issued: Issued = LEAF) -> str:
    return quote(issued.cert_pem().decode(), safe="")


def test_xfcc_cert_with_hash_and_other_keys() -> None:
    digest = hashlib.sha256(DERS[0]).hexdigest()
    value = f'By=spiffe://cluster.local/ns/a/sa/b;Hash={digest};Cert="{xfcc_cert()}";Subject="CN=leaf,O=x";URI=spiffe://c/d;DNS=a.example;DNS=b.example'
    assert parse_certificate_header(value, "xfcc") == DERS[:1]
    assert parse_certificate_header(value, "auto") == DERS[:1]
    assert parse_certificate_header(value.replace(digest, digest.upper()), "xfcc") == DERS[:1]


def test_xfcc_chain_preferred_and_checked_against_cert() -> None:
    chain = quote(PEM_CHAIN, safe="")
    assert parse_certificate_header(f"Chain={chain}", "xfcc") == DERS
    assert parse_certificate_header(f"Cert={xfcc_cert()};Chain={chain}", "auto") == DERS
    assert "Chain" in malformed(f"Cert={xfcc_cert(ROOT)};Chain={chain}", "xfcc")


def test_xfcc_hash_mismatch() -> None:
    wrong = hashlib.sha256(DERS[1]).hexdigest()
    assert "Hash" in malformed(f"Hash={wrong};Cert={xfcc_cert()}", "xfcc")
    assert "Hash" in malformed(f"Hash=nothex;Cert={xfcc_cert()}", "auto")


def test_xfcc_uses_last_element() -> None:
    other = issue_client(ROOT, "far-away")
    quoted_subject = r'Subject="CN=x,O=\"a;b,c\""'
    value = (
        f"By=spiffe://first;Cert={xfcc_cert(other)};{quoted_subject},"
        f' By=spiffe://second;Hash={hashlib.sha256(DERS[0]).hexdigest()};Cert="{xfcc_cert()}";{quoted_subject};DNS=x'
    )
    assert parse_certificate_header(value, "xfcc") == DERS[:1]
    assert parse_certificate_header(f"Cert={xfcc_cert()},By=spiffe://x;URI=spiffe://y", "xfcc") == ()


@pytest.mark.parametrize(
    "value",
    [
        'By=spiffe://a;Subject="CN=x',  # unterminated quote
        "By=spiffe://a;;Cert=x",
        "Cert=abc,",
        "By=a,,By=b",
        "By",
        "Cert=%ZZ",
        'Cert=a"b',
        "Hash=00;Hash=00;Cert=x",
    ],
)
def test_xfcc_malformed(value: str) -> None:
    malformed(value, "xfcc")


def test_xfcc_duplicate_cert_and_multi_cert_in_cert() -> None:
    assert "repeats" in malformed(f"Cert={xfcc_cert()};Cert={xfcc_cert()}", "xfcc")
    assert "more than one" in malformed(f"Cert={quote(PEM_CHAIN, safe='')}", "xfcc")


# rfc9440 ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["rfc9440", "auto"])
def test_rfc9440_single_and_list(fmt: str) -> None:
    assert parse_certificate_header(sf(DERS[0]), fmt) == DERS[:1]
    assert parse_certificate_header(", ".join(sf(d) for d in DERS), fmt) == DERS
    assert parse_certificate_header(",".join(sf(d) for d in DERS).encode(), fmt) == DERS
    assert parse_certificate_header(":" + b64(DERS[0]).rstrip("=") + ":", fmt) == DERS[:1]


@pytest.mark.parametrize(
    "value",
    [
        f"{sf(DERS[0])};a=1",
        f"{sf(DERS[0])},",
        f"{sf(DERS[0])} {sf(DERS[1])}",
        ":" + base64.urlsafe_b64encode(b"\xfb\xff" * 40).decode() + ":",
        ":abc",
        "::",
    ],
)
def test_rfc9440_malformed(value: str) -> None:
    malformed(value, "rfc9440")


# absent, limits, garbage ---------------------------------------------------


@pytest.mark.parametrize("value", ["", "   ", "\t\r\n", "(null)", "NONE", "none", "-", " - ", b"", b"(null)"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_no_certificate(value: str | bytes, fmt: str) -> None:
    assert parse_certificate_header(value, fmt) == ()


def encodings(ders: tuple[bytes, ...]) -> dict[str, str]:
    pem = "".join(_pem(d) for d in ders)
    return {
        "url_pem": quote(pem, safe=""),
        "pem": pem.replace("\n", " "),
        "base64_der": ",".join(b64(d) for d in ders),
        "xfcc": f"By=spiffe://x;Chain={quote(pem, safe='')}",
        "rfc9440": ", ".join(sf(d) for d in ders),
    }


def _pem(der: bytes) -> str:
    body = b64(der)
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize("fmt", ["url_pem", "pem", "base64_der", "xfcc", "rfc9440"])
def test_certificate_count_limit(fmt: str) -> None:
    ten = (DERS * 4)[:MAX_CERTIFICATES]
    assert parse_certificate_header(encodings(ten)[fmt], fmt) == ten
    assert parse_certificate_header(encodings(ten)[fmt], "auto") == ten
    eleven = (DERS * 4)[: MAX_CERTIFICATES + 1]
    assert "more than 10" in malformed(encodings(eleven)[fmt], fmt)
    assert "more than 10" in malformed(encodings(eleven)[fmt], "auto")


@pytest.mark.parametrize("fmt", FORMATS)
def test_size_limit(fmt: str) -> None:
    value = encodings(DERS[:1]).get(fmt, PEMS[0])
    at_limit = value + " " * (MAX_HEADER_BYTES - len(value))
    assert parse_certificate_header(at_limit, fmt) == DERS[:1]
    assert parse_certificate_header(at_limit.encode(), fmt) == DERS[:1]
    assert "larger than" in malformed(at_limit + " ", fmt)
    assert "larger than" in malformed((at_limit + " ").encode(), fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    "value",
    [
        "SECRETMARKER",
        "SECRETMARKER!",
        b"\xffSECRETMARKER",
        "SECRETMARKER\u00e9",
        "%SECRETMARKER%",
        "-----BEGIN CERTIFICATE-----SECRETMARKER",
        ":SECRETMARKER:",
        "Cert=SECRETMARKER",
        "MIIB" * 7,
    ],
)
def test_garbage_is_refused_without_echo(value: str | bytes, fmt: str) -> None:
    detail = malformed(value, fmt)
    assert "SECRETMARKER" not in detail and "MIIB" not in detail


@pytest.mark.parametrize("value", [None, 42, memoryview(b"x"), ["a"]])
def test_non_text_values(value: object) -> None:
    malformed(value)


def test_unknown_format_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown certificate header format"):
        parse_certificate_header(PEMS[0], "der")


# pem_chain_to_der ------------------------------------------------------------


def test_pem_chain_to_der() -> None:
    assert pem_chain_to_der(list(PEMS)) == DERS
    assert pem_chain_to_der(PEMS) == DERS
    assert pem_chain_to_der([p.encode() for p in PEMS]) == DERS  # type: ignore[misc]
    assert pem_chain_to_der([]) == ()


@pytest.mark.parametrize(
    "chain",
    [
        [PEM_CHAIN],
        [PEMS[0], "garbage"],
        [PEMS[0], ""],
        [PEMS[0], 7],
        PEMS[0],
        None,
        list(PEMS) * 4,
        [PEMS[0] + " " * MAX_HEADER_BYTES],
    ],
    ids=["two-in-one", "garbage", "empty-item", "not-text", "a-string", "none", "too-many", "too-large"],
)
def test_pem_chain_to_der_malformed(chain: object) -> None:
    with pytest.raises(CertificateHeaderError):
        pem_chain_to_der(chain)  # type: ignore[arg-type]


# properties -------------------------------------------------------------------


def check_outcome(value: object, fmt: str) -> None:
    try:
        result = parse_certificate_header(value, fmt)  # type: ignore[arg-type]
    except CertificateHeaderError as exc:
        assert exc.detail and exc.status == 400
        return
    assert isinstance(result, tuple) and len(result) <= MAX_CERTIFICATES
    for der in result:
        assert isinstance(der, bytes) and der[0] == 0x30


@pytest.mark.parametrize("fmt", FORMATS)
@HYPO
@given(value=st.binary(max_size=300))
def test_any_bytes(fmt: str, value: bytes) -> None:
    check_outcome(value, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
@HYPO
@given(value=st.text(max_size=300))
def test_any_text(fmt: str, value: str) -> None:
    check_outcome(value, fmt)


_VALID = [v for ders in (DERS[:1], DERS) for v in encodings(ders).values()]
_ALPHABET = st.sampled_from(list(':;,="\\%+/-_ \t\n()ABCMIQ0123456789=\x00\xff\u00e9'))


@st.composite
def mutated(draw: st.DrawFn) -> str:
    value = draw(st.sampled_from(_VALID))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(value)))
        j = draw(st.integers(i, min(len(value), i + 8)))
        action = draw(st.sampled_from(["delete", "insert", "replace", "truncate", "duplicate"]))
        if action == "delete":
            value = value[:i] + value[j:]
        elif action == "insert":
            value = value[:i] + draw(st.text(_ALPHABET, min_size=1, max_size=4)) + value[i:]
        elif action == "replace":
            value = value[:i] + draw(st.text(_ALPHABET, min_size=1, max_size=4)) + value[j:]
        elif action == "truncate":
            value = value[:i]
        else:
            value = value[:j] + value[i:]
    return value


@pytest.mark.parametrize("fmt", FORMATS)
@HYPO
@given(value=mutated())
def test_mutated_encodings(fmt: str, value: str) -> None:
    check_outcome(value, fmt)
    check_outcome(value.encode("utf-8"), fmt)


@HYPO
@given(chain=st.lists(st.one_of(st.text(max_size=200), st.sampled_from(_VALID + list(PEMS))), max_size=4))
def test_pem_chain_property(chain: list[str]) -> None:
    try:
        result = pem_chain_to_der(chain)
    except CertificateHeaderError:
        return
    assert len(result) == len(chain) and all(d[0] == 0x30 for d in result)


_ESCAPE_PIECES = st.sampled_from(
    ["%0A", "%0a", "%0D", "%20", "%2B", "%2b", "%2F", "%3D", "%25", "%2D", "%", "%2", "%zz", "%E2%82%AC", "\u20ac"]
)


def _outcome(parse, text):  # type: ignore[no-untyped-def]
    try:
        return parse(text)
    except CertificateHeaderError:
        return "refused"


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(_ESCAPE_PIECES, st.text(max_size=6), st.sampled_from([ROOT_ESCAPED[:200], ROOT_ESCAPED[200:]])),
        max_size=12,
    )
)
def test_url_pem_decodes_as_unquote_would(pieces: list[str]) -> None:
    """The bytes path (unquote_to_bytes, bytes PEM) decides exactly as unquote + the text PEM parser."""
    text = "".join(pieces)
    assert _outcome(_from_url_pem, text) == _outcome(_from_pem, unquote(text))


def test_url_pem_of_a_real_header() -> None:
    assert _from_url_pem(ROOT_ESCAPED) == (ROOT.der(),)
    assert _from_url_pem(ROOT_ESCAPED.replace("%0A", "%0a").replace("%2B", "%2b")) == (
        ROOT.der(),
    )  # lower-case escapes


_URL_PIECES = st.sampled_from(
    [
        "%",
        "=",
        "%%",
        "%0A",
        "%0a",
        "%3D",
        "%3d",
        "%2B",
        "%FF",
        "%e2%82%ac",
        "%zz",
        "%4",
        "\n",
        "\r",
        "%\n",
        "%\r\n",
        "A",
        "+",
        "/",
        "\u20ac",
    ]
)


@given(st.lists(st.one_of(_URL_PIECES, st.text(max_size=4)), max_size=30))
def test_url_decode_is_unquote_to_bytes(pieces: list[str]) -> None:
    text = "".join(pieces)
    assert _url_decode(text) == unquote_to_bytes(text)


def test_url_decode_takes_c_path_for_real_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    import asgi_apim.certs.formats as formats

    def refuse(data: bytes) -> bytes:
        raise AssertionError("unquote_to_bytes was called")

    monkeypatch.setattr(formats, "unquote_to_bytes", refuse)
    pem = ROOT.cert_pem()
    assert _url_decode(ROOT_ESCAPED) == pem
    assert _url_decode(ROOT_ESCAPED.replace("%0A", "%0a")) == pem
    for fallback in ("=" + ROOT_ESCAPED, ROOT_ESCAPED + "%", ROOT_ESCAPED + "%zz", ROOT_ESCAPED + "%\n"):
        with pytest.raises(AssertionError):
            _url_decode(fallback)


# the bytes path of a header and the single-block PEM path ------------------

_HEADER_PIECES = st.sampled_from(
    [
        "%0A",
        "%0a",
        "%20",
        "%2B",
        "%2D",
        "%2d",
        "%3D",
        "%25",
        "%",
        "%zz",
        "=",
        "+",
        "-",
        "\n",
        "\r",
        "%\n",
        "%\r",
        " ",
        "\t",
        "\x0b",
        "\x0c",
        "\x1c",
        "\xe9",
        "(null)",
        "NONE",
        ":",
        "Cert=",
        "By=",
        "-----BEGIN",
        "-----BEGIN+",
        "-----BEGIN%20",
        "CERTIFICATE-----",
        "-----END",
        "-----END+",
        "-----END%20",
        ROOT_ESCAPED[:200],
        ROOT_ESCAPED[200:],
        ROOT_ESCAPED,
    ]
)


def _parsed(value: object, fmt: str) -> object:
    try:
        return parse_certificate_header(value, fmt)  # type: ignore[arg-type]
    except CertificateHeaderError as exc:
        return ("refused", exc.detail)


@pytest.mark.parametrize("fmt", FORMATS)
@HYPO
@given(pieces=st.lists(st.one_of(_HEADER_PIECES, st.text(max_size=5)), max_size=12))
def test_header_bytes_decide_as_their_text(fmt: str, pieces: list[str]) -> None:
    """A header's bytes (the server's form, which url_pem and auto decode without making text)
    give exactly what the same value as text gives: the certificates or the same refusal."""
    value = "".join(pieces).encode("utf-8")
    assert _parsed(value, fmt) == _parsed(value.decode("latin-1"), fmt)


@pytest.mark.parametrize(
    "value",
    [
        ROOT_ESCAPED,
        "  " + ROOT_ESCAPED + "\t",
        quote(PEM_CHAIN, safe=""),
        quote_plus(PEM_CHAIN),
        "%2d" + ROOT_ESCAPED[1:],
        "none",
        " (NULL) ",
        "",
        ROOT_ESCAPED + "%",
        "=" + ROOT_ESCAPED,
    ],
)
@pytest.mark.parametrize("fmt", ["auto", "url_pem"])
def test_header_bytes_known_values(value: str, fmt: str) -> None:
    assert _parsed(value.encode("ascii"), fmt) == _parsed(value, fmt)
    assert _parsed(bytearray(value.encode("ascii")), fmt) == _parsed(value, fmt)


_PEM_PIECES = st.sampled_from(
    [
        "-----BEGIN CERTIFICATE-----",
        "-----BEGIN+CERTIFICATE-----",
        "-----END CERTIFICATE-----",
        "-----END+CERTIFICATE-----",
        "-----BEGIN",
        "CERTIFICATE-----",
        "-",
        "--",
        " ",
        "\n",
        "\r\n",
        "\t",
        "\x0b",
        "\x1c",
        "=",
        "MII",
        "AAAA",
        b64(DERS[0])[:64],
        b64(DERS[0])[64:],
        b64(DERS[0]),
        PEMS[0],
        PEMS[1],
        PEMS[0][:-1],
    ]
)


@HYPO
@given(pieces=st.lists(st.one_of(_PEM_PIECES, st.text(max_size=4)), max_size=10))
def test_single_block_pem_decides_as_the_blocks_parser(pieces: list[str]) -> None:
    """`_from_pem`'s one-block path (no regex) answers exactly as `_pem_blocks` does, for any text."""
    data = "".join(pieces).encode("utf-8", "replace")
    assert _outcome(_from_pem, data) == _outcome(_pem_blocks, data)
    assert _outcome(_from_pem, "".join(pieces)) == _outcome(_pem_blocks, data)


def test_single_block_pem_errors_match() -> None:
    for text in (
        PEMS[0],
        " \n" + PEMS[0] + "\t",
        PEMS[0].replace("M", "*", 1),
        PEMS[0].replace("\n", "\n\n"),
        "-----BEGIN CERTIFICATE----------END CERTIFICATE-----",
        PEMS[0] + PEMS[1],
        PEMS[0].replace("-----\n", "-----", 1),
    ):
        data = text.encode()
        try:
            expected: object = _pem_blocks(data)
        except CertificateHeaderError as exc:
            expected = exc.detail
        try:
            got: object = _from_pem(data)
        except CertificateHeaderError as exc:
            got = exc.detail
        assert got == expected
