"""WSO2's mutual-SSL x application-security decision table, end to end.

One real ``asgi-apim serve`` over TLS on 127.0.0.1, one API per row group of
the table (issue 3, point 1), real client certificates in the handshake, real
JWTs whose keys come from a JWKS served by a local HTTP server (and a second
issuer from a ``jwks_file``), API keys and htpasswd users. Every row is
requested over the network, with httpx and, for some rows, curl; then a
malicious-token suite and resource scopes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from asgi_apim.auth.apikey import issue_api_key
from asgi_apim.certs.pki import issue_client
from asgi_apim.config import load_config
from tests.auth.idp import IdP, SigningKey, ec_key, rsa_key, running_idp
from tests.e2e.conftest import PKI, Served, Servers
from tests.e2e.idp import AUDIENCE, ISSUER, ISSUER2, MALICIOUS, claims, forge, malicious_tokens, rs256

pytestmark = pytest.mark.e2e

REALM = 'realm="asgi-apim"'

CONFIG = """
public_paths = ["/health"]

[encryption]
key = "{key}"

[mutual_ssl]
truststore = ["{ca}"]
reload_interval = 60

[[key_managers]]
name = "idp"
issuer = "{issuer}"
audience = ["{audience}"]
jwks_url = "{jwks_url}"
algorithms = ["RS256"]
jwks_min_refetch_interval = 0

[[key_managers]]
name = "idp2"
issuer = "{issuer2}"
audience = ["{audience}"]
jwks_file = "idp2-jwks.json"
algorithms = ["ES256"]

[api_keys]
signing_key = "apikey-signing.pem"

[basic_auth]
users_file = "users.htpasswd"
tier = "Bronze"
{apis}"""

API = """
[[apis]]
name = "{name}"
context = "/{name}"

