"""The gateway keys of ``[[apis]]``: parsed once, one ConfigError naming each bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from asgi_apim.config import load_config
from asgi_apim.errors import ConfigError
from asgi_apim.gateway_config import BackendConfig, SuspensionConfig, TimeoutsConfig

HEAD = 'public_paths = []\n[encryption]\nkey = "' + "ab" * 32 + '"\n'
API = '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\napplication = ["basic"]\n'


def load(tmp_path: Path, body: str) -> object:
    p = tmp_path / "deployment.toml"
    p.write_text(HEAD + body)
    return load_config(p)


def test_a_single_url_and_its_defaults(tmp_path: Path) -> None:
    cfg = load(
        tmp_path, API.replace('context = "/pets"\n', 'context = "/pets"\nbackend = "http://127.0.0.1:9000/v1"\n')
    )
    gw = cfg.api("pets").gateway  # type: ignore[attr-defined]
    assert gw.backend == BackendConfig(urls=("http://127.0.0.1:9000/v1",))
    assert cfg.api("pets").backend == gw.backend  # type: ignore[attr-defined]
    assert gw.timeouts == TimeoutsConfig(5, 30, 0) and gw.suspension == SuspensionConfig(30, 2, 300)
    assert not gw.preserve_host and not gw.forward_client_certificate and gw.sandbox_backend is None


def test_groups_timeouts_suspension_sandbox(tmp_path: Path) -> None:
    body = API.replace(
        'context = "/pets"\n',
        'context = "/pets"\nbackend = { type = "failover", urls = ["http://a:1", "https://b"] }\n'
        'sandbox_backend = { type = "load_balance", urls = ["http://s:2"] }\npreserve_host = true\n'
        "forward_client_certificate = true\n",
    )
    body += "[apis.timeouts]\nconnect = 1\nread = 2\ntotal = 3\n[apis.suspension]\ninitial = 1\nfactor = 3\nmax = 9\n"
    gw = load(tmp_path, body).api("pets").gateway  # type: ignore[attr-defined]
    assert gw.backend == BackendConfig(urls=("http://a:1", "https://b"), type="failover")
    assert gw.sandbox_backend.type == "load_balance"
    assert gw.preserve_host and gw.forward_client_certificate
    assert gw.timeouts == TimeoutsConfig(1, 2, 3) and gw.suspension == SuspensionConfig(1, 3, 9)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ('backend = "ftp://x"\n', "apis[0].backend"),
        ('backend = "http://x:99999"\n', "apis[0].backend"),
        ('backend = "http://u:p@x"\n', "apis[0].backend"),
        ('backend = "http://x/?q=1"\n', "apis[0].backend"),
        ("backend = 3\n", "apis[0].backend"),
        ('backend = { type = "random", urls = ["http://x"] }\n', "apis[0].backend.type"),
        ('backend = { type = "failover", urls = [] }\n', "apis[0].backend.urls"),
        ('backend = { type = "failover", urls = ["http://x", "nope"] }\n', "apis[0].backend.urls[1]"),
        ('backend = { type = "failover", urls = ["http://x"], extra = 1 }\n', "apis[0].backend.extra"),
        ('sandbox_backend = "http://x"\n', "apis[0].sandbox_backend"),
        ("preserve_host = true\n", "apis[0].preserve_host"),
        ('backend = "http://x"\npreserve_host = "yes"\n', "apis[0].preserve_host"),
    ],
)
def test_bad_backend_values_name_their_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, API.replace('context = "/pets"\n', 'context = "/pets"\n' + extra))
    assert info.value.key == key


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("[apis.timeouts]\nconnect = 0\n", "apis[0].timeouts.connect"),
        ("[apis.timeouts]\nread = -1\n", "apis[0].timeouts.read"),
        ("[apis.timeouts]\nwhole = 1\n", "apis[0].timeouts.whole"),
        ("[apis.suspension]\nfactor = 0.5\n", "apis[0].suspension.factor"),
        ("[apis.suspension]\ninitial = 60\nmax = 30\n", "apis[0].suspension.max"),
        ('[apis.backend_security]\ntype = "digest"\n', "apis[0].backend_security.type"),
        ('[apis.backend_security]\ntype = "basic"\nusername = "u"\n', "apis[0].backend_security.password"),
        (
            '[apis.backend_security]\ntype = "basic"\nusername = "a:b"\npassword = "p"\n',
            "apis[0].backend_security.username",
        ),
        ('[apis.backend_security]\ntype = "api_key"\nname = "k"\n', "apis[0].backend_security.value"),
        (
            '[apis.backend_security]\ntype = "api_key"\nname = "bad name"\nvalue = "v"\n',
            "apis[0].backend_security.name",
        ),
        (
            '[apis.backend_security]\ntype = "api_key"\nin = "cookie"\nname = "k"\nvalue = "v"\n',
            "apis[0].backend_security.in",
        ),
        (
            '[apis.backend_security]\ntype = "oauth2"\nclient_id = "c"\nclient_secret = "s"\n',
            "apis[0].backend_security.token_url",
        ),
        ('[apis.backend_security]\ntype = "oauth2"\ntoken_url = "x"\n', "apis[0].backend_security.token_url"),
    ],
)
def test_bad_tables_name_their_key(tmp_path: Path, table: str, key: str) -> None:
    body = API.replace('context = "/pets"\n', 'context = "/pets"\nbackend = "http://x"\n') + table
    with pytest.raises(ConfigError) as info:
        load(tmp_path, body)
    assert info.value.key == key


def test_backend_security_kinds(tmp_path: Path) -> None:
    body = API.replace('context = "/pets"\n', 'context = "/pets"\nbackend = "http://x"\n')
    body += (
        '[apis.backend_security]\ntype = "oauth2"\ntoken_url = "https://idp/token"\nclient_id = "gw"\n'
        'client_secret = "s3cret"\nscopes = ["read", "write"]\n'
    )
    sec = load(tmp_path, body).api("pets").backend_security  # type: ignore[attr-defined]
    assert (sec.type, sec.client_id, sec.scopes, sec.token_timeout) == ("oauth2", "gw", ("read", "write"), 10)
    assert "s3cret" not in repr(sec)


@pytest.mark.parametrize("host", ["a..b", "\x80", "a" * 64 + ".example"])
def test_a_backend_host_the_gateway_could_not_send_is_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, API.replace('context = "/pets"\n', f'context = "/pets"\nbackend = "http://{host}:80"\n'))
    assert info.value.key == "apis[0].backend" and "host name" in str(info.value)
