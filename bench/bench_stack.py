"""The mutual-TLS stack in-process against a bare Starlette endpoint.

    python bench/bench_stack.py

Variants, round-robin in one run: the bare endpoint (the same app the stack
wraps, on the same route: Starlette tries its routes in order, and each one
tried first costs about 1 µs); the bare endpoint on the public path, and that
path through the stack (compared with it); a cached certificate from the proxy header; a cached certificate from
the TLS extension; an uncached header certificate (every request a header the
resolver and the validator have not seen, so decode + parse + validate each
time); and, for that one, the bare endpoint behind cryptography's own work on
the same header: URL-decode, parse the PEM and verify with a prebuilt verifier
using the validator's extension policies (clientAuth required, SAN optional).
The uncached comparison is printed both ways: the whole security stage over
bare, and what an uncached certificate adds over a cached one, each against
what cryptography's parse + verify adds over bare. The stack here is the
security stage without throttling (issue 2's targets); bench_throttling.py
covers the full stack.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Variant, sample, scope_factory, table  # noqa: E402
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
        'public_paths = ["/health"]\n[mutual_ssl]\ntruststore = ["ca.pem"]\ntrusted_proxies = ["127.0.0.1/32"]\n'
        '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\nmutual_ssl = "mandatory"\n'
        '[[apis.certificates]]\nalias = "dev"\ncertificate = "ca.pem"\ntier = "Gold"\n'
    )
    cfg = load_config(tmp / "deployment.toml")
    inner = Starlette(routes=[Route("/pets/whoami", hello), Route("/health", hello)])
    resolver = CertificateResolver(TrustReloader(cfg.mutual_ssl, cfg.apis), cfg.mutual_ssl)
    stack = APISecurityMiddleware(inner, router=Router.from_config(cfg), resolver=resolver)
    return inner, stack, ca, client


def crypto_app(inner, ca, header_name: bytes):  # type: ignore[no-untyped-def]
    """The bare endpoint behind cryptography's own parse + verify of the header."""
    import datetime as dt
    from urllib.parse import unquote

    from cryptography import x509
    from cryptography.x509.verification import PolicyBuilder, Store

    from asgi_apim.certs.verifier import CA_POLICY, EE_POLICY, MAX_CHAIN_DEPTH

    verifier = (
        PolicyBuilder()
        .store(Store([ca.cert]))
        .time(dt.datetime.now(dt.UTC))
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=CA_POLICY, ee_policy=EE_POLICY)
        .build_client_verifier()
    )

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        value = next(v for k, v in scope["headers"] if k == header_name)
        certs = x509.load_pem_x509_certificates(unquote(value.decode("latin-1")).encode("ascii"))
        verifier.verify(certs[0], certs[1:])
        await inner(scope, receive, send)

    return app


def main() -> None:
    name = b"x-wso2-client-certificate"
    with tempfile.TemporaryDirectory() as d:
        inner, stack, ca, client = build(Path(d))
        header = quote(client.cert_pem().decode(), safe="").encode()
        pem = client.cert_pem().decode()
        counter = [0]
        fresh = [quote(issue_client(ca, f"c{i}").cert_pem().decode(), safe="").encode() for i in range(64)]

        def uncached_scope():  # type: ignore[no-untyped-def]
            counter[0] += 1
            stack.resolver.clear()  # the only cache on this path (the resolver validates without the validator's)
            return scope_factory("GET", "/pets/whoami", [(name, bytes(bytearray(fresh[counter[0] % 64])))])()

        def crypto_scope():  # type: ignore[no-untyped-def]
            counter[0] += 1
            return scope_factory("GET", "/pets/whoami", [(name, bytes(bytearray(fresh[counter[0] % 64])))])()

        variants = [
            Variant(
                "bare endpoint", inner, scope_factory("GET", "/pets/whoami", [(name, header)])
            ),  # the same route as the stack's
            Variant("bare endpoint, /health", inner, scope_factory("GET", "/health", [(name, header)])),
            Variant("public path through the stack", stack, scope_factory("GET", "/health", [(name, header)])),
            Variant("cached certificate (header)", stack, scope_factory("GET", "/pets/whoami", [(name, header)])),
            Variant(
                "cached certificate (TLS extension)",
                stack,
                scope_factory(
                    "GET", "/pets/whoami", extensions={"tls": {"client_cert_chain": [pem], "server_cert": None}}
                ),
            ),
            Variant("uncached certificate (header)", stack, uncached_scope),
            Variant("bare after cryptography parse + verify", crypto_app(inner, ca, name), crypto_scope),
        ]
        results = asyncio.run(sample(variants, n=1000, rounds=21))
        print(
            table(
                results,
                "bare endpoint",
                {
                    "public path through the stack": "≤ 1.05×",
                    "cached certificate (header)": "≤ 1.3×",
                },
                against={"public path through the stack": "bare endpoint, /health"},
            )
        )
        print()
        print(uncached_table(results))


def uncached_table(samples: dict[str, list[float]]) -> str:
    rows = [
        "| uncached header certificate | µs (median) | × cryptography (median) | × cryptography (paired rounds) "
        "| × cryptography (best round) | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]

    def over(r: dict[str, float]) -> dict[str, float]:
        bare = r["bare endpoint"]
        return {
            "theirs": r["bare after cryptography parse + verify"] - bare,
            "extra": r["uncached certificate (header)"] - r["cached certificate (header)"],
            "stage": r["uncached certificate (header)"] - bare,
        }

    m = over({k: statistics.median(v) for k, v in samples.items()})
    b = over({k: min(v) for k, v in samples.items()})
    rounds = [over({k: v[i] for k, v in samples.items()}) for i in range(len(samples["bare endpoint"]))]
    labels = {
        "theirs": ("cryptography: URL-decode + parse PEM + verify", ""),
        "extra": ("ours: uncached over cached", "≤ 1.1×"),
        "stage": ("ours: whole security stage over bare", ""),
    }
    for key, (label, target) in labels.items():
        paired = statistics.median(r[key] / r["theirs"] for r in rounds)
        rows.append(
            f"| {label} | {m[key]:.1f} | {m[key] / m['theirs']:.2f} | {paired:.2f} "
            f"| {b[key] / b['theirs']:.2f} | {target} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
