"""docs/configuration.md describes every key the configuration parser accepts.

The keys the code accepts are found by running the real parser (`parse_config`)
over the reference's own complete example while `recording_keys` notes every key
each `Table` asks for, present or not. Every recorded key must be described in a
``| key | type | default | meaning |`` table of the reference (a table's keys
described below it stand for the table; ``<name>`` matches any name), and every
described key must be one the code accepts. A new key therefore needs only its
row in the reference; a new table or array of tables that is parsed only when
present (``[[apis.resources]]``, ``[apis.backend_security]``) needs an entry in
the complete example as well, so that the parser reaches it.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from asgi_apim._schema import recording_keys
from asgi_apim.config import parse_config

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
_HEADER = re.compile(r"^\|\s*key\s*\|\s*type\s*\|\s*default\s*\|\s*meaning\s*\|\s*$")
_ROW_KEY = re.compile(r"^\|\s*`([^`]+)`\s*\|")
_INDEX = re.compile(r"\[\d+\]")


def documented_keys(text: str) -> set[str]:
    """The first cells of every key table."""
    keys: set[str] = set()
    in_table = False
    for line in text.splitlines():
        if _HEADER.match(line):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        match = _ROW_KEY.match(line)
        if in_table and match:
            keys.add(match.group(1))
    return keys


def complete_example(text: str) -> dict[str, object]:
    section = text.split("## A complete example", 1)[1]
    block = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the reference has no complete example"
    return tomllib.loads(block.group(1))


def accepted_keys(raw: dict[str, object], base: Path) -> set[str]:
    with recording_keys() as keys:
        parse_config(raw, base=base, path=base / "deployment.toml")
    return {_INDEX.sub("", k) for k in keys}


def _pattern(documented: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"<[a-z_]+>", r"[^.]+", re.escape(documented)) + r"\Z")


def covered(key: str, documented: set[str]) -> bool:
    return any(_pattern(d).match(key) or d.startswith(key + ".") for d in documented)


def undocumented(text: str, base: Path) -> set[str]:
    documented = documented_keys(text)
    return {k for k in accepted_keys(complete_example(text), base) if not covered(k, documented)}


@pytest.fixture(scope="module")
def text() -> str:
    return REFERENCE.read_text(encoding="utf-8")


def test_the_complete_example_loads(text: str, tmp_path: Path) -> None:
    cfg = parse_config(complete_example(text), base=tmp_path)
    assert [a.name for a in cfg.apis] == ["pets"]
    assert {km.name for km in cfg.key_managers} == {"idp", "wso2-km", "internal"}
    assert cfg.apis[0].resources[2].security is not None and cfg.apis[0].backend_security is not None
    assert cfg.ssl_profiles


def test_every_key_the_code_accepts_is_in_the_reference(text: str, tmp_path: Path) -> None:
    missing = undocumented(text, tmp_path)
    assert not missing, f"describe these keys in docs/configuration.md: {sorted(missing)}"


def test_every_key_in_the_reference_is_accepted(text: str, tmp_path: Path) -> None:
    accepted = accepted_keys(complete_example(text), tmp_path)
    stale = {d for d in documented_keys(text) if not any(_pattern(d).match(k) for k in accepted)}
    assert not stale, f"docs/configuration.md describes keys the code does not accept: {sorted(stale)}"


def test_the_reference_covers_the_whole_parser(text: str, tmp_path: Path) -> None:
    accepted = accepted_keys(complete_example(text), tmp_path)
    for key in (  # one key of every table, so an example that stopped reaching one is noticed
        "public_paths",
        "encryption.old_keys",
        "mutual_ssl.crl",
        "throttling.fail_open",
        "key_managers.jwks_min_refetch_interval",
        "api_keys.revoked",
        "basic_auth.realm",
        "registry.url",
        "apis.truststore_tier",
        "apis.security.application_mandatory",
        "apis.certificates.alias",
        "apis.resources.public",
        "apis.resources.security.mutual_ssl",
        "apis.backend_security.token",
        "ssl_profiles.servers",
    ):
        assert key in accepted
    assert any(k.startswith("throttling.tiers.") for k in accepted)
    assert any(k.startswith("secrets.") for k in accepted)


def test_a_key_missing_from_the_reference_is_caught(text: str, tmp_path: Path) -> None:
    row = next(line for line in text.splitlines() if line.startswith("| `mutual_ssl.crl` |"))
    assert undocumented(text.replace(row + "\n", ""), tmp_path) == {"mutual_ssl.crl"}
    sub = next(line for line in text.splitlines() if line.startswith("| `apis.resources.security.mutual_ssl` |"))
    assert undocumented(text.replace(sub + "\n", ""), tmp_path) == {"apis.resources.security.mutual_ssl"}


def test_a_new_key_in_the_code_is_caught(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asgi_apim.config as config

    original = config._mutual_ssl

    def with_a_new_key(t: config.Table) -> config.MutualSSLConfig:
        t.bool("some_new_key", False)
        return original(t)

    monkeypatch.setattr(config, "_mutual_ssl", with_a_new_key)
    assert undocumented(text, tmp_path) == {"mutual_ssl.some_new_key"}
