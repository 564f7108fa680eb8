"""The mutual-TLS stack in-process against a bare Starlette endpoint.

    python bench/bench_stack.py

Variants, round-robin in one run: the bare endpoint; a public path through the
stack; a cached certificate from the proxy header; a cached certificate from
the TLS extension; and an uncached header certificate (every request a new
header value, so parse + validate each time) next to cryptography's own
parse + verify of the same chain. The stack here is the security stage without
throttling (issue 2's targets); bench_throttling.py covers the full stack.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Variant, measure, scope_factory, table  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import PlainTextResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from asgi_apim.auth.policy import APISecurityMiddleware  # noqa: E402
from asgi_apim.certs.pki import issue_client, make_ca  # noqa: E402
from asgi_apim.certs.resolver import CertificateResolver  # noqa: E402
from asgi_apim.certs.truststore import TrustReloader  # noqa: E402
from asgi_apim.config import load_config  # noqa: E402
from asgi_apim.routing import Router  # noqa: E402


async def hello(request) -> PlainTextResponse:  # type: ignore[no-untyped-def]
    return PlainTextResponse("ok")


def build(tmp: Path):  # type: ignore[no-untyped-def]
    ca = make_ca()
    client = issue_client(ca, "bench-client")
    (tmp / "ca.pem").write_bytes(ca.cert_pem())
    (tmp / "deployment.toml").write_text(
        'public_paths = ["/health"]\n[mutual_ssl]\ntruststore = ["ca.pem"]\n'
        '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\nmutual_ssl = "mandatory"\n'
        '[[apis.certificates]]\nalias = "dev"\ncertificate = "ca.pem"\ntier = "Gold"\n'
    )
    cfg = load_config(tmp / "deployment.toml")
    inner = Starlette(routes=[Route("/pets/whoami", hello), Route("/health", hello), Route("/bare", hello)])
    resolver = CertificateResolver(TrustReloader(cfg.mutual_ssl, cfg.apis), cfg.mutual_ssl)
    stack = APISecurityMiddleware(inner, router=Router.from_config(cfg), resolver=resolver)
    return inner, stack, ca, client


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        inner, stack, ca, client = build(Path(d))
        header = quote(client.cert_pem().decode(), safe="").encode()
        pem = client.cert_pem().decode()
        counter = [0]
        fresh = [quote(issue_client(ca, f"c{i}").cert_pem().decode(), safe="").encode() for i in range(64)]

        def uncached_scope():  # type: ignore[no-untyped-def]
            counter[0] += 1
            stack.resolver._cache.clear()
            return scope_factory("GET", "/pets/whoami", [(b"x-wso2-client-certificate", fresh[counter[0] % 64])])()

        variants = [
            Variant("bare endpoint", inner, scope_factory("GET", "/bare")),
            Variant("public path through the stack", stack, scope_factory("GET", "/health")),
            Variant("cached certificate (header)", stack, scope_factory("GET", "/pets/whoami", [(b"x-wso2-client-certificate", header)])),
            Variant("cached certificate (TLS extension)", stack, scope_factory(
                "GET", "/pets/whoami", extensions={"tls": {"client_cert_chain": [pem], "server_cert": None}})),
            Variant("uncached certificate (header)", stack, uncached_scope),
        ]
        results = asyncio.run(measure(variants, n=3000, rounds=7))
        print(table(results, "bare endpoint", {
            "public path through the stack": "≤ 1.05×",
            "cached certificate (header)": "≤ 1.3×",
        }))
        print()
        print(crypto_baseline(ca, client, results["uncached certificate (header)"] - results["bare endpoint"]))


def crypto_baseline(ca, client, ours_us: float) -> str:  # type: ignore[no-untyped-def]
    """cryptography's own parse + verify of the same kind of chain, for the uncached target."""
    import datetime as dt

    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store

    der = client.der()
    store = Store([ca.cert])
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        leaf = x509.load_der_x509_certificate(der)
        verifier = PolicyBuilder().store(store).time(dt.datetime.now(dt.timezone.utc)).build_client_verifier()
        verifier.verify(leaf, [])
    own = (time.perf_counter() - t0) / n * 1e6
    return (
        "| uncached validation | µs | × cryptography |\n| --- | ---: | ---: |\n"
        f"| cryptography parse + build verifier + verify | {own:.1f} | 1.00 |\n"
        f"| ours (stack cost over bare, uncached header) | {ours_us:.1f} | {ours_us / own:.2f} |"
    )


if __name__ == "__main__":
    main()
