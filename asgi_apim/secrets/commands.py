"""``asgi-apim keygen | encrypt | decrypt | rotate-key``.

``encrypt`` and ``decrypt`` read stdin and write stdout; on any failure they
write nothing to stdout and one line to stderr (printed by `asgi_apim.cli`).
"""

from __future__ import annotations

import argparse
import sys

from asgi_apim.errors import ConfigError, CryptoError
from asgi_apim.secrets.keys import generate_key, load_keyring, parse_key


def _stdin_text() -> str:
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        raise CryptoError("standard input is not UTF-8 text") from None


def _write(text: str) -> None:
    sys.stdout.buffer.write(text.encode("utf-8") + b"\n")
    sys.stdout.flush()


def _keygen(ns: argparse.Namespace) -> int:
    _write(generate_key())
    return 0


def _encrypt(ns: argparse.Namespace) -> int:
    keyring = load_keyring(ns.config)
    plaintext = _stdin_text()
    plaintext = plaintext.removesuffix("\n").removesuffix("\r") if plaintext.endswith("\n") else plaintext
    _write(keyring.encrypt(plaintext))
    return 0


def _decrypt(ns: argparse.Namespace) -> int:
    keyring = load_keyring(ns.config, read_only=True)  # no key, nothing to decrypt: the file is left alone
    plaintext = keyring.decrypt(_stdin_text().strip())
    _write(plaintext)
    return 0


def _new_key(text: str) -> str:
    if text == "-":
        text = sys.stdin.readline()
    try:
        parse_key(text, "--new-key")
    except ConfigError:
        raise argparse.ArgumentTypeError("must be 64 hexadecimal characters (a 256-bit key)") from None
    return text.strip()


def _rotate(ns: argparse.Namespace) -> int:
    from asgi_apim.secrets.rotate import rotate_key

    result = rotate_key(ns.config, ns.new_key, keep_old_key=ns.keep_old_key)
    print(f"re-encrypted {result.values} value(s) under the new key; backup: {result.backup}")
    for notice in result.notices:
        print(f"asgi-apim: notice: {notice}", file=sys.stderr)
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("keygen", help="print a new random 256-bit key (64 hex digits)")
    p.set_defaults(handler=_keygen)

    p = subparsers.add_parser("encrypt", help="encrypt stdin under the configured key; print the ciphertext")
    p.add_argument("--config", required=True, help="deployment.toml")
    p.set_defaults(handler=_encrypt)

    p = subparsers.add_parser("decrypt", help="decrypt a ciphertext from stdin; print the plaintext")
    p.add_argument("--config", required=True, help="deployment.toml")
    p.set_defaults(handler=_decrypt)

    p = subparsers.add_parser("rotate-key", help="re-encrypt every value under a new key, all or nothing")
    p.add_argument("--config", required=True, help="deployment.toml")
    p.add_argument("--new-key", required=True, type=_new_key, help="64 hex digits, or - to read it from stdin")
    p.add_argument(
        "--keep-old-key",
        action="store_true",
        help="keep the previous key in [encryption] old_keys (nodes still on it keep working)",
    )
    p.set_defaults(handler=_rotate)
