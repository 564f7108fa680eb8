"""An API's (or resource's) own API-key header and query parameter, and its own auth header: the
same keys and caches, read where the route says, removed from there."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ed25519

from asgi_apim.auth.apikey import ApiKeyAuthenticator
from asgi_apim.auth.application import ApplicationSecurity
from asgi_apim.auth.base import LocationSupport
from asgi_apim.auth.jwt import JWTIssuer, OAuth2Authenticator
from asgi_apim.config import ApiConfig, KeyManagerConfig, ResourceConfig, SecurityConfig
from tests.asgi import make_scope

KEY = ed25519.Ed25519PrivateKey.generate()
PETS = ApiConfig(name="pets", context="/pets")
SECRET = "k" * 40


def api_key() -> str:
    now = int(time.time())
    claims = {
        "iss": "asgi-apim",
        "sub": "s",
        "apis": ["pets"],
        "tier": "Unlimited",
        "iat": now,
        "exp": now + 60,
        "jti": "j",
    }
    return jwt.encode(claims, KEY, algorithm="EdDSA")


def test_an_api_key_read_where_the_security_says() -> None:
    auth = ApiKeyAuthenticator(KEY)
    assert isinstance(auth, LocationSupport)
    assert auth.located(SecurityConfig()) is auth
    header_only = auth.located(SecurityConfig(api_key_header="x-pet-key", api_key_query=""))
    query_only = auth.located(SecurityConfig(api_key_header="", api_key_query="k"))
    key = api_key()
    assert header_only.credential(make_scope(headers=[("X-Pet-Key", key)])) == key
    assert header_only.credential(make_scope(headers=[("apikey", key)])) is None
    assert header_only.credential(make_scope(query=f"apikey={key}")) is None
    assert query_only.credential(make_scope(query=f"a=1&k={key}")) == key
    assert query_only.credential(make_scope(headers=[("apikey", key)])) is None
    assert header_only.header == b"x-pet-key" and query_only.header is None
    scope = make_scope(headers=[("X-Pet-Key", key), ("apikey", "other")], query="k=1")
    header_only.strip(scope)
    assert scope["headers"] == [(b"apikey", b"other")] and scope["query_string"] == b"k=1"
    assert auth.header == b"apikey" and auth.query_param == "apikey"  # the original is unchanged


async def test_an_oauth2_token_read_from_the_auth_header() -> None:
    km = KeyManagerConfig(name="idp", issuer="https://idp", shared_secret=SECRET, algorithms=("HS256",))
    auth = OAuth2Authenticator([JWTIssuer.from_config(km)])
    own = auth.located(SecurityConfig(auth_header="x-auth"))
    token = jwt.encode({"iss": "https://idp", "sub": "alice", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    scope = make_scope(headers=[("X-Auth", f"Bearer {token}"), ("authorization", "Basic eDp5")])
    assert own.credential(scope) == token and auth.credential(scope) is None
    principal = await own.authenticate(token, PETS, scope)
    assert principal.subject == "alice"
    assert auth.recall(token, PETS) is not None  # one cache for both
    own.strip(scope)
    assert scope["headers"] == [(b"authorization", b"Basic eDp5")]


def test_one_located_authenticator_per_place_and_the_route_strips_from_there(tmp_path: Path) -> None:
    security = ApplicationSecurity({"api_key": ApiKeyAuthenticator(KEY)})
    place = SecurityConfig(application=("api_key",), api_key_header="x-k")
    first = security.choice(PETS, place)
    again = security.choice(PETS, SecurityConfig(application=("api_key",), api_key_header="x-k"))
    assert first.schemes[0] is again.schemes[0] and first.schemes[0] is not security.authenticators["api_key"]
    assert first.headers == (b"x-k",)
    default = security.choice(PETS, SecurityConfig(application=("api_key",)))
    assert default.schemes[0] is security.authenticators["api_key"]
    assert security.strip_for(default) == security.strip
    key = api_key()
    scope = make_scope(headers=[("x-k", key)])
    principal = security.recall(scope, first)
    assert principal is None  # not validated yet: `authenticate` decides
    strip = security.strip_for(first)
    from asgi_apim.identity import Principal

    strip(scope, Principal(method="api_key", subject="s"))
    assert scope["headers"] == []


def test_the_locations_of_an_api_are_its_authenticators_places() -> None:
    km = KeyManagerConfig(name="idp", issuer="https://idp", shared_secret=SECRET, algorithms=("HS256",))
    security = ApplicationSecurity(
        {"api_key": ApiKeyAuthenticator(KEY), "oauth2": OAuth2Authenticator([JWTIssuer.from_config(km)])}
    )
    api = ApiConfig(
        name="pets",
        context="/pets",
        security=SecurityConfig(application=("oauth2", "api_key")),
        resources=(
            ResourceConfig(path="/pets/a", security=SecurityConfig(application=("oauth2",), auth_header="X-Auth")),
            ResourceConfig(
                path="/pets/b", security=SecurityConfig(application=("api_key",), api_key_header="", api_key_query="k")
            ),
        ),
    )
    assert security.locations(api) == (frozenset({b"authorization", b"apikey", b"x-auth"}), frozenset({"apikey", "k"}))
    assert security.locations(PETS) == (frozenset({b"authorization"}), frozenset())  # the default: oauth2
