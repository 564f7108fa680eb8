"""The request path does not depend on how many certificates the registry holds.

    python bench/bench_registry.py [--sizes 10,1000,100000] [--n 2000] [--rounds 9]

For each size, a SQLite registry holding that many registered client
certificates (one API, each certificate registered exactly, inserted in one
transaction), and a stack protected from a configuration naming it. Round-robin
in one run (`harness`), the same registered client's certificate header on
every request (the cached path: the verdict of that header is in the
resolver's cache) against a bare Starlette endpoint with the same headers.

Then, for each size, the cost of a registry poll that finds nothing changed
(what every node pays every ``reload_interval``: one read of the change
marker), and the time to build the generation that holds them all (paid once
per change, off the event loop).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import insert, update

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_throttling import BIG, PATH, starlette_app  # noqa: E402
from harness import Variant, run, scope_factory, table  # noqa: E402

from asgi_apim import protect  # noqa: E402
from asgi_apim.certs.truststore import TrustReloader  # noqa: E402
from asgi_apim.certs.validation import CertificateValidator  # noqa: E402
from asgi_apim.config import load_config  # noqa: E402
from asgi_apim.registry import RegistryFeed  # noqa: E402
from asgi_apim.registry.store import RegistryStore, client_certificates, registry_state  # noqa: E402

HEADER = b"x-wso2-client-certificate"


def certificates(count: int) -> list[tuple[str, bytes]]:
    """``count`` distinct self-signed client certificates (one key: signing is the cost), PEM, with their SHA-256."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    out = []
    for i in range(count):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench client {i}")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(i + 1)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(key, hashes.SHA256())
        )
        out.append((cert.public_bytes(Encoding.PEM).decode(), cert.fingerprint(hashes.SHA256())))
    return out


def registry(directory: Path, certs: list[tuple[str, bytes]]) -> Path:
    """A configuration whose registry holds ``certs`` for API pets."""
    config = directory / "deployment.toml"
    config.write_text(
        '[encryption]\nkey = "' + "ab" * 32 + '"\n'
        '[mutual_ssl]\ntrusted_proxies = ["127.0.0.1/32"]\n'
        f'[throttling.tiers]\nGold = "{BIG}"\n'
        "[registry]\n"
        '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\nmutual_ssl = "mandatory"\n'
    )
    store = RegistryStore(f"sqlite:///{directory / 'registry.db'}")
    store.marker()  # the schema
    now = dt.datetime.now(dt.UTC)
    rows = [
        {"api": "pets", "alias": f"c{i}", "certificate": pem, "sha256": fp.hex(), "tier": "Gold", "created": now}
        for i, (pem, fp) in enumerate(certs)
    ]
    with store.engine.connect() as conn:
        conn.execution_options(write=True)
        with conn.begin():
            conn.execute(insert(client_certificates), rows)
            conn.execute(update(registry_state).values(serial=registry_state.c.serial + 1, updated=now))
    store.close()
    return config


def poll_cost(config: Path, repeat: int = 200) -> tuple[float, float, float]:
    """µs of an unchanged poll (median), seconds to build the generation holding every registration
    (off the event loop), and seconds to build its validator (the first request after a change)."""
    cfg = load_config(config)
    feed = RegistryFeed(cfg)
    t0 = time.perf_counter()
    reloader = TrustReloader(cfg.mutual_ssl, cfg.apis, registry=feed)
    build = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        assert reloader.check() is False
        times.append((time.perf_counter() - t) * 1e6)
    t = time.perf_counter()
    CertificateValidator(reloader.current)
    return statistics.median(times), build, time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,1000,100000")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    t0 = time.perf_counter()
    pool = certificates(max(sizes))
    print(f"made {len(pool)} certificates in {time.perf_counter() - t0:.1f}s\n")
    client_pem = pool[0][0]
    header = quote(client_pem, safe="").encode()
    make = scope_factory("GET", PATH, [(HEADER, header)])
    variants: list[Variant] = [Variant("bare Starlette", starlette_app(), make)]
    polls: list[tuple[int, float, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            directory = Path(tmp) / str(size)
            directory.mkdir()
            config = registry(directory, pool[:size])
            app: Any = protect(starlette_app(), config)
            variants.append(Variant(f"{size} registered", app, make))
            polls.append((size, *poll_cost(config)))
        samples = run(variants, n=args.n, rounds=args.rounds)
    print(table(samples, "bare Starlette"))
    base = statistics.median(samples[f"{sizes[0]} registered"])
    print()
    for size in sizes[1:]:
        ratio = statistics.median(samples[f"{size} registered"]) / base
        print(f"{size} registered / {sizes[0]} registered (median): {ratio:.2f}")
    print(
        "\n| registered | unchanged poll, µs (median) | generation build, s | validator build, s |"
        "\n| ---: | ---: | ---: | ---: |"
    )
    for size, poll, build, validator in polls:
        print(f"| {size} | {poll:.0f} | {build:.2f} | {validator:.3f} |")


if __name__ == "__main__":
    main()