[apis.security]
mutual_ssl = "{mutual_ssl}"
application = {application}
application_mandatory = {mandatory}
"""

PARTNER = """
[[apis.certificates]]
alias = "partner"
certificate = "{ca}"
tier = "Gold"
"""

DELETE_NEEDS_WRITE = """
[[apis.resources]]
path = "/pets/{id}"
methods = ["DELETE"]
scopes = ["pets:write"]
"""

# name, mutual_ssl, application, application_mandatory, registers the CA, has the DELETE resource
APIS = [
    ("m-f", "mandatory", ["oauth2"], False, True, True),
    ("m-t", "mandatory", ["oauth2"], True, True, True),
    ("o-f", "optional", ["oauth2"], False, True, True),
    ("o-t", "optional", ["oauth2"], True, True, False),
    ("d", "disabled", ["oauth2"], True, False, True),
    ("multi", "disabled", ["api_key", "oauth2", "basic"], True, False, False),
    ("other", "mandatory", ["oauth2"], False, False, False),  # registers only the "foreign" certificate
]

# Certificates: a client certificate of the truststore CA; none; two that the
# handshake lets through but the application layer refuses.
VALID, MISSING, NO_EKU, FOREIGN = "valid", "missing", "no-eku", "foreign"
INVALID_CERTS = [NO_EKU, FOREIGN]
ALL_CERTS = [VALID, MISSING, *INVALID_CERTS]
CERT_FILES = {VALID: "client", MISSING: None, NO_EKU: "noeku", FOREIGN: "foreign"}

# Tokens: "valid", no Authorization header, and two invalid kinds.
T_VALID, T_NONE, T_BAD_SIG, T_EXPIRED = "token", "no-token", "bad-signature", "expired"
BAD_TOKENS = [T_BAD_SIG, T_EXPIRED]
ALL_TOKENS = [T_VALID, T_NONE, *BAD_TOKENS]

BEARER, BEARER_INVALID, MUTUAL = "Bearer", "Bearer invalid_token", "Mutual"


@dataclass(frozen=True)
class Expect:
    status: int
    method: str | None = None
    methods: tuple[str, ...] = ()
    code: int | None = None
    challenge: str | None = None

    def __str__(self) -> str:
        return f"{self.status}-{self.method or self.code}"


MUTUAL_ONLY = Expect(200, "mutual_ssl", ("mutual_ssl",))
OAUTH2_ONLY = Expect(200, "oauth2", ("oauth2",))
BOTH = Expect(200, "oauth2", ("mutual_ssl", "oauth2"))


def _refused(code: int, challenge: str) -> Expect:
    return Expect(401, code=code, challenge=challenge)


# The table of issue 3, row by row. "missing or invalid" is split into the
# missing certificate and two invalid ones; "anything or nothing" into a
# valid token, no token, a badly signed one and an expired one.
ROWS: list[tuple[str, list[str], list[str], Expect]] = [
    # mandatory, false: the certificate alone decides
    ("m-f", [VALID], ALL_TOKENS, MUTUAL_ONLY),
    ("m-f", [MISSING], ALL_TOKENS, _refused(900902, MUTUAL)),
    ("m-f", INVALID_CERTS, ALL_TOKENS, _refused(900901, MUTUAL)),
    # mandatory, true: both, certificate first
    ("m-t", [VALID], [T_VALID], BOTH),
    ("m-t", [VALID], [T_NONE], _refused(900902, BEARER)),
    ("m-t", [VALID], BAD_TOKENS, _refused(900901, BEARER_INVALID)),
    ("m-t", [MISSING], ALL_TOKENS, _refused(900902, MUTUAL)),
    ("m-t", INVALID_CERTS, ALL_TOKENS, _refused(900901, MUTUAL)),
    # optional, false: a valid certificate is enough, else the application credential
    ("o-f", [VALID], ALL_TOKENS, MUTUAL_ONLY),
    ("o-f", [MISSING, *INVALID_CERTS], [T_VALID], OAUTH2_ONLY),
    ("o-f", [MISSING], [T_NONE], _refused(900902, BEARER)),
    ("o-f", INVALID_CERTS, [T_NONE], _refused(900901, BEARER)),  # a refused certificate was presented
    ("o-f", [MISSING, *INVALID_CERTS], BAD_TOKENS, _refused(900901, BEARER_INVALID)),
    # optional, true: the application credential decides, a valid certificate is kept
    ("o-t", [VALID], [T_VALID], BOTH),
    ("o-t", [MISSING, *INVALID_CERTS], [T_VALID], OAUTH2_ONLY),
    ("o-t", [VALID, MISSING], [T_NONE], _refused(900902, BEARER)),
    ("o-t", INVALID_CERTS, [T_NONE], _refused(900901, BEARER)),
    ("o-t", ALL_CERTS, BAD_TOKENS, _refused(900901, BEARER_INVALID)),
    # disabled: the certificate is ignored
    ("d", ALL_CERTS, [T_VALID], OAUTH2_ONLY),
    ("d", ALL_CERTS, [T_NONE], _refused(900902, BEARER)),
    ("d", ALL_CERTS, BAD_TOKENS, _refused(900901, BEARER_INVALID)),
]

CASES = [(api, cert, token, expect) for api, certs, tokens, expect in ROWS for cert in certs for token in tokens]
CASE_IDS = [f"{api}/{cert}/{token}" for api, cert, token, _ in CASES]
CURL_CASES = [
    "m-f/valid/bad-signature",
    "m-t/valid/token",
    "o-f/no-eku/token",
    "o-t/foreign/no-token",
    "d/missing/expired",
]


@dataclass
class World:
    tmp: Path
    pki: PKI
    idp: IdP
    key: SigningKey  # the issuer's key, published under kid k1 at the JWKS URL
    rogue: SigningKey  # another RSA key that claims kid k1
    key2: SigningKey  # the second issuer's EC key, in a jwks_file
    config: Path
    users: dict[str, str]

    def token(self, kind: str = T_VALID, **extra: Any) -> str | None:
        if kind == T_NONE:
            return None
        if kind == T_BAD_SIG:
            return self.rogue.sign(claims(**extra))
        if kind == T_EXPIRED:
            return self.key.sign(claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200, **extra))
        return self.key.sign(claims(**extra))


def _write_files(tmp: Path, pki: PKI, idp: IdP) -> World:
    pki.dir.mkdir(parents=True, exist_ok=True)
    issue_client(pki.ca, "no-eku client", eku=None).write(pki.path("noeku.pem"), pki.path("noeku.key"))
    issue_client(None, "foreign partner").write(pki.path("foreign.pem"), pki.path("foreign.key"))
    key, rogue, key2 = rsa_key("k1"), rsa_key("k1", second=True), ec_key("e1")
    idp.jwks = {"keys": [key.jwk()]}
    (tmp / "idp2-jwks.json").write_text(json.dumps({"keys": [key2.jwk()]}))
    (tmp / "apikey-signing.pem").write_bytes(
        ec_key().key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    users = {"bob": "b0b-s3cret"}
    line = subprocess.run(
        ["htpasswd", "-nbB", "-C", "4", "bob", users["bob"]], capture_output=True, check=True, text=True
    )
    (tmp / "users.htpasswd").write_text(line.stdout.strip() + "\n")
    ca = pki.path("ca.pem")
    apis = ""
    for name, mutual_ssl, application, mandatory, registers_ca, delete_resource in APIS:
        apis += API.format(
            name=name, mutual_ssl=mutual_ssl, application=json.dumps(application), mandatory=str(mandatory).lower()
        )
        if registers_ca:
            apis += PARTNER.format(ca=ca)
        if name == "other":
            apis += PARTNER.format(ca=pki.path("foreign.pem"))
        if delete_resource:
            apis += DELETE_NEEDS_WRITE
    config = tmp / "deployment.toml"
    config.write_text(
        CONFIG.format(
            key=os.urandom(32).hex(),
            ca=ca,
            issuer=ISSUER,
            issuer2=ISSUER2,
            audience=AUDIENCE,
            jwks_url=f"{idp.url}/jwks.json",
            apis=apis,
        )
    )
    return World(tmp, pki, idp, key, rogue, key2, config, users)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, module_pki: PKI) -> Iterator[World]:
    with running_idp() as idp:
        yield _write_files(tmp_path_factory.mktemp("decision"), module_pki, idp)


@pytest.fixture(scope="module")
def server(module_servers: Servers, world: World) -> Served:
    return module_servers.serve("tests.e2e.whoami_app:app", world.config, tls_pki=world.pki)


@pytest.fixture(scope="module")
def clients(server: Served, world: World) -> Iterator[dict[str, httpx.Client]]:
    """One keep-alive client per certificate kind: the certificate is the connection's."""
    made = {
        kind: httpx.Client(base_url=server.url, verify=world.pki.client_context(f), timeout=10)
        for kind, f in CERT_FILES.items()
    }
    yield made
    for client in made.values():
        client.close()


