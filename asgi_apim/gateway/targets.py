"""The APIs the gateway serves, each built once into a `Target`: its endpoint groups, its
backend credential, and the request headers and query parameters never forwarded to it.

The client's credential is dropped from wherever the API's authenticators read it
(`ApplicationSecurity.locations`: ``Authorization`` for oauth2 and basic, or an API's own
``auth_header``; the API key's header and query parameter) unless the API has
``forward_credentials = true`` and no ``[apis.backend_security]``: a backend that gets the
gateway's credential never gets the client's.
The certificate header is always dropped (``forward_client_certificate`` sends the validated one).

A resource with a ``backend`` or ``sandbox_backend`` of its own sends the requests it matches there.
Which resource a request matches is the `Router`'s answer (its cached `Router.match`, the routing
`asgi_apim.protect` does, ``public_paths`` aside: a public path below a resource still goes to that
resource's backend); only an API with such resources asks it. One `EndpointGroup` per
distinct backend of an API: resources naming the same endpoints (the API's included) share one,
with its suspension state and round robin."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.types import Scope

from asgi_apim.auth.application import ApplicationSecurity
from asgi_apim.certs.resolver import certificate_header_name
from asgi_apim.config import ApiConfig, Config, ResourceConfig
from asgi_apim.errors import Forbidden
from asgi_apim.gateway.backend_jwt import BackendJWT
from asgi_apim.gateway.backend_security import BackendAuth, backend_auth
from asgi_apim.gateway.endpoints import EndpointGroup
from asgi_apim.gateway.headers import CLIENT_CERTIFICATE, FORWARDED, HOP_BY_HOP, JWT_ASSERTION
from asgi_apim.gateway_config import BackendConfig, SuspensionConfig
from asgi_apim.routing import Route, Router

Groups = tuple[EndpointGroup, EndpointGroup | None]  # production, sandbox


@dataclass(frozen=True)
class ResourceGroups:
    """The endpoint groups of one resource with a backend of its own (for `/health/ready`)."""

    label: str  # "GET /pets/{id}"
    production: EndpointGroup | None  # None: the API's
    sandbox: EndpointGroup | None


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
    # with resources that have backends of their own: the router's match, and id(resource) -> its groups
    route: Callable[[str, str], Route] | None = None
    by_resource: dict[int, Groups] = field(default_factory=dict)
    resources: tuple[ResourceGroups, ...] = ()

    @property
    def name(self) -> str:
        return self.api.name

    def group(self, scope: Scope) -> EndpointGroup:
        """The endpoint group of the request: its resource's, else the API's; sandbox by the caller's key type."""
        production, sandbox = self.production, self.sandbox
        route = self.route
        if route is not None:
            groups = self.by_resource.get(id(route(scope.get("method", "GET"), scope["path"]).resource))
            if groups is not None:
                production, sandbox = groups
        if getattr(scope.get("user"), "key_type", "PRODUCTION") == "SANDBOX":
            if sandbox is None:
                raise Forbidden("the API has no sandbox endpoint: a sandbox credential cannot call it")
            return sandbox
        return production


def _label(resource: ResourceConfig) -> str:
    return f"{','.join(resource.methods) or '*'} {resource.path}"


class _Groups:
    """One `EndpointGroup` per distinct backend of an API."""

    def __init__(self, suspension: SuspensionConfig) -> None:
        self.suspension = suspension
        self.groups: dict[BackendConfig, EndpointGroup] = {}

    def __call__(self, backend: BackendConfig) -> EndpointGroup:
        group = self.groups.get(backend)
        if group is None:
            group = self.groups[backend] = EndpointGroup(backend, self.suspension)
        return group


def _resource_groups(
    api: ApiConfig, groups: _Groups, production: EndpointGroup, sandbox: EndpointGroup | None
) -> tuple[dict[int, Groups], tuple[ResourceGroups, ...]]:
    by_resource: dict[int, Groups] = {}
    shown: dict[str, ResourceGroups] = {}
    for r in api.resources:
        if r.backend is None and r.sandbox_backend is None:
            continue
        own = groups(r.backend) if r.backend is not None else None
        own_sandbox = groups(r.sandbox_backend) if r.sandbox_backend is not None else None
        by_resource[id(r)] = (production if own is None else own, sandbox if own_sandbox is None else own_sandbox)
        shown.setdefault(_label(r), ResourceGroups(_label(r), own, own_sandbox))
    return by_resource, tuple(shown.values())


def targets(config: Config, credentials: ApplicationSecurity) -> list[Target]:
    """The `Target` of every API with a backend; ``credentials`` says where each API's client
    credentials are read (`ApplicationSecurity.locations`), which the backend never gets."""
    targets = []
    router: Router | None = None
    cert_header = certificate_header_name(config.mutual_ssl)
    for api in config.apis:
        gw = api.gateway
        if gw.backend is None:
            continue
        dropped = set(HOP_BY_HOP | FORWARDED | {b"host", cert_header, CLIENT_CERTIFICATE, JWT_ASSERTION})
        query: set[str] = set()
        auth = backend_auth(gw.backend_security) if gw.backend_security else None
        # forward_credentials: the client's own credential goes on, unless the gateway presents its own
        if not api.forward_credentials or auth is not None:
            headers, params = credentials.locations(api)  # where the API's authenticators read credentials
            dropped |= headers
            query |= params
        if auth is not None:
            if auth.header_name:
                dropped.add(auth.header_name)
            if auth.query_name:
                query.add(auth.query_name)
        groups = _Groups(gw.suspension)
        production = groups(gw.backend)
        sandbox = groups(gw.sandbox_backend) if gw.sandbox_backend else None
        by_resource, resources = _resource_groups(api, groups, production, sandbox)
        backend_jwt = None
        if gw.backend_jwt is not None:
            key = f"apis[{api.name}].backend_jwt.signing_key"
            backend_jwt = BackendJWT(gw.backend_jwt, api.name, api.context, key=key, version=api.version)
            dropped.add(backend_jwt.header)
        target = Target(api, production, sandbox, auth, frozenset(dropped), query, backend_jwt)
        if by_resource:
            router = router or Router(config.apis)  # public_paths aside: a public path's resource is still its own
            target.route, target.by_resource, target.resources = router.match, by_resource, resources
        targets.append(target)
    return sorted(targets, key=lambda t: len(t.api.context), reverse=True)
