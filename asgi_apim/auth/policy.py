"""`APISecurityMiddleware`: WSO2's mutual-SSL x application-security decision.

Per API (or per resource, when a resource sets its own ``security``):

==========  =====================  ===========  ===========  ==========================================
mutual_ssl  application_mandatory  certificate  credential   result
==========  =====================  ===========  ===========  ==========================================
mandatory   false                  valid        any          200 mutual_ssl (credential ignored)
mandatory   false                  not valid    any          401
mandatory   true                   valid        valid        200, both recorded (method: the scheme)
mandatory   true                   valid        not valid    401
mandatory   true                   not valid    any          401
optional    false                  valid        any          200 mutual_ssl (credential ignored)
optional    false                  not valid    valid        200, the application scheme
optional    false                  not valid    not valid    401
optional    true                   any          valid        200, the scheme (certificate kept if valid)
optional    true                   any          not valid    401
disabled    (true)                 ignored      valid / not  200 / 401
==========  =====================  ===========  ===========  ==========================================

Application schemes are tried in the configured order; one whose credential is
absent is skipped; the first that validates wins. A 401 carries 900902 when no
credential was presented at all and 900901 when one was presented and refused,
with one ``WWW-Authenticate`` challenge per scheme. Resource scopes (any one of
a resource's scopes suffices, as in WSO2) apply to application credentials;
mutual-SSL-only access ignores them. Public paths and public resources reach
the app unauthenticated; a path no API owns is 404 (900906). An authenticator
that fails in an unforeseen way refuses the credential (logged by exception
type, and at DEBUG where it failed, never with its message, which could quote
the credential): the request fails closed with a 401, not a 500.

Three decisions are made elsewhere, each by its owner, and every request of
their kind passes through the owner's entry: the certificate by
`CertificateResolver.resolve` (asgi_apim.certs), the application credential by
`ApplicationSecurity.recall` and then `.authenticate` (asgi_apim.auth.application),
the throttling charge by `Limiter.charge` (asgi_apim.throttling). This stage holds
WSO2's table above and, per route, worked out once, the owners' callables that
decide a usual request without awaiting: `CertificateResolver.lookup_for` on a
route that mutual SSL alone decides, `ApplicationSecurity.recall_for` on one that
application credentials alone decide, and `Limiter.plans_for`. When such a
callable answers None, `decide` works through the table.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_apim._keys import CERTIFICATE, DECISION, ROUTE
from asgi_apim._lifecycle import BackgroundTasks
from asgi_apim._schema import dot_segments
from asgi_apim.auth.application import ApplicationSecurity, Choice, Trace, no_trace
from asgi_apim.auth.base import Authenticator
from asgi_apim.certs.resolver import ABSENT, CertificateOutcome, CertificateResolver, certificate_error
from asgi_apim.certs.resolver import certificate_principal as _principal_of
from asgi_apim.config import ApiConfig, SecurityConfig
from asgi_apim.errors import BadRequest, NotFound, RequestError, reject
from asgi_apim.identity import ANONYMOUS, NO_CREDENTIALS, Principal
from asgi_apim.routing import Route, Router
from asgi_apim.throttling.limiter import ANONYMOUS as ANONYMOUS_TIER
from asgi_apim.throttling.limiter import Limiter, Plans

_UNPRINTABLE = re.compile(r"[^\x20-\x7e\xa0-\xff]")  # what an HTTP header value cannot carry as it is
_MAX_ROUTES = 4096


class _Trace:
    """The steps of one decision, kept only when someone will read them."""

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps: list[str] = []

    def __call__(self, step: str) -> None:
        self.steps.append(step)


class RouteDecision:
    """How requests on one route are decided, worked out when the route is first met: its
    security, the application schemes' `Choice`, the owners' callable that decides a usual
    request without awaiting (``recall``; None where only `APISecurityMiddleware.decide` can),
    and the route's throttling plans."""

    __slots__ = ("route", "public", "security", "choice", "recall", "plans", "strip", "accepted")

    def __init__(
        self,
        route: Route,
        security: SecurityConfig | None,
        choice: Choice | None,
        recall: Callable[[Scope], Principal | None],
        plans: Plans | None,
        strip: Callable[[Scope, Principal], None] | None = None,
    ) -> None:
        self.route = route
        self.public = route.public
        self.security = security
        self.choice = choice
        self.recall = recall
        self.plans = plans
        self.strip = strip  # removes the credentials that authenticated (None: they reach the app)
        self.accepted: dict[str, int] | None = None  # method -> requests accepted on the route's API (metrics on)


def _undecided(scope: Scope) -> None:
    """The ``recall`` of a route that only `APISecurityMiddleware.decide` can decide."""
    return None


class APISecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        router: Router,
        authenticators: Mapping[str, Authenticator] | None = None,
        credentials: ApplicationSecurity | None = None,
        resolver: CertificateResolver | None = None,
        limiter: Limiter | None = None,
        background: BackgroundTasks | None = None,
        debug_headers: bool = False,
        explain: bool = False,
        accepted: dict[str, dict[str, int]] | None = None,
    ) -> None:
        self.app = app
        self.accepted = accepted  # api -> method -> requests accepted, for metrics (None: not counted)
        self.router = router
        self.credentials = credentials or ApplicationSecurity(authenticators or {})
        self.resolver = resolver
        self.limiter = limiter
        self.background = background or BackgroundTasks()
        self.debug_headers = debug_headers
        self.explain = explain or debug_headers
        # path -> how requests on it are decided; path -> {method: ...} where a resource on the path names methods
        self._routes: dict[str, RouteDecision] = {}
        self._by_method: dict[str, dict[str, RouteDecision]] = {}  # paths whose route depends on the method
        authenticators = self.credentials.authenticators
        for api in router.apis:
            for security in [api.security, *(r.security for r in api.resources if r.security)]:
                for scheme in security.application:
                    if scheme not in authenticators and (
                        security.application_mandatory or security.mutual_ssl != "mandatory"
                    ):
                        raise ValueError(f"API {api.name!r} uses {scheme!r} but no authenticator for it is configured")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                receive = self.background.lifespan(receive, self._close)
            await self.app(scope, receive, send)
            return
        if not self.background.started:
            self.background.ensure_started()
        path = scope["path"]
        known = self._routes.get(path)
        if known is None:  # new, or a path whose route depends on the method
            by_method = self._by_method.get(path)
            if by_method is None and "." in path and dot_segments(path):
                await reject(scope, send, BadRequest("the path has a '.' or '..' segment"))
                return
            known = self._route(scope.get("method", "GET"), path, by_method)  # a WebSocket scope has no method
        try:
            if known.public:
                principal = None
                scope["user"], scope["auth"] = ANONYMOUS, NO_CREDENTIALS
            else:
                principal = known.recall(scope)  # the owners' call: the credentials already taken out
                if principal is None:
                    if self.explain:
                        trace = _Trace()
                        scope[DECISION] = trace.steps
                        if self.debug_headers:
                            send = self._with_decision(send, trace)
                        principal = await self.decide(scope, known, trace)
                    else:
                        principal = await self.decide(scope, known)
                    strip = known.strip
                    if strip is not None:
                        strip(scope, principal)
                scope["user"] = principal
                scope["auth"] = principal.credentials
            limiter = self.limiter
            if limiter is None:
                if known.route.api is not None:
                    scope[ROUTE] = known.route  # for a ThrottlingMiddleware further in
            else:
                plan = known.plans[principal.tier if principal is not None else ANONYMOUS_TIER]  # type: ignore[index]  # plans exist with a limiter
                admitted = limiter.charge(plan, scope, send, principal)
                if admitted is None:
                    admitted = await limiter.charge_later(plan, scope, send, principal)
                send = admitted
        except RequestError as exc:  # ``send`` is still the one to answer on (the decision header's, explained)
            steps = scope.get(DECISION)
            if steps is not None:
                steps.append(f"rejected: {exc.status} {exc.code} {exc.detail}")
            await reject(scope, send, exc, known.route.api.name if known.route.api is not None else None)
            return
        accepted = known.accepted
        if accepted is not None:
            method = scope.get("method", "WEBSOCKET")
            accepted[method] = accepted.get(method, 0) + 1
        await self.app(scope, receive, send)

    async def _close(self) -> None:
        await self.credentials.aclose()
        if self.limiter is not None:
            await self.limiter.aclose()

    def _route(self, method: str, path: str, by_method: dict[str, RouteDecision] | None) -> RouteDecision:
        """How requests on ``path`` are decided, remembered by path alone when no resource on the
        path names methods (most paths), else by path and then method."""
        if by_method is not None:
            known = by_method.get(method)
            if known is not None:
                return known
        if len(self._routes) + len(self._by_method) >= _MAX_ROUTES:
            self._routes.clear()
            self._by_method.clear()
            by_method = None
        route = self.router.match(method, path)
        known = self._decision(route)
        if self.router.varies_by_method(route, path):
            if by_method is None:
                by_method = self._by_method[path] = {}
            by_method[method] = known
        else:
            self._routes[path] = known
        return known

    def _decision(self, route: Route) -> RouteDecision:
        """A route's `RouteDecision`, composed from the owners' callables, counting into its API's
        counts when metrics are on."""
        known = self._compose(route)
        if self.accepted is not None:
            api = route.api.name if route.api is not None else "-"
            known.accepted = self.accepted.setdefault(api, {})
        return known

    def _compose(self, route: Route) -> RouteDecision:
        plans = self.limiter.plans_for(route if route.api is not None else None) if self.limiter else None
        api = route.api
        if api is None:
            return RouteDecision(route, None, None, _undecided, plans)
        resource = route.resource
        security = resource.security if resource is not None and resource.security else api.security
        choice = None
        if security.application_mandatory or security.mutual_ssl != "mandatory":
            choice = self.credentials.choice(api, security, resource.scopes if resource is not None else ())
        strip = not api.forward_credentials
        recall: Callable[[Scope], Principal | None] = _undecided
        if route.public or self.explain:
            pass
        elif security.mutual_ssl == "mandatory" and not security.application_mandatory:
            if self.resolver is not None:
                recall = self.resolver.lookup_for(api.name, api.version, strip=strip)
        elif security.mutual_ssl == "disabled" and choice is not None and choice.schemes:
            recall = self.credentials.recall_for(choice, strip=strip)
        return RouteDecision(route, security, choice, recall, plans, self._stripper(api, security, choice))

    def _stripper(
        self, api: ApiConfig, security: SecurityConfig, choice: Choice | None
    ) -> Callable[[Scope, Principal], None] | None:
        """What removes the credentials of a request on this route once it is authenticated: the
        certificate header (where certificates are read) and the application credential that
        decided; None with ``forward_credentials``."""
        if api.forward_credentials:
            return None
        resolver = self.resolver if security.mutual_ssl != "disabled" else None
        credentials = self.credentials.strip_for(choice) if choice is not None and choice.schemes else None
        if resolver is not None and credentials is not None:

            def both(scope: Scope, principal: Principal) -> None:
                resolver.strip(scope)
                if principal.method != "mutual_ssl":
                    credentials(scope, principal)

            return both
        if resolver is not None:

            def certificate(scope: Scope, principal: Principal) -> None:
                resolver.strip(scope)

            return certificate
        return credentials

    def _with_decision(self, send: Send, trace: _Trace) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                # a subject is the caller's text: anything but printable Latin-1
                # (CR and LF above all) would break the header
                value = _UNPRINTABLE.sub("?", "; ".join(trace.steps)).encode("latin-1")[:4000]
                message["headers"] = [*message.get("headers", []), (b"x-apim-decision", value)]
            await send(message)

        return wrapped

    def _certificate(self, scope: Scope) -> CertificateOutcome:
        outcome = scope.get(CERTIFICATE)  # resolved by a MutualTLSMiddleware outside, if any
        if outcome is None:
            outcome = self.resolver.resolve(scope) if self.resolver is not None else ABSENT
            scope[CERTIFICATE] = outcome
        return outcome

    async def decide(self, scope: Scope, known: RouteDecision, trace: Trace = no_trace) -> Principal:
        """WSO2's table for one request: the caller, or the `RequestError` to answer with."""
        route, security = known.route, known.security
        api = route.api
        if api is None or security is None:
            raise NotFound(f"no API is published at {scope['path']}")
        explain = trace is not no_trace  # the trace's words are only built when someone reads them
        if explain:
            trace(
                f"api {api.name}: mutual_ssl={security.mutual_ssl}, application={'/'.join(security.application) or '-'}"
                f" ({'mandatory' if security.application_mandatory else 'optional'})"
            )
        cert_principal: Principal | None = None
        cert_failure: RequestError | None = None
        if security.mutual_ssl != "disabled":
            outcome = self._certificate(scope)
            cert_principal = _principal_of(outcome, api.name, api.version)
            if cert_principal is None:
                cert_failure = certificate_error(outcome, api.name)
                if explain:
                    none = outcome.verdict is None and outcome.error is None
                    trace(f"mutual_ssl: {'no client certificate' if none else cert_failure.detail}")
                if cert_failure.status == 400:  # a malformed header is refused whatever the mode, never read past
                    raise cert_failure
            elif explain:
                trace(
                    f"mutual_ssl: accepted {cert_principal.subject} "
                    f"alias={cert_principal.alias} tier={cert_principal.tier}"
                )
        if security.mutual_ssl == "mandatory":
            if cert_failure is not None:
                raise self.credentials.challenge(cert_failure, known.choice) if known.choice else cert_failure
            if not security.application_mandatory:
                assert cert_principal is not None  # no failure: accepted
                trace("decided by mutual_ssl")
                return cert_principal
        elif security.mutual_ssl == "optional" and not security.application_mandatory and cert_principal is not None:
            trace("decided by mutual_ssl (application credential not needed)")
            return cert_principal
        assert known.choice is not None  # built for every security that may need an application credential
        # a route that application credentials alone decide has just been through `recall`
        recalled = known.recall is not _undecided and security.mutual_ssl == "disabled"
        principal = await self.credentials.authenticate(scope, known.choice, trace, cert_failure, recalled=recalled)
        if cert_principal is not None:
            principal = principal.derive(
                alias=cert_principal.alias,
                methods=("mutual_ssl", principal.method),
                certificate=cert_principal.certificate,
            )
        if explain:
            trace(f"decided by {principal.method}")
        return principal


__all__ = ["APISecurityMiddleware", "RouteDecision"]
