from __future__ import annotations

import os
import re
from pathlib import Path

import cryptography_vectors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_apim.errors import CryptoError
from asgi_apim.secrets import DataKey, Envelope, Keyring, is_ciphertext, key_id
from asgi_apim.secrets.envelope import PREFIX


def nist_vectors(name: str) -> list[dict[str, str]]:
    """AES-256-GCM vectors of SP 800-38D (CAVS 14.0) with a 96-bit IV and a 128-bit tag."""
    vectors: list[dict[str, str]] = []
    params: dict[str, str] = {}
    with cryptography_vectors.open_vector_file(f"ciphers/AES/GCM/{name}", "r") as f:
        for line in f:
            line = line.strip()
            if line.startswith("[") and "=" in line:
                k, v = line[1:-1].split("=")
                params[k.strip()] = v.strip()
            elif line.startswith("Count"):
                vectors.append({**params, "Count": line.split("=")[1].strip()})
            elif line == "FAIL":
                vectors[-1]["FAIL"] = "1"
            elif "=" in line and vectors:
                k, v = line.split("=", 1)
                vectors[-1][k.strip()] = v.strip()
    return [v for v in vectors if v["IVlen"] == "96" and v["Taglen"] == "128"]


ENCRYPT = nist_vectors("gcmEncryptExtIV256.rsp")
DECRYPT = nist_vectors("gcmDecrypt256.rsp")


def test_vector_files_are_read() -> None:
    assert len(ENCRYPT) >= 100 and len(DECRYPT) >= 100
    assert any(v.get("FAIL") for v in DECRYPT) and any(not v.get("FAIL") for v in DECRYPT)
    assert any(v["PT"] and v["AAD"] for v in ENCRYPT)


@pytest.mark.parametrize("v", ENCRYPT, ids=lambda v: f"enc-{v['PTlen']}-{v['AADlen']}-{v['Count']}")
def test_nist_encrypt(v: dict[str, str]) -> None:
    key = DataKey(bytes.fromhex(v["Key"]))
    sealed = key.seal(bytes.fromhex(v["IV"]), bytes.fromhex(v["PT"]), bytes.fromhex(v["AAD"]))
    assert sealed == bytes.fromhex(v["CT"] + v["Tag"])


@pytest.mark.parametrize("v", DECRYPT, ids=lambda v: f"dec-{v['PTlen']}-{v['AADlen']}-{v['Count']}")
def test_nist_decrypt(v: dict[str, str]) -> None:
    key = DataKey(bytes.fromhex(v["Key"]))
    nonce, sealed, aad = bytes.fromhex(v["IV"]), bytes.fromhex(v["CT"] + v["Tag"]), bytes.fromhex(v["AAD"])
    if v.get("FAIL"):
        with pytest.raises(CryptoError):
            key.open(nonce, sealed, aad)
    else:
        assert key.open(nonce, sealed, aad) == bytes.fromhex(v["PT"])


@pytest.mark.parametrize("nonce_size", [0, 8, 11, 13, 16])
def test_only_96_bit_nonces(nonce_size: int) -> None:
    key = DataKey(bytes(32))
    with pytest.raises(CryptoError):
        key.seal(bytes(nonce_size), b"x", b"")
    with pytest.raises(CryptoError):
        key.open(bytes(nonce_size), bytes(17), b"")


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33])
def test_only_256_bit_keys(size: int) -> None:
    with pytest.raises(CryptoError):
        DataKey(bytes(size))


def test_envelope_layout() -> None:
    raw = os.urandom(32)
    key = DataKey(raw)
    text = key.encrypt("s3cret")
    assert is_ciphertext(text) and text.isascii() and text.isprintable()
    assert re.fullmatch(r"aesgcm:v1:[0-9a-f]{16}:[A-Za-z0-9_-]{16}:[A-Za-z0-9_-]+", text)
    env = Envelope.parse(text)
    assert env.kid == key.kid == key_id(raw) and len(env.nonce) == 12 and len(env.sealed) == len("s3cret") + 16
    assert str(env) == text
    assert key.open(env.nonce, env.sealed, f"{PREFIX}{key.kid}:".encode()) == b"s3cret"


def test_key_id_is_hmac_of_a_fixed_label() -> None:
    import hashlib
    import hmac

    raw = bytes(range(32))
    assert key_id(raw) == hmac.new(raw, b"asgi-apim key id", hashlib.sha256).hexdigest()[:16]
    assert raw.hex()[:16] not in key_id(raw)


def test_fresh_nonce_every_time() -> None:
    key = DataKey(os.urandom(32))
    texts = {key.encrypt("same") for _ in range(200)}
    assert len(texts) == 200
    assert len({Envelope.parse(t).nonce for t in texts}) == 200


def test_every_flipped_character_is_refused() -> None:
    keyring = Keyring(os.urandom(32))
    text = keyring.encrypt("a backend password")
    assert keyring.decrypt(text) == "a backend password"
    for i, c in enumerate(text):
        for replacement in {chr(ord(c) ^ 1), chr(ord(c) ^ 0x20), chr(ord(c) ^ 0x80), "A" if c != "A" else "B"}:
            tampered = text[:i] + replacement + text[i + 1 :]
            with pytest.raises(CryptoError):
                keyring.decrypt(tampered)


