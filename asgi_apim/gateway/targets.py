"""The APIs the gateway serves, each built once into a `Target`: its endpoint groups, its
backend credential, and the request headers and query parameters never forwarded to it.

The client's credential (``Authorization`` for oauth2 and basic, the API key's header and query
parameter) is dropped unless the API has ``forward_credentials = true`` and no
``[apis.backend_security]``: a backend that gets the gateway's credential never gets the client's.
The certificate header is always dropped (``forward_client_certificate`` sends the validated one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asgi_apim.config import ApiConfig, Config
from asgi_apim.errors import Forbidden
from asgi_apim.gateway.backend_jwt import BackendJWT
from asgi_apim.gateway.backend_security import BackendAuth, backend_auth
from asgi_apim.gateway.endpoints import EndpointGroup
from asgi_apim.gateway.headers import CLIENT_CERTIFICATE, FORWARDED, HOP_BY_HOP, JWT_ASSERTION


@dataclass
class Target:
    """One API with a backend, as the proxy uses it (built once)."""

    api: ApiConfig
    production: EndpointGroup
    sandbox: EndpointGroup | None
    auth: BackendAuth | None
    dropped: frozenset[bytes]  # request headers never forwarded
    dropped_query: set[str] = field(default_factory=set)
    jwt: BackendJWT | None = None

    @property
    def name(self) -> str:
        return self.api.name

    def group(self, user: Any) -> EndpointGroup:
        if getattr(user, "key_type", "PRODUCTION") == "SANDBOX":
            if self.sandbox is None:
                raise Forbidden("the API has no sandbox endpoint: a sandbox credential cannot call it")
            return self.sandbox
        return self.production


def targets(config: Config) -> list[Target]:
    targets = []
    cert_header = config.mutual_ssl.certificate_header.lower().encode("latin-1")
    for api in config.apis:
        gw = api.gateway
        if gw.backend is None:
            continue
        dropped = set(HOP_BY_HOP | FORWARDED | {b"host", cert_header, CLIENT_CERTIFICATE, JWT_ASSERTION})
        query: set[str] = set()
        auth = backend_auth(gw.backend_security) if gw.backend_security else None
        # forward_credentials: the client's own credential goes on, unless the gateway presents its own
        if not api.forward_credentials or auth is not None:
            for sec in (api.security, *(r.security for r in api.resources if r.security)):
                schemes = set(sec.application)
                if "basic" in schemes or ("oauth2" in schemes and sec.auth_header is None):
                    dropped.add(b"authorization")
                if "oauth2" in schemes and sec.auth_header:
                    dropped.add(sec.auth_header.encode("latin-1"))
                if "api_key" in schemes:
                    header = config.api_keys.header if sec.api_key_header is None else sec.api_key_header
                    param = config.api_keys.query_param if sec.api_key_query is None else sec.api_key_query
                    if header:
                        dropped.add(header.lower().encode("latin-1"))
                    if param:
                        query.add(param)
        if auth is not None:
            if auth.header_name:
                dropped.add(auth.header_name)
            if auth.query_name:
                query.add(auth.query_name)
        production = EndpointGroup(gw.backend, gw.suspension)
        sandbox = EndpointGroup(gw.sandbox_backend, gw.suspension) if gw.sandbox_backend else None
        backend_jwt = None
        if gw.backend_jwt is not None:
            key = f"apis[{api.name}].backend_jwt.signing_key"
            backend_jwt = BackendJWT(gw.backend_jwt, api.name, api.context, key=key, version=api.version)
            dropped.add(backend_jwt.header)
        targets.append(Target(api, production, sandbox, auth, frozenset(dropped), query, backend_jwt))
    return sorted(targets, key=lambda t: len(t.api.context), reverse=True)
