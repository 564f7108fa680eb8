"""WSO2's backend JWT: signed with the configured key, WSO2's claims, reused per caller."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from starlette.authentication import UnauthenticatedUser

from asgi_apim.errors import ConfigError
from asgi_apim.gateway.backend_jwt import CLAIMS, BackendJWT
from asgi_apim.gateway_config import BackendJWTConfig
from asgi_apim.identity import Principal


def key_file(tmp_path: Path) -> tuple[Path, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "jwt.pem"
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return path, key


def test_claims_signature_and_reuse(tmp_path: Path) -> None:
    path, key = key_file(tmp_path)
    now = [1000.0]
    signer = BackendJWT(
        BackendJWTConfig(signing_key=path, validity=100), "pets", "/pets", key="k", clock=lambda: now[0]
    )
    user = Principal(method="oauth2", subject="alice", tier="Gold", scopes=("read",), claims={"keytype": "SANDBOX"})
    token = signer.token(user)
    assert token is not None and signer.header == b"x-jwt-assertion"
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], options={"verify_exp": False})
    assert claims["iss"] == "asgi-apim" and claims["sub"] == "alice" and claims["exp"] - claims["iat"] == 100
    assert claims[CLAIMS + "apiname"] == "pets" and claims[CLAIMS + "apicontext"] == "/pets"
    assert claims[CLAIMS + "tier"] == "Gold" and claims[CLAIMS + "keytype"] == "SANDBOX"
    assert claims[CLAIMS + "authmethod"] == "oauth2" and claims["scope"] == "read"
    now[0] += 49
    assert signer.token(user) == token  # reused within half its validity
    now[0] += 2
    assert signer.token(user) != token
    assert signer.token(UnauthenticatedUser()) is None and signer.token(None) is None


def test_a_bad_key_names_its_setting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    for path in (bad, tmp_path / "missing.pem"):
        with pytest.raises(ConfigError) as info:
            BackendJWT(BackendJWTConfig(signing_key=path), "a", "/a", key="apis[a].backend_jwt.signing_key")
        assert info.value.key == "apis[a].backend_jwt.signing_key"


def test_the_apis_version_is_a_claim(tmp_path: Path) -> None:
    path, key = key_file(tmp_path)
    signer = BackendJWT(BackendJWTConfig(signing_key=path), "pets", "/pets/1.0.0", key="k", version="1.0.0")
    token = signer.token(Principal(method="basic", subject="bob", tier="Gold", version="1.0.0"))
    assert token is not None
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"])
    assert claims[CLAIMS + "version"] == "1.0.0" and claims[CLAIMS + "apicontext"] == "/pets/1.0.0"
    unversioned = BackendJWT(BackendJWTConfig(signing_key=path), "pets", "/pets", key="k")
    plain = unversioned.token(Principal(method="basic", subject="bob", tier="Gold"))
    assert plain is not None
    assert CLAIMS + "version" not in jwt.decode(plain, key.public_key(), algorithms=["ES256"])