def test_every_flipped_bit_of_the_binary_parts_is_refused() -> None:
    keyring = Keyring(os.urandom(32))
    env = Envelope.parse(keyring.encrypt("x" * 20))
    for field in ("nonce", "sealed"):
        data = getattr(env, field)
        for i in range(len(data)):
            for bit in range(8):
                flipped = bytearray(data)
                flipped[i] ^= 1 << bit
                with pytest.raises(CryptoError):
                    keyring.decrypt(str(env._replace(**{field: bytes(flipped)})))


def test_truncated_and_extended_envelopes_are_refused() -> None:
    keyring = Keyring(os.urandom(32))
    text = keyring.encrypt("value")
    for cut in range(1, len(text)):
        with pytest.raises(CryptoError):
            keyring.decrypt(text[:cut])
    for extra in ("A", "=", " ", "\n", ":x"):
        with pytest.raises(CryptoError):
            keyring.decrypt(text + extra)


def test_wrong_key_is_refused() -> None:
    text = DataKey(os.urandom(32)).encrypt("value")
    with pytest.raises(CryptoError, match="key id"):
        Keyring(os.urandom(32)).decrypt(text)


def test_same_key_id_but_wrong_key_bytes_is_refused() -> None:
    right, wrong = DataKey(os.urandom(32)), DataKey(os.urandom(32))
    env = Envelope.parse(right.encrypt("value"))
    forged = wrong.seal(env.nonce, b"other", env.aad())
    with pytest.raises(CryptoError, match="authentication failed"):
        right.decrypt(env._replace(sealed=forged))


def test_header_is_authenticated() -> None:
    key = DataKey(os.urandom(32))
    env = Envelope.parse(key.encrypt("value"))
    sealed_without_header = key.seal(env.nonce, b"value", b"")
    with pytest.raises(CryptoError):
        key.decrypt(env._replace(sealed=sealed_without_header))


def test_context_binds_a_value_to_its_purpose() -> None:
    keyring = Keyring(os.urandom(32))
    text = keyring.encrypt("token", b"registry:partner-a")
    assert keyring.decrypt(text, b"registry:partner-a") == "token"
    for other in (b"", b"registry:partner-b"):
        with pytest.raises(CryptoError):
            keyring.decrypt(text, other)


def test_old_keys_decrypt_and_only_the_current_key_encrypts() -> None:
    old, new = os.urandom(32), os.urandom(32)
    from_old = Keyring(old).encrypt("legacy")
    ring = Keyring(new, [old])
    assert ring.decrypt(from_old) == "legacy"
    assert Envelope.parse(ring.encrypt("fresh")).kid == key_id(new)
    assert set(ring.kids) == {key_id(new), key_id(old)}


def test_reprs_never_show_key_material() -> None:
    raw = os.urandom(32)
    for obj in (DataKey(raw), Keyring(raw, [os.urandom(32)])):
        assert raw.hex() not in repr(obj) and raw.hex()[:8] not in repr(obj).replace(key_id(raw), "")


def test_non_utf8_plaintext_is_refused() -> None:
    key = DataKey(os.urandom(32))
    nonce = os.urandom(12)
    sealed = key.seal(nonce, b"\xff\xfe", f"{PREFIX}{key.kid}:".encode())
    with pytest.raises(CryptoError, match="UTF-8"):
        key.decrypt(Envelope(key.kid, nonce, sealed))


_RING = Keyring(os.urandom(32))


@settings(max_examples=300, deadline=None)
@given(st.text(), st.binary(max_size=64))
def test_round_trip(plaintext: str, context: bytes) -> None:
    text = _RING.encrypt(plaintext, context)
    assert is_ciphertext(text) and text.isascii()
    assert _RING.decrypt(text, context) == plaintext


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_decrypts_or_crashes(value: str) -> None:
    with pytest.raises(CryptoError):
        _RING.decrypt(value)
    with pytest.raises(CryptoError):
        _RING.decrypt(PREFIX + value)


DOCS = Path(__file__).resolve().parents[2] / "docs" / "secrets.md"


def test_the_documented_decryption_snippet_works() -> None:
    text = DOCS.read_text()
    snippet = re.search(r"### Decrypting in another program.*?```python\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]
    assert "asgi_apim" not in snippet
    namespace: dict = {}
    exec(compile(snippet, str(DOCS), "exec"), namespace)
    value = Keyring(bytes.fromhex(KEY_HEX)).encrypt("from asgi-apim", b"ctx")
    assert namespace["decrypt"](value, KEY_HEX, b"ctx") == "from asgi-apim"


KEY_HEX = bytes(range(32)).hex()


def test_the_documented_worked_example_is_what_we_produce() -> None:
    key = DataKey(bytes.fromhex(KEY_HEX))
    nonce = bytes.fromhex("000102030405060708090a0b")
    sealed = key.seal(nonce, b"hunter2", f"{PREFIX}{key.kid}:".encode())
    text = DOCS.read_text()
    for shown in (key.kid, sealed.hex(), str(Envelope(key.kid, nonce, sealed))):
        assert f"`{shown}`" in text
