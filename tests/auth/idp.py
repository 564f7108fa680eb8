"""Test helpers: a real HTTP server on 127.0.0.1 playing an identity provider (JWKS and
RFC 7662 introspection), and signing keys."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from asgi_apim.config import ApiConfig

ISSUER = "https://idp.example"
API = ApiConfig(name="pets", context="/pets")


@dataclass
class IdP:
    """What the fake identity provider serves; tests change it while it runs."""

    jwks: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    jwks_status: int = 200
    introspect: Callable[[str], dict[str, Any]] = lambda token: {"active": False}
    introspect_status: int = 200
    client: tuple[str, str] = ("gateway", "s3cret")
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r == path)


def _handler(idp: IdP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode() if not isinstance(body, bytes) else body
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            idp.requests.append(self.path)
            if self.path == "/jwks.json":
                self._answer(idp.jwks_status, idp.jwks if idp.jwks_status == 200 else {"error": "down"})
            else:
                self._answer(404, {})

        def do_POST(self) -> None:
            idp.requests.append(self.path)
            body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
            expected = "Basic " + base64.b64encode(":".join(idp.client).encode()).decode()
            if self.path != "/introspect":
                self._answer(404, {})
            elif self.headers.get("authorization") != expected:
                self._answer(401, {"error": "invalid_client"})
            elif idp.introspect_status != 200:
                self._answer(idp.introspect_status, b"<html>oops</html>")
            else:
                form = parse_qs(body)
                self._answer(200, idp.introspect(form["token"][0]))

    return Handler


@contextmanager
def running_idp() -> Iterator[IdP]:
    state = IdP()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


@dataclass
class SigningKey:
    kid: str
    key: Any
    alg: str

    def jwk(self) -> dict[str, Any]:
        loader = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.alg]
        jwk = json.loads(loader.to_jwk(self.key.public_key()))
        jwk["kid"] = self.kid
        return jwk

    def sign(self, claims: dict[str, Any], **header: Any) -> str:
        return jwt.encode(claims, self.key, algorithm=self.alg, headers={"kid": self.kid, **header})


_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_key(kid: str = "k1", second: bool = False) -> SigningKey:
    return SigningKey(kid, _RSA2 if second else _RSA, "RS256")


def ec_key(kid: str = "e1") -> SigningKey:
    return SigningKey(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")


def ed_key(kid: str = "o1") -> SigningKey:
    return SigningKey(kid, ed25519.Ed25519PrivateKey.generate(), "EdDSA")


def claims(**extra: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "sub": "alice", "aud": "pets", "exp": int(time.time()) + 600, "iat": int(time.time())}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}
