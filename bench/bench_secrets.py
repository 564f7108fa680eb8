"""Cost of the secrets layer.

    python bench/bench_secrets.py

Values are decrypted once, when the configuration loads, so none of this is on
the per-request path; the numbers say what a middleware would pay if it ever
had to open a secret per request (target: <= 5 us) and what start-up pays.
"""

from __future__ import annotations

import tempfile
import timeit
from pathlib import Path

from asgi_apim.config import load_config
from asgi_apim.secrets import Envelope, Keyring, generate_key


def per_call(stmt, number: int) -> float:  # type: ignore[no-untyped-def]
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6


def main() -> None:
    ring = Keyring(bytes.fromhex(generate_key()), [bytes.fromhex(generate_key())])
    value = ring.encrypt("a-backend-password-of-32-chars!!")
    envelope = Envelope.parse(value)
    rows = [
        ("decrypt one value (parse + AES-GCM open)", per_call(lambda: ring.decrypt(value), 20000)),
        (
            "  of which AES-GCM open only",
            per_call(lambda: ring.current.open(envelope.nonce, envelope.sealed, envelope.aad()), 20000),
        ),
        ("encrypt one value (fresh nonce)", per_call(lambda: ring.encrypt("a-backend-password-of-32-chars!!"), 20000)),
        ("build a keyring (two keys)", per_call(lambda: Keyring(bytes(32), [bytes(range(32))]), 2000)),
    ]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "deployment.toml"
        key = generate_key()
        sealer = Keyring(bytes.fromhex(key))
        path.write_text(
            f'[encryption]\nkey = "{key}"\n[secrets]\n'
            + "".join(f's{i} = "{sealer.encrypt("v" * 24)}"\n' for i in range(100))
        )
        rows.append(("load_config with 100 encrypted secrets", per_call(lambda: load_config(path), 20)))
    width = max(len(name) for name, _ in rows)
    print(f"{'operation':<{width}}  microseconds")
    for name, us in rows:
        print(f"{name:<{width}}  {us:10.2f}")


if __name__ == "__main__":
    main()