def _bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"authorization": f"Bearer {token}"}


def _check(status: int, headers: Any, body: dict[str, Any], expect: Expect, world: World, api: str, cert: str) -> None:
    assert status == expect.status, body
    if status == 200:
        assert headers["content-type"] == "application/json"
        assert body["authenticated"] is True and body["api"] == api
        assert body["method"] == expect.method and tuple(body["methods"]) == expect.methods
        if expect.method == "mutual_ssl":
            assert body["subject"] == world.pki.client.cert.subject.rfc4514_string()
            assert (body["alias"], body["tier"], body["scopes"]) == ("partner", "Gold", [])
        else:
            assert body["subject"] == "alice" and body["scopes"] == ["pets:read"]
            assert [s for s in body["auth_scopes"] if s != "authenticated"] == ["pets:read"]  # request.auth.scopes
            assert body["alias"] == ("partner" if "mutual_ssl" in expect.methods else None)
        return
    assert headers["content-type"] == "application/problem+json"
    assert body["status"] == 401 and body["code"] == expect.code, body
    www = headers["www-authenticate"]
    if expect.challenge == MUTUAL:
        assert www.startswith("Mutual ") and REALM in www, www
        assert ("Bearer realm=" in www) == (api == "m-t"), www  # the token it also needs is challenged for too
    else:
        assert www.startswith(f"Bearer {REALM}"), www
        assert ('error="invalid_token"' in www) == (expect.challenge == BEARER_INVALID), www


@pytest.mark.parametrize(("api", "cert", "token", "expect"), CASES, ids=CASE_IDS)
def test_decision_table(
    clients: dict[str, httpx.Client], world: World, api: str, cert: str, token: str, expect: Expect
) -> None:
    response = clients[cert].get(f"/{api}/whoami", headers=_bearer(world.token(token)))
    _check(response.status_code, response.headers, response.json(), expect, world, api, cert)


