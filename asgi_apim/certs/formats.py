"""One parser for every way a proxy forwards the client certificate.

`parse_certificate_header` turns one header value into the DER certificates it
carries, leaf first; `pem_chain_to_der` does the same for the ASGI TLS
extension's ``client_cert_chain``. Both answer ``()`` when there is no
certificate and raise `CertificateHeaderError` for anything malformed, never
another exception, and the detail never repeats the input.

Formats:

* ``url_pem``: URL-encoded PEM, one or more certificates (nginx
  ``$ssl_client_escaped_cert``, WSO2, AWS ALB ``X-Amzn-Mtls-Clientcert``).
  Decoded with `urllib.parse.unquote`, not ``unquote_plus``: a raw ``+`` is
  base64, not a space.
* ``pem``: PEM whose newlines became spaces or tabs (Apache
  ``SSL_CLIENT_CERT``, folded headers), or plain PEM.
* ``base64_der``: base64 DER (HAProxy, Azure ``X-ARR-ClientCert``), or Traefik's
  comma-separated chain; standard or URL-safe alphabet, padding optional.
* ``xfcc``: Envoy's ``x-forwarded-client-cert``. The last element is the one
  the nearest proxy added; its ``Chain`` (else ``Cert``) is URL-encoded PEM,
  and its ``Hash``, when present, must be the SHA-256 of the leaf.
* ``rfc9440``: ``Client-Cert`` / ``Client-Cert-Chain``, RFC 8941 byte sequences
  ``:base64:``, alone or as a list.

Only structure is checked here (each item is one DER SEQUENCE whose length
matches its size); the validator parses the certificates, once, and caches.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from urllib.parse import unquote_to_bytes

from asgi_apim.errors import CertificateHeaderError

__all__ = ["FORMATS", "MAX_CERTIFICATES", "MAX_HEADER_BYTES", "parse_certificate_header", "pem_chain_to_der"]

MAX_HEADER_BYTES = 65536
MAX_CERTIFICATES = 10
FORMATS = ("auto", "url_pem", "pem", "base64_der", "xfcc", "rfc9440")

Parser = Callable[[str], tuple[bytes, ...]]

# ASCII whitespace only: str.split()/strip() would also swallow \x1c-\x1f.
_WS = " \t\r\n\f\v"
_DROP_WS = str.maketrans("", "", _WS)
_URLSAFE = str.maketrans("-_", "+/")
_ABSENT = frozenset({"", "(null)", "none", "-"})
_ABSENT_BYTES = frozenset(a.encode("ascii") for a in _ABSENT)

# The base64 body holds no "-", so [^-]* cannot run past its END marker.
# "BEGIN+CERTIFICATE" is what a form encoder (Java's URLEncoder) makes of the space.
_WS_BYTES = _WS.encode("ascii")
_PEM_BLOCK = re.compile(rb"-----BEGIN[ +]CERTIFICATE-----([^-]*)-----END[ +]CERTIFICATE-----")
_XFCC_START = re.compile(r"(?:by|hash|cert|chain|subject|uri|dns)=", re.IGNORECASE)
_XFCC_PAIR = re.compile(r'[ \t]*([A-Za-z][A-Za-z0-9_-]*)=("(?:[^"\\]|\\.)*"|[^",;]*)[ \t]*([,;]|\Z)')
_XFCC_ESCAPE = re.compile(r"\\(.)")
_XFCC_SINGLE = frozenset({"by", "hash", "cert", "chain"})
_SF_BYTES = re.compile(r":([A-Za-z0-9+/=]*):[ \t]*(?:(,)[ \t]*|\Z)")


def _too_many() -> CertificateHeaderError:
    return CertificateHeaderError(f"the client certificate header carries more than {MAX_CERTIFICATES} certificates")


def _b64decode(text: str | bytes, *, urlsafe: bool, index: int) -> bytes:
    pad = -len(text) % 4
    if isinstance(text, str):
        if urlsafe:
            text = text.translate(_URLSAFE)
        if pad:
            text += "=" * pad
    elif pad:  # bytes: the PEM paths, never URL-safe
        text += b"=" * pad
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        raise CertificateHeaderError(f"certificate {index} is not valid base64") from None


def _der(data: bytes, index: int) -> bytes:
    """``data`` if it is one DER SEQUENCE spanning exactly its bytes."""
    size = len(data)
    if size < 2 or data[0] != 0x30:
        raise CertificateHeaderError(f"certificate {index} is not a DER certificate")
    first = data[1]
    if first < 0x80:
        header, length = 2, first
    else:
        count = first & 0x7F
        if not 0 < count <= 4 or size < 2 + count or data[2] == 0 or (count == 1 and data[2] < 0x80):
            raise CertificateHeaderError(f"certificate {index} has an invalid DER length")
        header, length = 2 + count, int.from_bytes(data[2 : 2 + count], "big")
    if header + length != size:
        raise CertificateHeaderError(f"certificate {index} has a DER length that does not match its size")
    return data


_BEGIN = (b"-----BEGIN CERTIFICATE-----", b"-----BEGIN+CERTIFICATE-----")
_END = (b"-----END CERTIFICATE-----", b"-----END+CERTIFICATE-----")
_BEGIN_SIZE, _END_SIZE = len(_BEGIN[0]), len(_END[0])


def _from_pem(text: str | bytes) -> tuple[bytes, ...]:
    """PEM blocks, worked on as bytes (their whitespace dropped by bytes.split(), which splits
    on exactly the ASCII whitespace of _WS and is ten times faster than str.translate).

    The usual value, one block and nothing but whitespace around it, is taken apart without
    the regex: exactly when the stripped value starts with a BEGIN marker, ends with an END
    marker and holds no ``-`` between them, the regex would find that one block and nothing
    else; anything else goes to `_pem_blocks`."""
    if isinstance(text, str):
        text = text.encode("utf-8", "replace")
    block = text.strip(_WS_BYTES)
    size = len(block)
    if size >= _BEGIN_SIZE + _END_SIZE and block[:_BEGIN_SIZE] in _BEGIN and block[size - _END_SIZE :] in _END:
        body = block[_BEGIN_SIZE : size - _END_SIZE]
        if b"-" not in body:
            return (_der(_b64decode(b"".join(body.split()), urlsafe=False, index=1), 1),)
    return _pem_blocks(text)


def _pem_blocks(text: bytes) -> tuple[bytes, ...]:
    """Every PEM block of ``text`` (any number), with only whitespace between and around them."""
    ders: list[bytes] = []
    pos = 0
    for match in _PEM_BLOCK.finditer(text):
        if text[pos : match.start()].strip(_WS_BYTES):
            raise CertificateHeaderError("the client certificate header has text outside its PEM certificates")
        if len(ders) == MAX_CERTIFICATES:
            raise _too_many()
        index = len(ders) + 1
        ders.append(_der(_b64decode(b"".join(match.group(1).split()), urlsafe=False, index=index), index))
        pos = match.end()
    if text[pos:].strip(_WS_BYTES):
        raise CertificateHeaderError("the client certificate header has text outside its PEM certificates")
    if not ders:
        raise CertificateHeaderError("the client certificate header holds no PEM certificate")
    return tuple(ders)


def _url_decode(text: str | bytes) -> bytes:
    """`urllib.parse.unquote_to_bytes`, in C for the usual header: binascii's quoted-printable
    decoder reads ``=XX`` as unquote reads ``%XX``. It is used only when that is exact: no
    ``=`` in the input (every one in the output then comes from an escape), no ``%`` before a
    line break (a soft line break to a2b_qp), and the output is shorter by exactly two bytes
    per ``%`` (so every ``%`` began a valid escape: an invalid or trailing one, or ``%%``,
    shortens it by less). Anything else goes to unquote_to_bytes. Bytes are taken as they
    are (the header's own bytes: ASCII, so the same as their text's UTF-8)."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    # a line break is looked for first: one byte is a memchr, two a slower search
    if b"=" in raw or ((b"\n" in raw or b"\r" in raw) and (b"%\n" in raw or b"%\r" in raw)):
        return unquote_to_bytes(raw)
    decoded = binascii.a2b_qp(raw.replace(b"%", b"="))
    if len(decoded) != len(raw) - 2 * raw.count(b"%"):
        return unquote_to_bytes(raw)
    return decoded


