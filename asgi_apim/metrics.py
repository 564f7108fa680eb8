"""``[metrics]``: Prometheus text at a public path, read from counts the stack keeps anyway.

Nothing here runs per request. The request path counts in plain ints and
dicts where the count belongs: accepted requests by API and method in the
security stage (`APISecurityMiddleware`, one dict per API), refusals by API,
status and code and 429s by tier where every refusal is answered
(`asgi_apim._access`), certificate validations and cache hits in the
`CertificateResolver`, truststore reloads in the `TrustReloader`, JWKS
refreshes in `asgi_apim.auth.jwks`. `StackCollector` reads them when
Prometheus scrapes, and `MetricsEndpoint` answers ``[metrics] path`` in front
of the whole stack (no credential, no throttling) with
``prometheus_client.generate_latest``, in a worker thread.

Counts are per process: with ``--workers N`` each scrape reaches one worker.

=====================================================  =======  ===========================================
series                                                 type     labels
=====================================================  =======  ===========================================
asgi_apim_requests_accepted_total                      counter  api, method
asgi_apim_requests_refused_total                       counter  api, status, code
asgi_apim_requests_throttled_total                     counter  api, tier
asgi_apim_certificate_validations_total                counter
asgi_apim_certificate_cache_hits_total                 counter
asgi_apim_reloads_total / asgi_apim_reload_failures_total  counter  source (truststore, jwks:NAME)
asgi_apim_certificates_registered                      gauge    source (config, registry)
asgi_apim_certificates_expiring                        gauge    source: within expiry_warning_days
asgi_apim_certificate_nearest_expiry_days              gauge    api: days left of its nearest expiry
asgi_apim_registry_registrations                       gauge    (the registry's view)
asgi_apim_registry_nearest_expiry_days                 gauge
=====================================================  =======  ===========================================
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from asgi_apim._access import REFUSED, THROTTLED
from asgi_apim.auth.jwks import REFRESHES
from asgi_apim.certs.resolver import CertificateResolver
from asgi_apim.certs.truststore import RegisteredCertificate
from asgi_apim.config import Config
from asgi_apim.registry import RegistryFeed

Accepted = dict[str, dict[str, int]]  # api -> method -> requests accepted


class _Expiry:
    """What the registrations of one truststore generation say about expiry, worked out once
    per generation: a scrape then costs a few subtractions, whatever their number."""

    def __init__(self, registrations: tuple[RegisteredCertificate, ...]) -> None:
        self.count: dict[str, int] = {}
        self.ends: dict[str, list[float]] = {}  # source -> sorted expiry times
        self.nearest: dict[str, float] = {}  # api -> its nearest expiry time
        for r in registrations:
            end = r.cert.not_valid_after_utc.timestamp()
            self.count[r.source] = self.count.get(r.source, 0) + 1
            self.ends.setdefault(r.source, []).append(end)
            if end < self.nearest.get(r.api, float("inf")):
                self.nearest[r.api] = end
        for ends in self.ends.values():
            ends.sort()


class StackCollector(Collector):
    """Reads the stack's counts at scrape time (a worker thread: every dict is copied first, in one
    C call, so the event loop may go on counting)."""

    def __init__(
        self,
        accepted: Accepted,
        resolver: CertificateResolver | None,
        feed: RegistryFeed | None,
        warning_days: int,
    ) -> None:
        self.accepted = accepted
        self.resolver = resolver
        self.feed = feed
        self.warning_days = warning_days
        self._expiry: tuple[int, _Expiry] | None = None

    def collect(self) -> Iterator[Metric]:
        accepted = CounterMetricFamily(
            "asgi_apim_requests_accepted", "Requests accepted by the stack", labels=["api", "method"]
        )
        for api, methods in list(self.accepted.items()):
            for method, count in dict(methods).items():
                accepted.add_metric([api, method], count)
        yield accepted
        refused = CounterMetricFamily(
            "asgi_apim_requests_refused", "Requests refused, by status and WSO2 code", labels=["api", "status", "code"]
        )
        for (api, status, code), count in dict(REFUSED).items():
            refused.add_metric([api, str(status), str(code)], count)
        yield refused
        throttled = CounterMetricFamily(
            "asgi_apim_requests_throttled", "Requests refused 429, by tier", labels=["api", "tier"]
        )
        for (api, tier), count in dict(THROTTLED).items():
            throttled.add_metric([api, tier], count)
        yield throttled
        reloads = CounterMetricFamily("asgi_apim_reloads", "Truststore and JWKS reloads", labels=["source"])
        failures = CounterMetricFamily(
            "asgi_apim_reload_failures", "Reloads that failed, the last good one serving", labels=["source"]
        )
        for name, (ok, failed) in dict(REFRESHES).items():
            reloads.add_metric([f"jwks:{name}"], ok)
            failures.add_metric([f"jwks:{name}"], failed)
        resolver = self.resolver
        if resolver is not None:
            reloads.add_metric(["truststore"], resolver.trust.reloads)
            failures.add_metric(["truststore"], resolver.trust.failures)
            yield CounterMetricFamily(
                "asgi_apim_certificate_validations", "Client certificates validated", value=resolver.validations
            )
            yield CounterMetricFamily(
                "asgi_apim_certificate_cache_hits", "Client certificates answered from the cache", value=resolver.hits
            )
            yield from self._certificates(resolver)
        yield reloads
        yield failures
        if self.feed is not None:
            count, nearest = self.feed.summary()
            yield GaugeMetricFamily(
                "asgi_apim_registry_registrations", "Certificates registered in the registry", value=count
            )
            if nearest is not None:
                yield GaugeMetricFamily(
                    "asgi_apim_registry_nearest_expiry_days",
                    "Days until the registry's nearest certificate expiry",
                    value=round(nearest, 3),
                )

    def _certificates(self, resolver: CertificateResolver) -> Iterator[Metric]:
        material = resolver.trust.current
        if self._expiry is None or self._expiry[0] != material.generation:
            self._expiry = (material.generation, _Expiry(material.registrations))
        expiry = self._expiry[1]
        now = datetime.datetime.now(datetime.UTC).timestamp()
        soon = now + self.warning_days * 86_400
        registered = GaugeMetricFamily(
            "asgi_apim_certificates_registered", "Registered client certificates", labels=["source"]
        )
        expiring = GaugeMetricFamily(
            "asgi_apim_certificates_expiring",
            f"Registered client certificates expired or expiring within {self.warning_days} days",
            labels=["source"],
        )
        for source, count in expiry.count.items():
            registered.add_metric([source], count)
            expiring.add_metric([source], sum(1 for end in expiry.ends[source] if end <= soon))
        nearest = GaugeMetricFamily(
            "asgi_apim_certificate_nearest_expiry_days",
            "Days until the nearest expiry of an API's registered certificates",
            labels=["api"],
        )
        for api, end in expiry.nearest.items():
            nearest.add_metric([api], round((end - now) / 86_400, 3))
        yield registered
        yield expiring
        yield nearest


class MetricsEndpoint:
    """Answers ``path`` with the Prometheus text of ``registry``; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry, path: str) -> None:
        self.app = app
        self.registry = registry
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b"GET or HEAD\n", [(b"allow", b"GET, HEAD")])
            return
        body = await anyio.to_thread.run_sync(generate_latest, self.registry)
        await _answer(send, 200, b"" if scope["method"] == "HEAD" else body, [], len(body))


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], length: int = -1) -> None:
    headers = [
        (b"content-type", CONTENT_TYPE_LATEST.encode("latin-1")),
        (b"content-length", str(len(body) if length < 0 else length).encode()),
        (b"cache-control", b"no-store"),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def mount(
    app: ASGIApp,
    config: Config,
    accepted: Accepted | None,
    resolver: CertificateResolver | None,
    feed: RegistryFeed | None,
) -> ASGIApp:
    """``app`` with the metrics endpoint in front of it (``accepted``: the security stage's counts);
    ``app`` itself when ``[metrics]`` is off."""
    if not config.metrics.enabled or accepted is None:
        return app
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StackCollector(accepted, resolver, feed, config.registry.expiry_warning_days))
    return MetricsEndpoint(app, registry, config.metrics.path)


__all__ = ["Accepted", "MetricsEndpoint", "StackCollector", "mount"]