def _curl(
    server: Served, pki: PKI, path: str, cert: str | None, headers: dict[str, str]
) -> tuple[int, dict[str, str], Any]:
    argv = ["curl", "-sS", "-i", "--max-time", "10", "--cacert", str(pki.path("ca.pem"))]
    if cert:
        argv += ["--cert", str(pki.path(f"{cert}.pem")), "--key", str(pki.path(f"{cert}.key"))]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, server.url + path], capture_output=True, check=True, timeout=20).stdout.decode()
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.split("\n")
    parsed = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), parsed, json.loads(body)


@pytest.mark.parametrize("case", CURL_CASES)
def test_decision_table_rows_with_curl(server: Served, world: World, case: str) -> None:
    api, cert, token, expect = CASES[CASE_IDS.index(case)]
    status, headers, body = _curl(server, world.pki, f"/{api}/whoami", CERT_FILES[cert], _bearer(world.token(token)))
    _check(status, headers, body, expect, world, api, cert)


def test_invalid_certificates_pass_the_handshake_and_are_valid_where_registered(
    clients: dict[str, httpx.Client], world: World
) -> None:
    """The table's "invalid" certificates are refused by the application layer, not the handshake."""
    foreign = clients[FOREIGN].get("/other/whoami").json()
    assert (foreign["method"], foreign["alias"]) == ("mutual_ssl", "partner")
    assert foreign["subject"] == "CN=foreign partner,O=asgi-apim dev"
    no_eku = clients[NO_EKU].get("/m-f/whoami")
    assert no_eku.status_code == 401 and "clientAuth" in no_eku.json()["detail"]
    assert clients[VALID].get("/other/whoami").status_code == 401
    assert clients[MISSING].get("/health").status_code != 401  # public path, no credentials needed


# --------------------------------------------------------------------- schemes


def _api_key(world: World, api: str) -> str:
    return issue_api_key(load_config(world.config), api, "Silver", subject="app-1", expires=600)


def _basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_schemes_in_configured_order_first_valid_wins(clients: dict[str, httpx.Client], world: World) -> None:
    client = clients[MISSING]
    key = _api_key(world, "multi")
    both = client.get("/multi/whoami", headers={"apikey": key, **_bearer(world.token())}).json()
    assert (both["method"], both["subject"], both["tier"]) == ("api_key", "app-1", "Silver")
    skipped = client.get("/multi/whoami", headers={"apikey": "not-a-key", **_bearer(world.token())}).json()
    assert (skipped["method"], skipped["subject"]) == ("oauth2", "alice")
    basic = client.get("/multi/whoami", headers=_basic("bob", world.users["bob"])).json()
    assert (basic["method"], basic["subject"], basic["tier"]) == ("basic", "bob", "Bronze")
    assert client.get("/multi/whoami", params={"apikey": key}).json()["method"] == "api_key"


def _challenges(www: str) -> list[str]:
    return [s for s in ("APIKey", "Bearer", "Basic") if f"{s} realm=" in www]