def _from_url_pem(text: str | bytes) -> tuple[bytes, ...]:
    return _from_pem(_url_decode(text))  # unquote's decoding, without its UTF-8 round trip


def _from_base64_der(text: str) -> tuple[bytes, ...]:
    parts = text.split(",")
    if len(parts) > MAX_CERTIFICATES:
        raise _too_many()
    return tuple(
        _der(_b64decode(part.translate(_DROP_WS), urlsafe=True, index=index), index)
        for index, part in enumerate(parts, 1)
    )


def _xfcc_value(raw: str) -> str:
    if raw.startswith('"'):
        return _XFCC_ESCAPE.sub(r"\1", raw[1:-1])
    return raw.strip(_WS)


def _last_xfcc_element(text: str) -> dict[str, str]:
    element: dict[str, str] = {}
    pos = 0
    while True:
        match = _XFCC_PAIR.match(text, pos)
        if match is None:
            raise CertificateHeaderError("the x-forwarded-client-cert header is malformed")
        key, raw, separator = match.group(1).lower(), match.group(2), match.group(3)
        if key in _XFCC_SINGLE and key in element:
            raise CertificateHeaderError(f"an x-forwarded-client-cert element repeats the {key!r} key")
        element[key] = _xfcc_value(raw)
        if not separator:
            return element
        if separator == ",":
            element = {}
        pos = match.end()


