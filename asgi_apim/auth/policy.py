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

Two kinds of request are admitted in one synchronous step, made once per path
when its route is first met (`_steps`): a public path, when no throttling stage
is called from here; and the usual request on a route that mutual SSL alone
decides in a stack that throttles in memory: a certificate header seen before,
from a trusted proxy, accepted for the API, charged to its caller's one limit
(`_certificate_step`, which reads the resolver's cache directly, and
`ThrottlingMiddleware.ticket`). Anything else about the request (a first
sighting, a second header, an untrusted peer, a new truststore generation, a
refused certificate, several limits, a storage being retried) leaves it, before
anything is charged, to the general path. tests/test_fast_path.py holds the two
paths to the same answers.
"""

from __future__ import annotations

import logging
import re
import time
import traceback
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asgi_apim._keys import CERTIFICATE, DECISION, PEER, ROUTE
from asgi_apim._lifecycle import BackgroundTasks
from asgi_apim._schema import dot_segments
from asgi_apim.certs.middleware import certificate_error, certificate_principal
from asgi_apim.certs.resolver import _HINT, ABSENT, CertificateOutcome, CertificateResolver
from asgi_apim.config import ApiConfig, SecurityConfig
from asgi_apim.errors import (
    AuthenticationError,
    BadRequest,
    InvalidCredentials,
    MissingCredentials,
    NotFound,
    RequestError,
    ScopeMismatch,
    reject,
)
from asgi_apim.identity import ANONYMOUS, NO_CREDENTIALS, Principal
from asgi_apim.routing import Route, Router
from asgi_apim.throttling.middleware import LATER, ThrottlingMiddleware, Ticket

if TYPE_CHECKING:
    from asgi_apim.auth.base import Authenticator

logger = logging.getLogger("asgi_apim.auth")


class _Trace:
    """The steps of one decision, kept only when someone will read them."""

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps: list[str] = []

    def __call__(self, step: str) -> None:
        self.steps.append(step)


def _no_trace(step: str) -> None:
    return None


# How a route is decided without awaiting, where it can be: a function of the request giving the
# principal `decide` would reach, or None when that needs `decide` (refusals included). Made once
# per route (`_plan`), so the request pays for no plan of its own.
_Recall = Callable[[Scope], "Principal | None"]


# How a request on a known path is admitted in one step, where it can be (`APISecurityMiddleware._steps`):
# ``step(scope, send)`` sets the scope's user and answers the ``send`` to go on with, raises the
# refusal, or answers None (nothing charged) to leave the request to the general path.
_Step = Callable[[Scope, Send], "Send | None"]

_Known = tuple["Route", "_Recall | None"]


_UNPRINTABLE = re.compile(r"[^\x20-\x7e\xa0-\xff]")  # what an HTTP header value cannot carry as it is

_NOWHERE = (None,)  # the peer of a scope without one: no host, never trusted


def _general(send: Send, user: Principal, now: float) -> None:
    """The ticket of a tier whose plan `ThrottlingMiddleware.ticket` does not charge: the general path decides."""
    return None


def _public(scope: Scope, send: Send) -> Send:
    """The step of a public path outside every API when no throttling stage is called from here
    (`APISecurityMiddleware.__call__` takes it inline)."""
    scope["user"] = ANONYMOUS
    scope["auth"] = NO_CREDENTIALS
    return send


class APISecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        router: Router,
        authenticators: Mapping[str, Authenticator] | None = None,
        resolver: CertificateResolver | None = None,
        background: BackgroundTasks | None = None,
        debug_headers: bool = False,
        explain: bool = False,
    ) -> None:
        self.app = app
        self.router = router
        self.authenticators = dict(authenticators or {})
        self.resolver = resolver
        self.background = background or BackgroundTasks()
        self.debug_headers = debug_headers
        self.explain = explain or debug_headers
        self.throttle = app if isinstance(app, ThrottlingMiddleware) else None
        self._next = (
            self.throttle.app if self.throttle is not None else app
        )  # where a request admitted in one step goes
        # whether a route decided by its certificate alone gets a step (`_certificate_step`)
        self._inline = (
            self.throttle is not None
            and self.throttle.inline
            and resolver is not None
            and not resolver.client_validation
            and not self.explain
        )
        # path -> (route, how it is decided): the router's answer and this stage's plan for it, in one lookup;
        # path -> {method: (route, plan)} where a resource on the path names methods
        self._routes: dict[str, _Known | dict[str, _Known]] = {}
        # path -> the one step of an HTTP request on it, for paths whose route does not depend on the method
        self._steps: dict[str, _Step] = {}
        for api in router.apis:
            for security in [api.security, *(r.security for r in api.resources if r.security)]:
                for scheme in security.application:
                    if scheme not in self.authenticators and (
                        security.application_mandatory or security.mutual_ssl != "mandatory"
                    ):
                        raise ValueError(f"API {api.name!r} uses {scheme!r} but no authenticator for it is configured")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type == "http":
            step = self._steps.get(scope["path"])
            if step is not None:
                if step is _public:  # its step, inline
                    scope["user"] = ANONYMOUS
                    scope["auth"] = NO_CREDENTIALS
                    await self._next(scope, receive, send)
                    return
                try:
                    admitted = step(scope, send)
                except RequestError as exc:
                    await reject(scope, send, exc)
                    return
                if admitted is not None:
                    await self._next(scope, receive, admitted)
                    return
        elif scope_type != "websocket":
            if scope_type == "lifespan":
                receive = self.background.lifespan(receive, self._close_authenticators)
            await self.app(scope, receive, send)
            return
        if not self.background.started:
            self.background.ensure_started()
        known = self._routes.get(scope["path"])
        if type(known) is not tuple:  # new, or a path whose route depends on the method
            if "." in scope["path"] and dot_segments(scope["path"]):  # a path met for the first time only
                await reject(scope, send, BadRequest("the path has a '.' or '..' segment"))
                return
            known = self._route(scope.get("method", "GET"), scope["path"], known)  # a WebSocket scope has no method
        route, recall = known
        throttle = self.throttle
        if throttle is None and route.api is not None:
            # for a ThrottlingMiddleware further in, which finds the route there (outside every
            # API it has nothing to add: without a route, only the caller's tier applies)
            scope[ROUTE] = route
        if route.public:
            principal = None
            scope["user"], scope["auth"] = ANONYMOUS, NO_CREDENTIALS
        else:
            principal = recall(scope) if recall is not None else None
            if principal is None:  # not decided without awaiting (a credential validated before): the general path
                trace = _Trace() if self.explain else _no_trace
                try:
                    principal = await self.decide(scope, route, trace)
                except RequestError as exc:
                    trace(f"rejected: {exc.status} {exc.code} {exc.detail}")
                    if self.explain:
                        scope[DECISION] = trace.steps  # type: ignore[union-attr]
                    await reject(scope, self._with_decision(send, trace) if self.debug_headers else send, exc)
                    return
                if self.explain:
                    scope[DECISION] = trace.steps  # type: ignore[union-attr]
                    if self.debug_headers:
                        send = self._with_decision(send, trace)
            scope["user"] = principal
            scope["auth"] = principal.credentials
        if throttle is None:
            await self.app(scope, receive, send)
            return
        # the throttling stage, called directly (no second middleware layer): see ThrottlingMiddleware.admit_now
        admitted = throttle.admit_now(scope, send, principal, route)
        if admitted is LATER:
            await throttle.admit(scope, receive, send, principal, route)
        elif isinstance(admitted, RequestError):
            await reject(scope, send, admitted)
        else:
            await throttle.app(scope, receive, admitted)  # type: ignore[arg-type]

    async def _close_authenticators(self) -> None:
        for auth in self.authenticators.values():
            await auth.aclose()

    def _route(self, method: str, path: str, by_method: dict[str, _Known] | None) -> _Known:
        """The route of a request and its plan, remembered by path alone when no resource on the
        path names methods (most paths), else by path and then method. A path of the first kind
        gets its step, where it has one (`_steps`)."""
        if by_method is not None:
            known = by_method.get(method)
            if known is not None:
                return known
        if len(self._routes) >= 4096:
            self._routes.clear()
            self._steps.clear()
            by_method = None
        route = self.router.match(method, path)
        known = (route, self._plan(route))
        if self.router.varies_by_method(route, path):
            if by_method is None:
                by_method = self._routes[path] = {}
            by_method[method] = known
        else:
            self._routes[path] = known
            step = self._step(route)
            if step is not None:
                self._steps[path] = step
        return known

    def _plan(self, route: Route) -> _Recall | None:
        """How requests on ``route`` are decided without awaiting: an accepted certificate on an
        API that needs nothing else, or an application credential that its authenticator
        validated before (`recall`) and that carries the resource's scopes. None where only
        `decide` can answer, and for every route when the decision is to be explained."""
        api = route.api
        if api is None or self.explain:
            return None
        security = route.resource.security if route.resource and route.resource.security else api.security
        if security.mutual_ssl == "mandatory" and not security.application_mandatory:
            return _certificate_recall(self.resolver, api.name)
        if security.mutual_ssl == "disabled":
            schemes = tuple(_recaller(self.authenticators[s]) for s in security.application)
            if schemes and all(recall is not None for _, recall, _, _ in schemes):
                return _application_recall(
                    api, schemes, frozenset(route.resource.scopes) if route.resource else frozenset()
                )
        return None

    def _step(self, route: Route) -> _Step | None:
        """The one step of HTTP requests on ``route``, where there is one: a public path outside
        every API when no throttling stage is called from here, or a route that mutual SSL alone
        decides in a stack that throttles in memory, believes a proxy's header without a relay
        check and explains nothing."""
        api = route.api
        if api is None:
            return _public if route.public and self.throttle is None else None
        if not self._inline:
            return None
        security = route.resource.security if route.resource and route.resource.security else api.security
        if security.mutual_ssl != "mandatory" or security.application_mandatory:
            return None
        return self._certificate_step(route)

    def _certificate_step(self, route: Route) -> _Step:
        """The usual request on ``route`` (which mutual SSL alone decides) in one step: a
        certificate header seen before (the resolver's cache, read as `CertificateResolver.resolve`
        reads it), from a trusted proxy, accepted for the API, then the caller's ticket
        (`ThrottlingMiddleware.ticket`: one limit charged in memory). None when anything is not
        so (a first sighting, a second header, an untrusted peer, a new truststore, a refused
        certificate, a plan the ticket does not charge): then the general path decides it all,
        with nothing charged here."""
        resolver: CertificateResolver = self.resolver  # type: ignore[assignment]
        throttle: ThrottlingMiddleware = self.throttle  # type: ignore[assignment]
        header, trusted, trust, hint_of = resolver.header, resolver._trusted_hosts, resolver.trust, _HINT
        api = route.api.name  # type: ignore[union-attr]
        tickets: dict[str | None, Ticket] = {}  # per caller tier (the registrations' tiers: few)

        def made(tier: str | None) -> Ticket:
            ticket = tickets[tier] = throttle.ticket(route, tier) or _general
            return ticket

        def step(scope: Scope, send: Send) -> Send | None:
            raw = None
            for name, value in scope["headers"]:
                if name == header:
                    if raw is not None:
                        return None  # twice: the general path refuses it
                    raw = value
            if raw is None:
                return None
            if not trusted.get((scope.get(PEER) or scope.get("client") or _NOWHERE)[0]):
                return None
            hint = resolver._hints.get(raw[hint_of])
            if hint is None or hint[0] != raw:
                return None
            now = time.time()
            if hint[2] <= now or trust._current.generation != resolver._generation:
                return None
            user = hint[3].get(api)
            if user is None:
                return None
            ticket = tickets.get(user.tier) or made(user.tier)
            scope["user"] = user
            scope["auth"] = user.credentials
            return ticket(send, user, now)

        return step

    def _with_decision(self, send: Send, trace: Any) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                # a subject is the caller's text: anything but printable Latin-1
                # (CR and LF above all) would break the header
                value = _UNPRINTABLE.sub("?", "; ".join(trace.steps)).encode("latin-1")[:4000]
                message["headers"] = [*message.get("headers", []), (b"x-apim-decision", value)]
            await send(message)

        return wrapped

    def _certificate(self, scope: Scope) -> CertificateOutcome:
        outcome = scope.get(CERTIFICATE)
        if outcome is None:
            outcome = self.resolver.resolve(scope) if self.resolver is not None else ABSENT
            scope[CERTIFICATE] = outcome
        return outcome

    async def decide(self, scope: Scope, route: Route, trace: Any) -> Principal:
        api = route.api
        if api is None:
            raise NotFound(f"no API is published at {scope['path']}")
        security: SecurityConfig = (
            route.resource.security if route.resource and route.resource.security else api.security
        )
        explain = trace is not _no_trace  # the trace's words are only built when someone reads them
        if explain:
            trace(
                f"api {api.name}: mutual_ssl={security.mutual_ssl}, application={'/'.join(security.application) or '-'}"
                f" ({'mandatory' if security.application_mandatory else 'optional'})"
            )
        cert_principal: Principal | None = None
        cert_failure: RequestError | None = None
        if security.mutual_ssl != "disabled":
            outcome = self._certificate(scope)
            cert_principal = certificate_principal(outcome, api.name)
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
                raise self._with_challenges(cert_failure, security)
            if not security.application_mandatory:
                trace("decided by mutual_ssl")
                return cert_principal  # type: ignore[return-value]
        elif security.mutual_ssl == "optional" and not security.application_mandatory and cert_principal is not None:
            trace("decided by mutual_ssl (application credential not needed)")
            return cert_principal
        principal = await self._application(scope, api, security, trace, cert_failure)
        self._check_scopes(route, principal, trace)
        if cert_principal is not None:
            principal = _combine(cert_principal, principal)
        if explain:
            trace(f"decided by {principal.method}")
        return principal

    async def _application(
        self, scope: Scope, api: ApiConfig, security: SecurityConfig, trace: Any, cert_failure: RequestError | None
    ) -> Principal:
        presented = False
        challenges = []
        last: AuthenticationError | None = None
        for scheme in security.application:
            auth = self.authenticators[scheme]
            challenges.append(auth.challenge)
            credential = auth.credential(scope)
            if credential is None:
                if trace is not _no_trace:
                    trace(f"{scheme}: no credential")
                continue
            presented = True
            try:
                principal = await auth.authenticate(credential, api, scope)
            except AuthenticationError as exc:
                if trace is not _no_trace:
                    trace(f"{scheme}: {exc.detail}")
                last = exc
                if "www-authenticate" in exc.headers:
                    challenges[-1] = exc.headers["www-authenticate"]
                continue
            except RequestError:
                raise  # a clear answer of its own (a key manager that cannot be reached: 503)
            except Exception as exc:  # a defect, not the client's doing: refuse the credential all the same
                logger.error(
                    "the %s authenticator failed unexpectedly (%s); the credential is refused",
                    scheme,
                    type(exc).__name__,
                )
                logger.debug(
                    "where the %s authenticator failed:\n%s", scheme, "".join(traceback.format_tb(exc.__traceback__))
                )
                if trace is not _no_trace:
                    trace(f"{scheme}: could not be validated")
                last = InvalidCredentials(f"the {scheme} credential could not be validated")
                continue
            if trace is not _no_trace:
                trace(f"{scheme}: accepted {principal.subject}")
            return principal
        headers = {"www-authenticate": ", ".join(challenges)} if challenges else {}
        if presented:
            raise InvalidCredentials(last.detail if last else "invalid credentials", headers=headers)
        if cert_failure is not None and cert_failure.status == 401 and security.mutual_ssl == "optional":
            if isinstance(cert_failure, InvalidCredentials):
                raise InvalidCredentials(
                    f"{cert_failure.detail}, and no application credential was presented", headers=headers
                )
        raise MissingCredentials("no credentials were presented", headers=headers)

    def _with_challenges(self, failure: RequestError, security: SecurityConfig) -> RequestError:
        """A certificate failure on an API that also demands an application credential
        challenges for that too (one challenge per scheme the API needs)."""
        if failure.status != 401 or not security.application_mandatory or not security.application:
            return failure
        challenges = [failure.headers.get("www-authenticate", "")]
        challenges += [self.authenticators[s].challenge for s in security.application if s in self.authenticators]
        headers = {**failure.headers, "www-authenticate": ", ".join(c for c in challenges if c)}
        return type(failure)(failure.detail, headers=headers)

    def _check_scopes(self, route: Route, principal: Principal, trace: Any) -> None:
        resource = route.resource
        if resource is None or not resource.scopes:
            return
        if not set(resource.scopes).intersection(principal.scopes):
            if trace is not _no_trace:
                trace(f"scopes: needs one of {' '.join(resource.scopes)}")
            raise ScopeMismatch(f"this resource requires one of the scopes: {' '.join(resource.scopes)}")
        if trace is not _no_trace:
            trace("scopes: satisfied")


def _certificate_recall(resolver: CertificateResolver | None, api_name: str) -> _Recall:
    """The principal of an accepted certificate. The outcome is not left in the scope: a
    request decided here needs it no more, and `decide` (a refusal) finds it in the resolver's
    cache. One scope entry fewer is one dict resize fewer on a typical scope."""
    resolve: Callable[[Scope], CertificateOutcome] = resolver.resolve if resolver is not None else lambda scope: ABSENT

    def recall(scope: Scope) -> Principal | None:
        outcome = scope.get(CERTIFICATE)  # resolved by a MutualTLSMiddleware outside, if any
        return certificate_principal(resolve(scope) if outcome is None else outcome, api_name)

    return recall


def _application_recall(
    api: ApiConfig, schemes: tuple[tuple[Authenticator, Any, Any, bytes | None], ...], scopes: frozenset[str]
) -> _Recall:
    """The principal of the first scheme (in order) whose credential its authenticator validated
    before, if it carries one of ``scopes`` (when the resource sets some)."""

    def recall(scope: Scope) -> Principal | None:
        for auth, recall_of, recall_raw, header in schemes:
            raw = None
            if header is not None:  # first, by the raw header value: a credential seen before is not parsed again
                for name, value in scope["headers"]:
                    if name == header:
                        raw = value
                        break
                if raw is not None:
                    principal = recall_raw(raw, api)
                    if principal is not None:
                        return principal if not scopes or not scopes.isdisjoint(principal.scopes) else None
            credential = auth.credential(scope)
            if credential is None:
                continue
            principal = recall_of(credential, api)
            if principal is None or (scopes and scopes.isdisjoint(principal.scopes)):
                return None
            if raw is not None:
                auth.remember(raw, credential)  # type: ignore[attr-defined]
            return principal
        return None

    if len(schemes) != 1 or schemes[0][3] is None:
        return recall
    _, _, recall_raw, header = schemes[0]

    def recall_one(scope: Scope) -> Principal | None:
        """One scheme with a header (the usual API): its raw value looked up directly; on a miss,
        the general recall, which parses the credential and remembers the raw value for next time."""
        for name, value in scope["headers"]:
            if name == header:
                principal = recall_raw(value, api)
                if principal is not None:
                    return principal if not scopes or not scopes.isdisjoint(principal.scopes) else None
                break
        return recall(scope)

    return recall_one


def _recaller(auth: Authenticator) -> tuple[Authenticator, Any, Any, bytes | None]:
    """``(auth, its recall, its recall_raw, the header its credential is read from)``: the header
    only when the scheme can `remember` a raw value of it (then `recall_raw` finds the credential
    by the value's bytes)."""
    recall = getattr(auth, "recall", None)
    recall_raw = getattr(auth, "recall_raw", None)
    header = getattr(auth, "header", None) if hasattr(auth, "remember") and recall_raw is not None else None
    return auth, recall, recall_raw, header if isinstance(header, bytes) else None


def _combine(cert: Principal, app: Principal) -> Principal:
    """An application principal that also records the accepted certificate."""
    return Principal(
        method=app.method,
        subject=app.subject,
        api=app.api,
        tier=app.tier,
        alias=cert.alias,
        scopes=app.scopes,
        methods=("mutual_ssl", app.method),
        certificate=cert.certificate,
        claims=app.claims,
        throttle_key=app.throttle_key,
    )
