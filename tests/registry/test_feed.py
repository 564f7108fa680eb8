"""Registrations from the database in the trust material: joined, polled, swapped, kept during an outage."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from asgi_apim.certs.pki import Issued, issue_client, make_ca
from asgi_apim.certs.truststore import TrustReloader, registered
from asgi_apim.certs.validation import CertificateValidator
from asgi_apim.config import Config, load_config
from asgi_apim.registry import Registry, RegistryFeed, expiry_summary, feed_for
from asgi_apim.registry.store import RegistryStore

CONFIG = """
[encryption]
key = "{key}"

[mutual_ssl]
reload_interval = 0.1

[throttling.tiers]
Partner = "10/minute"

[registry]
url = "{url}"
expiry_warning_days = 20

[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "mandatory"
{extra}
"""


def write_config(tmp_path: Path, url: str | None = None, extra: str = "") -> Config:
    url = url or f"sqlite:///{tmp_path / 'registry.db'}"
    path = tmp_path / "deployment.toml"
    path.write_text(CONFIG.format(key="ab" * 32, url=url, extra=extra))
    return load_config(path)


def accepted(reloader: TrustReloader, leaf: Issued) -> tuple[str, str] | None:
    verdict = CertificateValidator(reloader.current).validate((leaf.der(),))
    a = verdict.acceptances.get("pets")
    return None if a is None else (a.alias or "", a.tier)


@pytest.fixture
def ca() -> Issued:
    return make_ca("registry test CA")


def test_without_a_registry_table_there_is_no_feed(tmp_path: Path) -> None:
    path = tmp_path / "d.toml"
    path.write_text('[encryption]\nkey = "' + "ab" * 32 + '"\n')
    assert feed_for(load_config(path)) is None


def test_a_registration_is_accepted_after_the_next_check_and_refused_once_removed(tmp_path: Path, ca: Issued) -> None:
    config = write_config(tmp_path)
    leaf = issue_client(ca, "partner")
    reloader = TrustReloader(config.mutual_ssl, config.apis, registry=feed_for(config))
    assert accepted(reloader, leaf) is None
    assert reloader.check() is False  # nothing changed: no new generation

    registry = Registry(config)
    registry.add("pets", "partner", "Partner", leaf.cert_pem())
    first = reloader.current.generation
    assert reloader.check() is True
    assert reloader.current.generation == first + 1
    assert accepted(reloader, leaf) == ("partner", "Partner")
    assert [r.source for r in reloader.current.registrations] == ["registry"]

    registry.update("pets", "partner", "Gold")
    assert reloader.check() is True and accepted(reloader, leaf) == ("partner", "Gold")
    registry.remove("pets", "partner")
    assert reloader.check() is True and accepted(reloader, leaf) is None


def test_a_registered_ca_accepts_the_leaves_it_issued(tmp_path: Path, ca: Issued) -> None:
    config = write_config(tmp_path)
    Registry(config).add("pets", "partner-ca", "Partner", ca.cert_pem())
    reloader = TrustReloader(config.mutual_ssl, config.apis, registry=feed_for(config))
    assert accepted(reloader, issue_client(ca, "anyone")) == ("partner-ca", "Partner")


def test_the_configuration_wins_on_the_same_alias_or_certificate(
    tmp_path: Path, ca: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    leaf, other = issue_client(ca, "a"), issue_client(ca, "b")
    leaf.write(tmp_path / "a.pem")
    config = write_config(tmp_path)
    store = RegistryStore(config.registry.url or "")

    # written straight to the table, as another node with another configuration could have
    for alias, issued in (("from-config", other), ("elsewhere", leaf)):
        reg = registered("pets", alias, "Gold", issued.cert, source="registry")
        store.add("pets", alias, issued.cert_pem().decode(), reg.sha256.hex(), "Gold")
    config = write_config(
        tmp_path,
        extra='[[apis.certificates]]\nalias = "from-config"\ncertificate = "a.pem"\ntier = "Partner"\n',
    )
    with caplog.at_level(logging.WARNING, "asgi_apim.certs.truststore"):
        reloader = TrustReloader(config.mutual_ssl, config.apis, registry=feed_for(config))
    assert accepted(reloader, leaf) == ("from-config", "Partner")
    assert accepted(reloader, other) is None  # its alias is the configuration's
    assert [(r.alias, r.source) for r in reloader.current.registrations] == [("from-config", "config")]
    assert "'from-config' of API 'pets' ignored: the configuration registers that alias" in caplog.text
    assert "'elsewhere' of API 'pets' ignored: the configuration registers that certificate" in caplog.text


def test_registrations_of_unknown_apis_or_tiers_are_left_out_and_logged_once(
    tmp_path: Path, ca: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path)
    store = RegistryStore(config.registry.url or "")
    store.add("gone", "x", ca.cert_pem().decode(), "1" * 64, "Gold")
    store.add("pets", "y", ca.cert_pem().decode(), "2" * 64, "Retired")
    feed = RegistryFeed(config)
    with caplog.at_level(logging.WARNING, "asgi_apim.registry"):
        assert feed.registrations()[1] == ()
        store.add("pets", "z", issue_client(ca).cert_pem().decode(), "3" * 64, "Gold")
        assert [r.alias for r in feed.registrations()[1]] == ["z"]
    assert caplog.text.count("'x' of API 'gone' left out: API 'gone' is not in the configuration") == 1
    assert caplog.text.count("tier 'Retired' is not in [throttling.tiers]") == 1


def test_an_unreachable_database_keeps_the_last_good_view_logged_once_and_recovery_too(
    tmp_path: Path, ca: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "db"
    home.mkdir()
    config = write_config(tmp_path, url=f"sqlite:///{home / 'registry.db'}")
    leaf = issue_client(ca, "partner")
    Registry(config).add("pets", "partner", "Partner", leaf.cert_pem())
    reloader = TrustReloader(config.mutual_ssl, config.apis, registry=feed_for(config))
    generation = reloader.current.generation
    home.rename(tmp_path / "away")  # the database cannot be opened
    with caplog.at_level(logging.INFO, "asgi_apim.registry"):
        for _ in range(3):
            assert reloader.check() is False
        assert reloader.current.generation == generation and accepted(reloader, leaf) == ("partner", "Partner")
        assert caplog.text.count("certificate registry unreachable") == 1
        assert "1 registrations" in caplog.text
        (tmp_path / "away").rename(home)
        assert reloader.check() is False  # the same view: nothing to rebuild
    assert caplog.text.count("certificate registry reachable again") == 1


def test_starting_while_the_database_is_away_serves_the_configuration_alone_then_joins(
    tmp_path: Path, ca: Issued
) -> None:
    home = tmp_path / "db"
    config = write_config(tmp_path, url=f"sqlite:///{home / 'registry.db'}")
    reloader = TrustReloader(config.mutual_ssl, config.apis, registry=feed_for(config))
    assert reloader.current.registrations == ()
    home.mkdir()
    leaf = issue_client(ca, "partner")
    Registry(config).add("pets", "partner", "Partner", leaf.cert_pem())
    assert reloader.check() is True and accepted(reloader, leaf) == ("partner", "Partner")


def test_certificates_expiring_soon_are_logged_at_start_and_summarised(
    tmp_path: Path, ca: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path)
    registry = Registry(config)
    registry.add("pets", "soon", "Gold", issue_client(ca, "soon", days=5).cert_pem())
    registry.add("pets", "later", "Gold", issue_client(ca, "later", days=300).cert_pem())
    feed = feed_for(config)
    assert feed is not None
    with caplog.at_level(logging.WARNING, "asgi_apim.registry"):
        feed.registrations()
        feed.registrations()  # the next log is a day away
    assert caplog.text.count("registered certificate 'soon' of API 'pets' (registry) expires in 4 days") == 1
    assert "'later'" not in caplog.text
    count, nearest = feed.summary()
    assert count == 2 and nearest is not None and 4 < nearest <= 5
    assert expiry_summary([]) == (0, None)