def _from_xfcc(text: str) -> tuple[bytes, ...]:
    element = _last_xfcc_element(text)
    chain, cert = element.get("chain"), element.get("cert")
    if chain is None and cert is None:
        return ()
    ders = _from_url_pem(chain) if chain is not None else ()
    if cert is not None:
        leaf = _from_url_pem(cert)
        if len(leaf) != 1:
            raise CertificateHeaderError("the x-forwarded-client-cert Cert holds more than one certificate")
        if ders and ders[0] != leaf[0]:
            raise CertificateHeaderError("the x-forwarded-client-cert Chain does not start with its Cert")
        ders = ders or leaf
    digest = element.get("hash")
    if digest is not None and digest.lower() != hashlib.sha256(ders[0]).hexdigest():
        raise CertificateHeaderError("the x-forwarded-client-cert Hash does not match the certificate")
    return ders


def _from_rfc9440(text: str) -> tuple[bytes, ...]:
    ders: list[bytes] = []
    pos = 0
    while True:
        match = _SF_BYTES.match(text, pos)
        if match is None:
            raise CertificateHeaderError(
                "the client certificate header is not an RFC 8941 byte sequence or list of them"
            )
        if len(ders) == MAX_CERTIFICATES:
            raise _too_many()
        index = len(ders) + 1
        ders.append(_der(_b64decode(match.group(1), urlsafe=False, index=index), index))
        if match.group(2) is None:
            return tuple(ders)
        pos = match.end()


def _detect(text: str) -> Parser:
    if text.startswith(":"):
        return _from_rfc9440
    if _XFCC_START.match(text):
        return _from_xfcc
    if text.startswith("-----BEGIN"):
        return _from_url_pem if "%" in text or text.startswith("-----BEGIN+") else _from_pem
    if text[:3].lower() == "%2d":
        return _from_url_pem
    return _from_base64_der


def _from_auto(text: str) -> tuple[bytes, ...]:
    return _detect(text)(text)


_PARSERS: dict[str, Parser] = {
    "auto": _from_auto,
    "url_pem": _from_url_pem,
    "pem": _from_pem,
    "base64_der": _from_base64_der,
    "xfcc": _from_xfcc,
    "rfc9440": _from_rfc9440,
}


