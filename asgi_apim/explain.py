"""``asgi-apim check``: would a certificate, or a whole request, be accepted, and why.

``check --config FILE CERT.pem`` validates the certificate (a PEM file, leaf
first, intermediates after it) exactly as the running stack would, and prints
one line per API: accepted with alias and tier, or refused and why. It exits 0
when at least one API accepts the certificate, 1 otherwise.

``check --config FILE --request 'GET /pets/1' [--header 'K: V']... [--cert C.pem]``
runs the request through the real stack in-process (the certificate given as
the TLS connection's) and prints each step of the decision and the outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from pathlib import Path
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from asgi_apim._keys import DECISION
from asgi_apim.certs.formats import parse_certificate_header
from asgi_apim.certs.truststore import TrustReloader
from asgi_apim.certs.validation import CertificateValidator
from asgi_apim.config import Config, load_config
from asgi_apim.errors import CertificateHeaderError, UsageError
from asgi_apim.registry import feed_for

_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----")
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an HTTP header name


def _read_chain(path: str) -> tuple[bytes, ...]:
    data = Path(path).read_bytes()
    if b"-----BEGIN CERTIFICATE-----" not in data:
        try:
            return parse_certificate_header(data.decode("ascii"), "base64_der") if data[:1] != b"\x30" else (data,)
        except UnicodeDecodeError:
            return (data,)  # a DER file
    blocks = [m.group(0).decode("ascii", "replace") for m in _PEM_BLOCK.finditer(data)]
    ders = parse_certificate_header("\n".join(blocks), "pem")
    if not ders:
        raise CertificateHeaderError(f"{path} holds no certificate")
    return ders


def check_certificate(config: Config, cert_path: str) -> tuple[bool, list[str]]:
    """The lines ``check`` prints for a certificate, and whether any API accepts it."""
    material = TrustReloader(config.mutual_ssl, config.apis, registry=feed_for(config)).current
    sources = {(r.api, r.alias): r.source for r in material.registrations}
    validator = CertificateValidator(material, chain_validation=config.mutual_ssl.enable_certificate_chain_validation)
    verdict = validator.validate(_read_chain(cert_path))
    lines = [f"certificate: {verdict.subject or '(unparseable)'} sha256={verdict.sha256}"]
    if verdict.reason:
        lines.append(f"chain: refused: {verdict.reason}")
    accepted = False
    hows = {
        "exact": "registered exactly",
        "ca": "issued by a registered CA",
        "truststore": "trusted through the truststore",
    }
    for api in config.apis:
        mode = api.security.mutual_ssl
        a = verdict.acceptances.get(api.name)
        if a is not None:
            accepted = True
            source = sources.get((api.name, a.alias), "truststore") if a.alias else "truststore"
            lines.append(
                f"{api.name}: accepted, alias {a.alias or '-'}, tier {a.tier} "
                f"({hows.get(a.how, a.how)}; source {source}; mutual_ssl {mode})"
            )
        else:
            lines.append(f"{api.name}: refused: {verdict.reason_for(api.name)} (mutual_ssl {mode})")
    if not config.apis:
        lines.append("no [[apis]] are configured")
    return accepted, lines


def parse_request(request: str, headers: list[str]) -> tuple[str, str, str, list[tuple[bytes, bytes]]]:
    """``'GET /pets/1?x=1'`` and ``['Name: value']`` -> method, path, query, raw headers; `UsageError` if malformed."""
    method, _, target = request.strip().partition(" ")
    target = target.strip()
    if not method or not target.startswith("/") or " " in target:
        raise UsageError(f"--request {request!r} must look like 'GET /pets/1'")
    path, _, query = target.partition("?")
    raw_headers = []
    for h in headers:
        name, sep, value = h.partition(":")
        name = name.strip()
        if not sep or not _TOKEN.fullmatch(name):
            raise UsageError(f"--header {h!r} must look like 'Name: value'")
        try:
            raw_headers.append((name.lower().encode("latin-1"), value.strip().encode("latin-1")))
        except UnicodeEncodeError:
            raise UsageError(f"--header {h!r} must be latin-1 text") from None
    return method.upper(), path, query, raw_headers


async def explain_request(
    config: Config, request: str, headers: list[str], cert: str | None, peer: str
) -> tuple[int, list[str]]:
    from asgi_apim._stack import protect

    method, path, query, raw_headers = parse_request(request, headers)
    reached: dict[str, Any] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached["user"] = scope.get("user")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https" if cert else "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw_headers,
        "client": (peer, 50000),
        "server": ("127.0.0.1", 443),
        "state": {},
    }
    if cert:
        pem = Path(cert).read_text()
        scope["extensions"] = {"tls": {"client_cert_chain": _split_pem(pem), "server_cert": None}}
    stack = protect(app, config, explain=True)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await stack(scope, receive, send)
    status = sent[0]["status"] if sent else 500
    lines = [f"step: {s}" for s in scope.get(DECISION, [])]
    if "user" in reached:
        user = reached["user"]
        who = json.dumps(user.as_dict()) if hasattr(user, "as_dict") else "anonymous (public)"
        lines.append(f"result: {status}, the app sees {who}")
    else:
        body = b"".join(m.get("body", b"") for m in sent[1:])
        lines.append(f"result: {status} {body.decode('utf-8', 'replace')}")
    return status, lines


def _split_pem(text: str) -> list[str]:
    marker = "-----END CERTIFICATE-----"
    return [p.strip() + "\n" + marker + "\n" for p in text.split(marker) if "-----BEGIN CERTIFICATE-----" in p]


def check_command(ns: argparse.Namespace) -> int:
    if ns.request is not None:
        parse_request(ns.request, ns.header)  # bad usage is reported before the configuration is read
    elif not ns.cert:
        raise UsageError("check needs CERT.pem or --request")
    elif ns.header:
        raise UsageError("--header only applies to --request")
    config = load_config(ns.config, read_only=True)  # a diagnostic: the file is never written
    if ns.request is not None:
        status, lines = asyncio.run(explain_request(config, ns.request, ns.header, ns.cert_opt or ns.cert, ns.peer))
        print("\n".join(lines))
        return 0 if status < 400 else 1
    _build_stack(config)  # what serve would refuse at start-up, check refuses too (authenticators, storage, routes)
    accepted, lines = check_certificate(config, ns.cert)
    print("\n".join(lines))
    return 0 if accepted else 1


def _build_stack(config: Config) -> None:
    from asgi_apim import protect

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    protect(app, config)
