"""Uncached certificate validation against cryptography's own parse + verify.

    python bench/bench_validation.py [--n 1000] [--rounds 9]

For the same chain (a leaf and the intermediate that issued it, the root in the
truststore, a CRL from each CA), round-robin in one run:

- ``cryptography``: `x509.load_der_x509_certificate` of both DERs and
  `ClientVerifier.verify` with a verifier built once, with the extension
  policies the validator uses (`asgi_apim.certs.verifier`: clientAuth
  required, SAN optional), so both sides do the same checks;
- ``validate, uncached``: `CertificateValidator.validate` with a new cache key
  on every call, so every call parses, verifies, checks the CRLs, decides per
  API, builds the verdict and stores it in the (full, evicting) cache;
- ``validate, cached``: the same key every call, for reference.

Every call gets fresh copies of the DER bytes, as from a request. Each round
times a batch of every variant in thread CPU time (other processes on the
machine do not count); the report is the median over the rounds, and the
ratio to cryptography's. The target for the uncached path is <= 1.10x.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import statistics
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from asgi_apim.certs.pki import issue_client, make_ca, make_crl
from asgi_apim.certs.truststore import TrustMaterial
from asgi_apim.certs.validation import CertificateValidator
from asgi_apim.certs.verifier import CA_POLICY, EE_POLICY, MAX_CHAIN_DEPTH

TARGET = 1.10


def _batch(fn: Callable[[int], object], n: int, offset: int) -> float:
    t0 = time.thread_time()
    for i in range(offset, offset + n):
        fn(i)
    return (time.thread_time() - t0) / n * 1e6


def run(key_kind: str, n: int, rounds: int) -> list[tuple[str, float]]:
    root = make_ca("bench root", key_kind=key_kind)
    inter = make_ca("bench intermediate", issuer=root, key_kind=key_kind)
    leaf = issue_client(inter, "bench client", key_kind=key_kind)
    ders = (leaf.der(), inter.der())
    crls = (make_crl(root, [1]), make_crl(inter, [2]))
    material = TrustMaterial((root.cert,), crls, (), 1, b"", ("open",), {"open": "Unlimited"})
    validator = CertificateValidator(material, cache_size=10_000)
    verifier = (
        PolicyBuilder()
        .store(Store([root.cert]))
        .time(dt.datetime.now(dt.UTC))
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=CA_POLICY, ee_policy=EE_POLICY)
        .build_client_verifier()
    )

    def fresh() -> tuple[bytes, ...]:
        return tuple(bytes(bytearray(d)) for d in ders)

    def theirs(_: int) -> object:
        certs = [x509.load_der_x509_certificate(d) for d in fresh()]
        return verifier.verify(certs[0], certs[1:])

    def ours_uncached(i: int) -> object:
        return validator.validate(fresh(), cache_key=i.to_bytes(8, "big"))

    def ours_cached(_: int) -> object:
        return validator.validate(fresh(), cache_key=b"same header")

    assert validator.validate(ders).accepted_for("open") is not None
    variants = {
        "cryptography parse + verify": theirs,
        "validate, uncached": ours_uncached,
        "validate, cached": ours_cached,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():
        _batch(fn, 10_000, 10**9)  # warm up, and fill the verdict cache so that it evicts
    gc.collect()
    offset = 0
    for _ in range(rounds):
        for name, fn in variants.items():
            samples[name].append(_batch(fn, n, offset))
        offset += n
    return [(name, statistics.median(s)) for name, s in samples.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=9)
    ns = parser.parse_args()
    print("| key | variant | µs/call | vs cryptography | target |")
    print("| --- | --- | ---: | ---: | --- |")
    for key_kind in ("ec", "rsa"):
        results = run(key_kind, ns.n, ns.rounds)
        base = results[0][1]
        for name, us in results:
            target = f"<= {TARGET:.2f}x" if name == "validate, uncached" else ""
            print(f"| {key_kind} | {name} | {us:.1f} | {us / base:.2f}x | {target} |")


if __name__ == "__main__":
    main()