def _ascii(value: object, what: str) -> str:
    if not isinstance(value, (str, bytes, bytearray)):
        raise CertificateHeaderError(f"{what} is neither bytes nor text")
    if len(value) > MAX_HEADER_BYTES:
        raise CertificateHeaderError(f"{what} is larger than {MAX_HEADER_BYTES} bytes")
    if not value.isascii():
        raise CertificateHeaderError(f"{what} contains non-ASCII characters")
    return value if isinstance(value, str) else value.decode("ascii")


def parse_certificate_header(value: bytes | str, fmt: str = "auto") -> tuple[bytes, ...]:
    """The DER certificates carried by one header value, leaf first.

    ``()`` when the value says there is no certificate (empty or whitespace,
    ``(null)``, ``NONE``, ``-``, any case). ``fmt`` is one of `FORMATS`.
    ``"auto"`` looks at the start of the value, in this order:

    1. ``:`` is RFC 9440 (a byte sequence or a list of them);
    2. an XFCC key (``By=``, ``Hash=``, ``Cert=``, ``Chain=``, ``Subject=``,
       ``URI=``, ``DNS=``, any case) is Envoy's XFCC;
    3. ``-----BEGIN`` is PEM, or URL-encoded PEM when the value holds a ``%``
       or starts ``-----BEGIN+``; ``%2D`` (any case) is URL-encoded PEM;
    4. anything else is base64 DER (or a comma-separated chain of them).

    A value over `MAX_HEADER_BYTES`, or carrying more than `MAX_CERTIFICATES`,
    or malformed in any way (including any non-ASCII byte) raises
    `CertificateHeaderError`. An unknown ``fmt`` is a programming error and
    raises `ValueError`.
    """
    if (
        type(value) is bytes
        and (fmt == "auto" or fmt == "url_pem")
        and len(value) <= MAX_HEADER_BYTES
        and value.isascii()
    ):
        # The usual header, URL-encoded PEM as a server hands it over: decoded from its bytes,
        # exactly as the text path below would (the same strip, absence and detection rules).
        raw = value.strip(_WS_BYTES)
        if (
            raw.startswith(b"-----BEGIN")
            and (b"%" in raw or raw.startswith(b"-----BEGIN+"))
            or raw[:3].lower() == b"%2d"
        ):
            return _from_url_pem(raw)  # neither absent nor RFC 9440 nor XFCC: it starts with "-" or "%"
        if fmt == "url_pem" and raw.lower() not in _ABSENT_BYTES:
            return _from_url_pem(raw)
    parser = _PARSERS.get(fmt)
    if parser is None:
        raise ValueError(f"unknown certificate header format {fmt!r}; expected one of {', '.join(FORMATS)}")
    text = _ascii(value, "the client certificate header").strip(_WS)
    if text.lower() in _ABSENT:
        return ()
    return parser(text)


def pem_chain_to_der(pems: Sequence[str]) -> tuple[bytes, ...]:
    """The DER form of the ASGI TLS extension's ``client_cert_chain``: one PEM
    certificate per item, leaf first. ``()`` for an empty chain. The same
    limits as a header apply, to the chain as a whole."""
    if isinstance(pems, (str, bytes, bytearray)) or not isinstance(pems, Sequence):
        raise CertificateHeaderError("the TLS client certificate chain is not a sequence of PEM certificates")
    if len(pems) > MAX_CERTIFICATES:
        raise _too_many()
    ders: list[bytes] = []
    budget = MAX_HEADER_BYTES
    for index, pem in enumerate(pems, 1):
        text = _ascii(pem, f"TLS client certificate {index}")
        budget -= len(text)
        if budget < 0:
            raise CertificateHeaderError(f"the TLS client certificate chain is larger than {MAX_HEADER_BYTES} bytes")
        found = _from_pem(text)
        if len(found) != 1:
            raise CertificateHeaderError(f"TLS client certificate {index} holds more than one certificate")
        ders.append(found[0])
    return tuple(ders)
