"""The start-up checks of ``asgi-apim serve``: TLS files, per-worker limits, unreachable certificate APIs."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from asgi_apim.certs.pki import init_pki, issue_server, make_ca
from asgi_apim.config import Config, load_config
from asgi_apim.server.preflight import (
    PreflightError,
    check_tls_files,
    mandatory_certificate_apis,
    per_worker_limits,
    unreachable_certificate_apis,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    init_pki(d)
    (d / "both.pem").write_bytes((d / "server.pem").read_bytes() + (d / "server.key").read_bytes())
    issued = issue_server(make_ca("other"))
    encrypted = issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    issued.write(d / "enc.pem")
    (d / "enc.key").write_bytes(encrypted)
    (d / "empty.pem").write_text("nothing here\n")
    return d


def test_a_good_pair_and_a_combined_file_pass(pki: Path) -> None:
    check_tls_files(str(pki / "server.pem"), str(pki / "server.key"), None, str(pki / "ca.pem"))
    check_tls_files(str(pki / "both.pem"), None)
    check_tls_files(str(pki / "enc.pem"), str(pki / "enc.key"), "s3cret")
    check_tls_files(None, None)


@pytest.mark.parametrize(
    ("cert", "key", "password", "ca", "message"),
    [
        ("server.pem", None, None, None, "--ssl-certfile {d}/server.pem: holds no private key"),
        ("server.key", "server.pem", None, None, "--ssl-certfile {d}/server.key: not a PEM certificate (a private key"),
        ("server.pem", "server.pem", None, None, "--ssl-keyfile {d}/server.pem: not a private key (a certificate"),
        ("server.pem", "empty.pem", None, None, "--ssl-keyfile {d}/empty.pem: not a private key (no PEM private key"),
        ("server.pem", "client.key", None, None, "--ssl-keyfile {d}/client.key: the key does not match"),
        ("enc.pem", "enc.key", None, None, "--ssl-keyfile {d}/enc.key: the key is encrypted; give --ssl-keyfile-pass"),
        ("enc.pem", "enc.key", "wrong", None, "--ssl-keyfile {d}/enc.key: cannot decrypt the key"),
        ("server.pem", "server.key", "x", None, "--ssl-keyfile {d}/server.key: the key is not encrypted"),
        ("server.pem", "server.key", None, "server.key", "--ssl-ca-certs {d}/server.key: no PEM certificate"),
        ("nowhere.pem", "server.key", None, None, "--ssl-certfile {d}/nowhere.pem: no such file"),
        (None, "server.key", None, None, "--ssl-keyfile needs --ssl-certfile"),
        (None, None, None, "ca.pem", "--ssl-ca-certs needs --ssl-certfile"),
    ],
)
def test_each_mistake_is_one_line_naming_flag_and_file(
    pki: Path, cert: str | None, key: str | None, password: str | None, ca: str | None, message: str
) -> None:
    def path(name: str | None) -> str | None:
        return str(pki / name) if name else None

    with pytest.raises(PreflightError) as info:
        check_tls_files(path(cert), path(key), password, path(ca))
    assert str(info.value).startswith(message.format(d=pki)), str(info.value)
    assert "\n" not in str(info.value)


CONFIG = """
[encryption]
key = "1212121212121212121212121212121212121212121212121212121212121212"

[mutual_ssl]
truststore = ["ca.pem"]
trusted_proxies = {proxies}

[throttling]
storage = "{storage}"

[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "{mode}"
application = {application}

[[apis]]
name = "shop"
context = "/shop"
[[apis.resources]]
path = "/admin"
methods = ["GET"]
[apis.resources.security]
mutual_ssl = "mandatory"
"""


def _config(
    tmp_path: Path, pki: Path, mode: str = "mandatory", proxies: str = "[]", storage: str = "memory://"
) -> Config:
    (tmp_path / "ca.pem").write_bytes((pki / "ca.pem").read_bytes())
    path = tmp_path / "deployment.toml"
    application = '["api_key"]' if mode != "mandatory" else "[]"
    path.write_text(CONFIG.format(mode=mode, proxies=proxies, storage=storage, application=application))
    return load_config(path)


def test_per_worker_limits(tmp_path: Path, pki: Path) -> None:
    config = _config(tmp_path, pki)
    line = per_worker_limits(config, 4, False)
    assert line is not None and "--workers 4" in line and "memory://" in line and "redis://" in line
    assert "--allow-per-worker-limits" in line
    assert per_worker_limits(config, 4, True) is None
    assert per_worker_limits(config, 1, False) is None and per_worker_limits(config, None, False) is None
    assert per_worker_limits(_config(tmp_path, pki, storage="redis://127.0.0.1:1/0"), 4, False) is None


def test_unreachable_certificate_apis(tmp_path: Path, pki: Path) -> None:
    config = _config(tmp_path, pki)
    assert mandatory_certificate_apis(config) == ["pets", "shop"]
    plain = unreachable_certificate_apis(config, False, 0)
    assert plain is not None and "API pets, shop" in plain and "no TLS" in plain
    no_reqs = unreachable_certificate_apis(config, True, 0)
    assert no_reqs is not None and "--ssl-cert-reqs 0" in no_reqs
    assert unreachable_certificate_apis(config, True, 1) is None
    assert unreachable_certificate_apis(_config(tmp_path, pki, proxies='["10.0.0.1/32"]'), False, 0) is None
    optional = _config(tmp_path, pki, mode="optional")
    assert mandatory_certificate_apis(optional) == ["shop"]
