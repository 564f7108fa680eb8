"""Each decision has one owner, and every request passes through the owner's entry.

The probe: a subclass of each owner adds one extra refusal at its entry point
(`CertificateResolver.resolve`, `ApplicationSecurity.recall`, `Limiter.charge`)
for requests that carry ``x-probe: refuse``. A stack composed from it, as
`protect()` composes the standard owners, must refuse the first, second and
hundredth identical request, after the caller's credential has been seen and
cached, on the fast path (a route decided by the owners' per-route callables)
and on the general one (``explain=True``: every request through WSO2's table),
with counts in memory and in Redis, over HTTP and WebSocket. Without the probe
header the same requests pass, so the test can fail.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

import pytest
from starlette.types import Scope, Send

from asgi_apim.auth.application import ApplicationSecurity, Choice
from asgi_apim.auth.policy import APISecurityMiddleware
from asgi_apim.certs.pki import issue_client, make_ca
from asgi_apim.certs.resolver import CertificateOutcome, CertificateResolver
from asgi_apim.certs.truststore import TrustReloader
from asgi_apim.config import Config, load_config
from asgi_apim.errors import CertificateRejected, InvalidCredentials, Throttled
from asgi_apim.identity import Principal
from asgi_apim.routing import Router
from asgi_apim.throttling.limiter import Limiter, Plan
from tests.asgi import echo_user, make_scope
from tests.auth.idp import claims, rsa_key
from tests.throttling.conftest import redis_server  # noqa: F401  (a fixture)

PROBE = (b"x-probe", b"refuse")


def _probed(scope: Scope) -> bool:
    return PROBE in scope["headers"]


class ProbeResolver(CertificateResolver):
    def resolve(self, scope: dict[str, Any]) -> CertificateOutcome:
        if _probed(scope):
            return CertificateOutcome("header", error=CertificateRejected("refused by the probe"))
        return super().resolve(scope)


class ProbeCredentials(ApplicationSecurity):
    def recall(self, scope: Scope, choice: Choice) -> Principal | None:
        if _probed(scope):
            raise InvalidCredentials("refused by the probe")
        return super().recall(scope, choice)


class ProbeLimiter(Limiter):
    def charge(self, plan: Plan, scope: Scope, send: Send, user: Principal | None) -> Send | None:
        if _probed(scope):
            raise Throttled("refused by the probe", code=900800, retry_after=1)
        return super().charge(plan, scope, send, user)


CONFIG = """
[encryption]
key = "{key}"

[mutual_ssl]
truststore = ["ca.pem"]
trusted_proxies = ["127.0.0.1/32"]
reload_interval = 3600

[throttling]
storage = "{storage}"

[throttling.tiers]
Gold = "100000/minute"

[[key_managers]]
name = "idp"
issuer = "https://idp.example"
audience = "pets"
jwks_file = "jwks.json"
default_tier = "Gold"

[[apis]]
name = "certs"
context = "/certs"
[apis.security]
mutual_ssl = "mandatory"
[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"
tier = "Gold"

[[apis]]
name = "both"
context = "/both"
[apis.security]
mutual_ssl = "mandatory"
application = ["oauth2"]
application_mandatory = true
[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"
tier = "Gold"

[[apis]]
name = "tokens"
context = "/tokens"
[apis.security]
mutual_ssl = "disabled"
application = ["oauth2"]
"""


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("owners")
    ca = make_ca("owners CA")
    ca.write(tmp / "ca.pem")
    key = rsa_key()
    (tmp / "jwks.json").write_text(json.dumps({"keys": [key.jwk()]}))
    token = key.sign(claims(iss="https://idp.example", exp=int(2**31 - 1)))
    return {
        "dir": tmp,
        "cert": quote(issue_client(ca, "owners client").cert_pem().decode(), safe=""),
        "token": token,
    }


def _config(material: dict[str, Any], storage: str) -> Config:
    path = material["dir"] / f"deployment-{os.urandom(4).hex()}.toml"
    path.write_text(CONFIG.format(key="ef" * 32, storage=storage))
    return load_config(path)


def _stack(cfg: Config, explain: bool, owner: str) -> APISecurityMiddleware:
    resolver_cls = ProbeResolver if owner == "certificate" else CertificateResolver
    credentials_cls = ProbeCredentials if owner == "credential" else ApplicationSecurity
    limiter_cls = ProbeLimiter if owner == "charge" else Limiter

    async def app(scope: Scope, receive: Any, send: Send) -> None:
        if scope["type"] == "websocket":
            await receive()
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1000})
            return
        await echo_user(scope, receive, send)

    return APISecurityMiddleware(
        app,
        router=Router.from_config(cfg),
        credentials=credentials_cls.from_config(cfg),
        resolver=resolver_cls(TrustReloader(cfg.mutual_ssl, cfg.apis), cfg.mutual_ssl),
        limiter=limiter_cls.from_config(cfg),
        explain=explain,
    )


async def _status(app: Any, kind: str, path: str, headers: list[tuple[str, str]]) -> int:
    """The status the request is answered with (a WebSocket accepted: 101)."""
    scope = make_scope("GET", path, headers, client=("127.0.0.1", 40000))
    if kind == "websocket":
        scope["type"] = "websocket"
        scope["extensions"] = {"websocket.http.response": {}}
        del scope["method"]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"} if kind == "websocket" else {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    first = sent[0]
    if first["type"] == "websocket.accept":
        return 101
    return int(first["status"])


# (owner probed, the route, what its caller presents, the probe's status)
CASES = [
    ("certificate", "/certs/x", "cert", 401),
    ("certificate", "/both/x", "both", 401),
    ("credential", "/tokens/x", "token", 401),
    ("credential", "/both/x", "both", 401),
    ("charge", "/certs/x", "cert", 429),
    ("charge", "/tokens/x", "token", 429),
]


@pytest.mark.parametrize("kind", ["http", "websocket"])
@pytest.mark.parametrize("explain", [False, True], ids=["fast", "general"])
@pytest.mark.parametrize("storage", ["memory", "redis"])
@pytest.mark.parametrize(("owner", "path", "presents", "refused"), CASES)
async def test_an_extra_refusal_at_the_owners_entry_holds_on_every_path(
    request: pytest.FixtureRequest,
    material: dict[str, Any],
    owner: str,
    path: str,
    presents: str,
    refused: int,
    storage: str,
    explain: bool,
    kind: str,
) -> None:
    uri = "memory://" if storage == "memory" else request.getfixturevalue("redis_server").url
    app = _stack(_config(material, uri), explain, owner)
    headers = []
    if presents in ("cert", "both"):
        headers.append(("x-wso2-client-certificate", material["cert"]))
    if presents in ("token", "both"):
        headers.append(("authorization", f"Bearer {material['token']}"))
    accepted = 101 if kind == "websocket" else 200
    for _ in range(3):  # seen, validated and cached: later requests meet every cache warm
        assert await _status(app, kind, path, headers) == accepted
    probe = [*headers, ("x-probe", "refuse")]
    statuses = [await _status(app, kind, path, probe) for _ in range(100)]
    assert statuses == [refused] * 100, (statuses[0], statuses[1], statuses[-1])
    assert await _status(app, kind, path, headers) == accepted  # the probe alone refused them
    await app.limiter.aclose()  # type: ignore[union-attr]
