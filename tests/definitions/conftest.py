"""A configuration built on the test definitions: petstore (OpenAPI 3.0, default version), pizzashack
(Swagger 2.0) and vault (OpenAPI 3.1), with every credential they accept."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from asgi_apim.auth.apikey import issue_api_key
from asgi_apim.config import Config, load_config

HERE = Path(__file__).parent
SECRET = "s" * 40
ISSUER = "https://idp.test"
USER = ("alice", "alice-password")
PETSTORE = "Swagger Petstore"
PIZZASHACK = "PizzaShackAPI"

BASE = """
[encryption]
key = "{key}"

[secrets]
petstore_backend = "backend-secret"

[api_keys]
signing_key = "signing.pem"

[basic_auth]
users_file = "users.htpasswd"

[[key_managers]]
name = "idp"
issuer = "{issuer}"
shared_secret = "{secret}"
algorithms = ["HS256"]
"""

APIS = """
[[apis]]
definition = "{here}/petstore.yaml"
default_version = true

[[apis]]
definition = "{here}/pizzashack.json"

[[apis]]
definition = "{here}/vault.yaml"
"""


def write_setup(tmp: Path, apis: str = APIS, extra: str = "") -> Path:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp / "signing.pem").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    hashed = bcrypt.hashpw(USER[1].encode(), bcrypt.gensalt(4)).decode()
    (tmp / "users.htpasswd").write_text(f"{USER[0]}:{hashed}\n")
    path = tmp / "deployment.toml"
    text = BASE.format(key="cd" * 32, issuer=ISSUER, secret=SECRET) + extra + apis.format(here=HERE)
    path.write_text(text)
    return path


def token(*scopes: str, subject: str = "alice") -> str:
    claims: dict[str, Any] = {"iss": ISSUER, "sub": subject, "exp": int(time.time()) + 300}
    if scopes:
        claims["scope"] = " ".join(scopes)
    return jwt.encode(claims, SECRET, algorithm="HS256")


@dataclass
class Setup:
    path: Path
    config: Config

    def api_key(self, api: str, *scopes: str) -> str:
        return issue_api_key(self.config, api, "Unlimited", subject="key-holder", scopes=scopes)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    path = write_setup(tmp_path)
    return Setup(path, load_config(path))
