"""`ApplicationSecurity`: the application-credential decision (OAuth2, API key, basic).

Schemes are tried in the configured order; one whose credential is absent is
skipped; the first that validates wins. A 401 carries 900902 when no credential
was presented at all and 900901 when one was presented and refused, with one
``WWW-Authenticate`` challenge per scheme. Resource scopes (any one of a
resource's scopes suffices, as in WSO2) must be carried by the credential.

Every request that needs an application credential passes through `recall`
first: it refuses a credential header sent twice (400, 900900: a proxy that reads
the last value and a stage that reads the first would disagree about the
caller), and answers a caller whose credential its authenticator validated
before. When it answers None, `authenticate` decides (awaiting a key source, an
introspection endpoint or bcrypt). A route's `recall_for` is that same `recall`
bound to the route's schemes and scopes, built once per route.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable, Mapping

from starlette.types import Scope

from asgi_apim.auth.apikey import ApiKeyAuthenticator
from asgi_apim.auth.base import Authenticator, LocationSupport, RecallSupport, schemes_in_use
from asgi_apim.auth.basic import BasicAuthenticator
from asgi_apim.auth.jwt import OAuth2Authenticator
from asgi_apim.config import ApiConfig, Config, SecurityConfig
from asgi_apim.errors import (
    AuthenticationError,
    BadRequest,
    ConfigError,
    InvalidCredentials,
    MissingCredentials,
    RequestError,
    ScopeMismatch,
)
from asgi_apim.identity import Principal

logger = logging.getLogger("asgi_apim.auth")

Trace = Callable[[str], None]
Recall = Callable[[Scope], "Principal | None"]

_BUILDERS: dict[str, Callable[[Config], Authenticator]] = {
    "oauth2": OAuth2Authenticator.from_config,
    "api_key": ApiKeyAuthenticator.from_config,
    "basic": BasicAuthenticator.from_config,
}


def no_trace(step: str) -> None:
    return None


def build_authenticators(config: Config, schemes: Iterable[str] | None = None) -> dict[str, Authenticator]:
    """One authenticator per scheme some API lists (or per ``schemes`` given).

    A listed scheme without its configuration raises `ConfigError` naming the missing key.
    """
    built: dict[str, Authenticator] = {}
    for scheme in list(schemes) if schemes is not None else schemes_in_use(config):
        builder = _BUILDERS.get(scheme)
        if builder is None:
            raise ConfigError("apis.security.application", f"unknown scheme {scheme!r}")
        built[scheme] = builder(config)
    return built


class Choice:
    """What `recall` and `authenticate` need of one route, worked out once: the API, its
    schemes in order, the scopes the resource demands, and the credential headers read."""

    __slots__ = ("api", "schemes", "scopes", "scope_list", "headers", "single")

    def __init__(self, api: ApiConfig, schemes: tuple[Authenticator, ...], scopes: tuple[str, ...]) -> None:
        self.api = api
        self.schemes = schemes
        self.scopes = frozenset(scopes)
        self.scope_list = " ".join(scopes)
        # the headers the schemes read their credentials from: each may be sent once
        self.headers = tuple(dict.fromkeys(a.header for a in schemes if a.header is not None))
        # the usual route: one scheme that can recall its credential by the raw header value
        only = schemes[0] if len(schemes) == 1 else None
        self.single = only if isinstance(only, RecallSupport) and only.header is not None else None


class ApplicationSecurity:
    """Built once per stack from the authenticators of the schemes the APIs list."""

    def __init__(self, authenticators: Mapping[str, Authenticator]) -> None:
        self.authenticators = dict(authenticators)
        # (scheme, api_key_header, api_key_query, auth_header) -> the scheme reading its credential there
        self._located: dict[tuple[str, str | None, str | None, str | None], Authenticator] = {}

    @classmethod
    def from_config(cls, config: Config) -> ApplicationSecurity:
        return cls(build_authenticators(config))

    def choice(self, api: ApiConfig, security: SecurityConfig, scopes: Iterable[str] = ()) -> Choice:
        """The schemes of ``security`` for requests on ``api`` (a resource's ``scopes``, if any)."""
        missing = [s for s in security.application if s not in self.authenticators]
        if missing:
            raise ConfigError(
                "apis.security.application", f"API {api.name!r} uses {missing[0]!r} but no authenticator for it"
            )
        schemes = tuple(self._located_scheme(s, security) for s in security.application)
        return Choice(api, schemes, tuple(scopes))

    def _located_scheme(self, scheme: str, security: SecurityConfig) -> Authenticator:
        """The scheme's authenticator, reading its credential where ``security`` says (one per place)."""
        auth = self.authenticators[scheme]
        if not security.located or not isinstance(auth, LocationSupport):
            return auth
        key = (scheme, security.api_key_header, security.api_key_query, security.auth_header)
        located = self._located.get(key)
        if located is None:
            located = self._located[key] = auth.located(security)
        return located

    def locations(self, api: ApiConfig) -> tuple[frozenset[bytes], frozenset[str]]:
        """Every place a credential of ``api`` (its resources' included) is read from, as the
        authenticators of its schemes declare them: the header names (lower-case) and the query
        parameters. What a proxy never forwards when the credential must stop at the gateway."""
        headers: set[bytes] = set()
        params: set[str] = set()
        for security in (api.security, *(r.security for r in api.resources if r.security is not None)):
            for auth in self.choice(api, security).schemes:
                if auth.header is not None:
                    headers.add(auth.header)
                if auth.query_param is not None:
                    params.add(auth.query_param)
        return frozenset(headers), frozenset(params)

    def recall_for(self, choice: Choice, *, strip: bool = False) -> Recall:
        """`recall` for the requests of one route, as one call (looked up on every request, so a
        subclass's or a wrapper's rule holds); with ``strip``, the credential of a recalled
        caller is taken out of the request (`strip`)."""

        stripper = self.strip_for(choice) if strip else None

        def recall(scope: Scope) -> Principal | None:
            principal = self.recall(scope, choice)
            if stripper is not None and principal is not None:
                stripper(scope, principal)
            return principal

        return recall

    def recall(self, scope: Scope, choice: Choice) -> Principal | None:
        """The entry of the application-credential decision, for every request that needs one:
        refuses a credential header sent twice (`BadRequest`), and answers the caller of a
        credential validated before that carries one of the route's scopes (if it demands
        any); None leaves the request to `authenticate`."""
        single = choice.single
        if single is not None:  # one scheme, one header: the usual route
            header, raw = single.header, None
            for name, value in scope["headers"]:
                if name == header:
                    if raw is not None:
                        raise _twice(header)
                    raw = value
            if raw is None:
                return None
            principal = single.recall_raw(raw, choice.api)
            if principal is None:
                credential = single.credential(scope)
                if credential is None:
                    return None
                principal = single.recall(credential, choice.api)
                if principal is None:
                    return None
                single.remember(raw, credential)
            scopes = choice.scopes
            return principal if not scopes or not scopes.isdisjoint(principal.scopes) else None
        raws = _credential_headers(scope, choice.headers) if choice.headers else {}
        for auth in choice.schemes:
            if not isinstance(auth, RecallSupport):
                if auth.credential(scope) is not None:
                    return None  # this scheme is tried first: only `authenticate` can answer
                continue
            raw = raws.get(auth.header) if auth.header is not None else None
            principal = auth.recall_raw(raw, choice.api) if raw is not None else None
            if principal is None:
                credential = auth.credential(scope)
                if credential is None:
                    continue
                principal = auth.recall(credential, choice.api)
                if principal is None:
                    return None
                if raw is not None:
                    auth.remember(raw, credential)
            scopes = choice.scopes
            return principal if not scopes or not scopes.isdisjoint(principal.scopes) else None
        return None

    async def authenticate(
        self,
        scope: Scope,
        choice: Choice,
        trace: Trace = no_trace,
        cert_failure: RequestError | None = None,
        *,
        recalled: bool = False,
    ) -> Principal:
        """The caller by the first scheme (in order) whose credential validates, its scopes
        checked; raises the 401 (or 403 for scopes) otherwise. It starts with `recall`, unless
        the request has just been through it (``recalled``). ``cert_failure``: why an optional
        certificate did not pass, told to a caller who presented nothing else."""
        explain = trace is not no_trace
        if not recalled:
            principal = self.recall(scope, choice)
            if principal is not None:
                if explain:
                    trace(f"{principal.method}: accepted {principal.subject} (validated before)")
                return principal
        presented = False
        challenges = []
        last: AuthenticationError | None = None
        for auth in choice.schemes:
            scheme = auth.scheme
            challenges.append(auth.challenge)
            credential = auth.credential(scope)
            if credential is None:
                if explain:
                    trace(f"{scheme}: no credential")
                continue
            presented = True
            try:
                principal = await auth.authenticate(credential, choice.api, scope)
            except AuthenticationError as exc:
                if explain:
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
                if explain:
                    trace(f"{scheme}: could not be validated")
                last = InvalidCredentials(f"the {scheme} credential could not be validated")
                continue
            if explain:
                trace(f"{scheme}: accepted {principal.subject}")
            self._check_scopes(choice, principal, trace)
            return principal
        headers = {"www-authenticate": ", ".join(challenges)} if challenges else {}
        if presented:
            raise InvalidCredentials(last.detail if last else "invalid credentials", headers=headers)
        if isinstance(cert_failure, InvalidCredentials):
            raise InvalidCredentials(
                f"{cert_failure.detail}, and no application credential was presented", headers=headers
            )
        raise MissingCredentials("no credentials were presented", headers=headers)

    def strip(self, scope: Scope, principal: Principal) -> None:
        """Remove the application credential that authenticated ``principal`` from the request."""
        auth = self.authenticators.get(principal.method)
        if auth is not None:
            auth.strip(scope)

    def strip_for(self, choice: Choice) -> Callable[[Scope, Principal], None]:
        """`strip` for the requests of one route: the credential is removed from where the route's
        schemes read it (an API's own API-key header or query parameter, its own auth header)."""
        own = {a.scheme: a for a in choice.schemes if a is not self.authenticators.get(a.scheme)}
        if not own:
            return self.strip

        def strip(scope: Scope, principal: Principal) -> None:
            auth = own.get(principal.method) or self.authenticators.get(principal.method)
            if auth is not None:
                auth.strip(scope)

        return strip

    def challenge(self, failure: RequestError, choice: Choice) -> RequestError:
        """A certificate failure on an API that also demands an application credential
        challenges for that too (one challenge per scheme the API needs)."""
        if failure.status != 401 or not choice.schemes:
            return failure
        challenges = [failure.headers.get("www-authenticate", ""), *(a.challenge for a in choice.schemes)]
        headers = {**failure.headers, "www-authenticate": ", ".join(c for c in challenges if c)}
        return type(failure)(failure.detail, headers=headers)

    @staticmethod
    def _check_scopes(choice: Choice, principal: Principal, trace: Trace) -> None:
        scopes = choice.scopes
        if not scopes:
            return
        if scopes.isdisjoint(principal.scopes):
            if trace is not no_trace:
                trace(f"scopes: needs one of {choice.scope_list}")
            raise ScopeMismatch(f"this resource requires one of the scopes: {choice.scope_list}")
        if trace is not no_trace:
            trace("scopes: satisfied")

    async def start(self) -> None:
        for auth in self.authenticators.values():
            await auth.start()

    async def aclose(self) -> None:
        for auth in self.authenticators.values():
            await auth.aclose()


def _twice(header: bytes) -> BadRequest:
    return BadRequest(f"the {header.decode('latin-1')} header appears more than once; send one credential")


def _credential_headers(scope: Scope, wanted: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """The values of the credential headers ``wanted``, each sent once (else `BadRequest`)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in wanted:
            if name in found:
                raise _twice(name)
            found[name] = value
    return found
