"""``[metrics]``: Prometheus text at a public path, from the counts the stack keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from prometheus_client.parser import text_string_to_metric_families

from asgi_apim import protect
from asgi_apim.certs.pki import Issued, issue_client, make_ca
from asgi_apim.config import load_config
from asgi_apim.errors import ConfigError
from asgi_apim.registry import Registry
from tests.asgi import call

CONFIG = """
[encryption]
key = "{key}"

[mutual_ssl]
truststore = ["ca.pem"]
trusted_proxies = ["127.0.0.1/32"]

[throttling.tiers]
Tiny = "1/minute"

[registry]
url = "sqlite:///{tmp}/registry.db"
expiry_warning_days = 30

[metrics]
{metrics}

[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "mandatory"
[[apis.certificates]]
alias = "partners"
certificate = "ca.pem"
tier = "Tiny"

[[apis]]
name = "shop"
context = "/shop"
[apis.security]
mutual_ssl = "mandatory"
"""


async def ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


CAS: dict[Path, Issued] = {}


def _write(tmp: Path, metrics: str = "enabled = true") -> Path:
    ca = CAS.get(tmp) or make_ca("metrics CA")
    CAS[tmp] = ca
    ca.write(tmp / "ca.pem")
    (tmp / "deployment.toml").write_text(CONFIG.format(key="5b" * 32, tmp=tmp, metrics=metrics))
    return tmp / "deployment.toml"


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_configuration(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")).metrics.enabled is False
    cfg = load_config(_write(tmp_path, 'enabled = true\npath = "/internal/metrics"'))
    assert (cfg.metrics.enabled, cfg.metrics.path) == (True, "/internal/metrics")
    for bad, said in [
        ('enabled = true\npath = "/pets/metrics"', "overlaps apis[pets].context"),
        ('enabled = true\npath = "/"', "must be an absolute path"),
        ('enabled = true\npath = "metrics"', "must be an absolute path"),
        ("enabled = 1", "metrics.enabled"),
        ("enable = true", "metrics.enable"),
    ]:
        with pytest.raises(ConfigError) as refused:
            load_config(_write(tmp_path, bad))
        assert said in str(refused.value)


async def test_the_endpoint_is_public_and_counts_what_the_stack_did(tmp_path: Path) -> None:
    config = _write(tmp_path)
    Registry(load_config(config)).add("shop", "shop-partner", "Tiny", make_ca("registry CA").cert_pem())
    stack = protect(ok, config)
    stranger = issue_client(make_ca("stranger CA"), "stranger")
    header = [("x-wso2-client-certificate", quote(stranger.cert_pem().decode(), safe=""))]
    assert (await call(stack, "GET", "/pets/1", header)).status == 401
    assert (await call(stack, "GET", "/pets/1", header)).status == 401  # from the cache

    scrape = await call(stack, "GET", "/metrics")
    assert scrape.status == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=")
    samples = _samples(scrape.body.decode())
    assert samples[("asgi_apim_requests_refused_total", (("api", "pets"), ("code", "900901"), ("status", "401")))] >= 2
    assert samples[("asgi_apim_certificate_validations_total", ())] >= 1  # again after a truststore reload
    assert samples[("asgi_apim_certificate_cache_hits_total", ())] >= 1
    assert samples[("asgi_apim_certificates_registered", (("source", "config"),))] == 1
    assert samples[("asgi_apim_certificates_registered", (("source", "registry"),))] == 1
    assert samples[("asgi_apim_certificates_expiring", (("source", "config"),))] == 0
    assert 360 < samples[("asgi_apim_certificate_nearest_expiry_days", (("api", "pets"),))] <= 365
    assert 360 < samples[("asgi_apim_certificate_nearest_expiry_days", (("api", "shop"),))] <= 365
    assert ("asgi_apim_reloads_total", (("source", "truststore"),)) in samples
    assert samples[("asgi_apim_reload_failures_total", (("source", "truststore"),))] == 0
    assert samples[("asgi_apim_registry_registrations", ())] == 1
    assert 360 < samples[("asgi_apim_registry_nearest_expiry_days", ())] <= 365


async def test_accepted_by_method_and_throttled_by_tier(tmp_path: Path) -> None:
    config = _write(tmp_path)
    stack = protect(ok, config)
    partner = issue_client(CAS[tmp_path], "partner")
    header = [("x-wso2-client-certificate", quote(partner.cert_pem().decode(), safe=""))]
    assert (await call(stack, "GET", "/pets/1", header)).status == 200
    assert (await call(stack, "DELETE", "/pets/1", header)).status == 429  # Tiny: 1/minute
    samples = _samples((await call(stack, "GET", "/metrics")).body.decode())
    assert samples[("asgi_apim_requests_accepted_total", (("api", "pets"), ("method", "GET")))] == 1
    assert ("asgi_apim_requests_accepted_total", (("api", "pets"), ("method", "DELETE"))) not in samples
    assert samples[("asgi_apim_requests_throttled_total", (("api", "pets"), ("tier", "Tiny")))] >= 1


async def test_only_get_and_head_and_off_means_absent(tmp_path: Path) -> None:
    stack = protect(ok, _write(tmp_path))
    assert (await call(stack, "POST", "/metrics")).status == 405
    head = await call(stack, "HEAD", "/metrics")
    assert head.status == 200 and head.body == b""
    off = protect(ok, _write(tmp_path, "enabled = false"))
    assert (await call(off, "GET", "/metrics")).status == 404  # no API owns it: the stack's 404