def test_one_challenge_per_scheme_and_missing_vs_invalid(clients: dict[str, httpx.Client], world: World) -> None:
    client = clients[MISSING]
    nothing = client.get("/multi/whoami")
    assert nothing.status_code == 401 and nothing.json()["code"] == 900902
    www = nothing.headers["www-authenticate"]
    assert _challenges(www) == ["APIKey", "Bearer", "Basic"] and "error=" not in www
    assert [www.index(s) for s in ("APIKey", "Bearer", "Basic")] == sorted(
        www.index(s) for s in ("APIKey", "Bearer", "Basic")
    )
    other_api = client.get("/multi/whoami", headers={"apikey": _api_key(world, "d")})  # a key for another API
    assert other_api.status_code == 403 and other_api.json()["code"] == 900908  # WSO2: not subscribed
    refused = [
        _bearer(world.token(T_BAD_SIG)),
        _basic("bob", "wrong"),
        _basic("mallory", "whatever"),
        {"apikey": "x.y.z"},
    ]
    for headers in refused:
        response = client.get("/multi/whoami", headers=headers)
        assert response.status_code == 401 and response.json()["code"] == 900901, (headers, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert _challenges(response.headers["www-authenticate"]) == ["APIKey", "Bearer", "Basic"]
    bad_bearer = client.get("/multi/whoami", headers=_bearer(world.token(T_EXPIRED))).headers["www-authenticate"]
    assert 'Bearer realm="asgi-apim", error="invalid_token"' in bad_bearer


def test_second_issuer_from_jwks_file_and_key_rotation(clients: dict[str, httpx.Client], world: World) -> None:
    client = clients[MISSING]
    es = world.key2.sign(claims(iss=ISSUER2, sub="carol"))
    assert client.get("/d/whoami", headers=_bearer(es)).json()["subject"] == "carol"
    crossed = world.key2.sign(claims(sub="carol"))  # the first issuer's name, the second issuer's key
    assert client.get("/d/whoami", headers=_bearer(crossed)).json()["code"] == 900901
    new = rsa_key("k2", second=True)
    rotated = new.sign(claims(sub="dave"))
    assert client.get("/d/whoami", headers=_bearer(rotated)).status_code == 401
    world.idp.jwks = {"keys": [world.key.jwk(), new.jwk()]}
    fetches = world.idp.count("/jwks.json")
    assert client.get("/d/whoami", headers=_bearer(rotated)).json()["subject"] == "dave"  # unknown kid: one refetch
    assert world.idp.count("/jwks.json") == fetches + 1
    assert client.get("/d/whoami", headers=_bearer(world.token())).status_code == 200


# --------------------------------------------------------------------- malicious tokens


@pytest.fixture(scope="module")
def malicious(world: World) -> dict[str, str]:
    return malicious_tokens(world.key, world.rogue)


def test_forge_makes_tokens_the_server_accepts(
    clients: dict[str, httpx.Client], world: World, malicious: dict[str, str]
) -> None:
    """The hand-made tokens below differ from a good one only by what the case names."""
    forged = forge({"alg": "RS256", "typ": "JWT", "kid": "k1"}, claims(sub="forged"), rs256(world.key.key))
    assert clients[MISSING].get("/d/whoami", headers=_bearer(forged)).json()["subject"] == "forged"
    small = world.key.sign(claims(pad="x" * 1000))
    assert clients[MISSING].get("/d/whoami", headers=_bearer(small)).status_code == 200


@pytest.mark.parametrize("name", MALICIOUS)
def test_malicious_token_is_401_invalid(clients: dict[str, httpx.Client], malicious: dict[str, str], name: str) -> None:
    response = clients[MISSING].get("/d/whoami", headers=_bearer(malicious[name]))
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == 900901 and body["status"] == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="asgi-apim", error="invalid_token"'
    assert malicious[name] not in response.text


# --------------------------------------------------------------------- resource scopes


def test_resource_scope_missing_is_403(clients: dict[str, httpx.Client], world: World) -> None:
    for api in ("o-f", "d"):
        response = clients[MISSING].delete(f"/{api}/pets/1", headers=_bearer(world.token()))
        assert response.status_code == 403, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == 900910
        assert (
            clients[MISSING].get(f"/{api}/pets/1", headers=_bearer(world.token())).status_code == 200
        )  # GET needs no scope
    both = clients[VALID].delete("/m-t/pets/1", headers=_bearer(world.token()))
    assert both.status_code == 403 and both.json()["code"] == 900910  # an application credential decided too


@pytest.mark.parametrize("claim", [{"scope": "pets:read pets:write"}, {"scope": None, "scp": ["pets:write"]}])
def test_resource_scope_present_is_200(clients: dict[str, httpx.Client], world: World, claim: dict[str, Any]) -> None:
    for api in ("o-f", "d"):
        body = clients[MISSING].delete(f"/{api}/pets/1", headers=_bearer(world.token(**claim))).json()
        assert (body["method"], body["http_method"], body["path"]) == ("oauth2", "DELETE", f"/{api}/pets/1")
        assert "pets:write" in body["scopes"] and "pets:write" in body["auth_scopes"]
    both = clients[VALID].delete("/m-t/pets/1", headers=_bearer(world.token(**claim))).json()
    assert both["methods"] == ["mutual_ssl", "oauth2"] and "pets:write" in both["scopes"]


def test_mutual_ssl_only_access_ignores_scopes(clients: dict[str, httpx.Client], world: World) -> None:
    for api in ("m-f", "o-f"):
        for headers in ({}, _bearer(world.token())):
            body = clients[VALID].delete(f"/{api}/pets/1", headers=headers).json()
            assert (body["method"], body["scopes"], body["http_method"]) == ("mutual_ssl", [], "DELETE")
    assert clients[NO_EKU].delete("/m-f/pets/1").status_code == 401
