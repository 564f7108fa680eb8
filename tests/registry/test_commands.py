"""``asgi-apim certs add|list|remove|update`` and ``check``, in-process through `asgi_apim.cli.main`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asgi_apim.certs.pki import Issued, issue_client, make_ca
from asgi_apim.cli import main
from asgi_apim.errors import CertificateFileError
from asgi_apim.registry import read_certificate

CONFIG = """
[encryption]
key = "{key}"

[throttling.tiers]
Partner = "10/minute"

{registry}

[[apis]]
name = "pets"
context = "/pets"
[apis.security]
mutual_ssl = "mandatory"

[[apis.certificates]]
alias = "in-file"
certificate = "in-file.pem"
tier = "Gold"

[[apis]]
name = "orders"
context = "/orders"
[apis.security]
mutual_ssl = "mandatory"
"""


@pytest.fixture
def ca() -> Issued:
    return make_ca("commands CA")


@pytest.fixture
def conf(tmp_path: Path, ca: Issued) -> Path:
    issue_client(ca, "in-file").write(tmp_path / "in-file.pem")
    issue_client(ca, "partner").write(tmp_path / "partner.pem", tmp_path / "partner.key")
    path = tmp_path / "deployment.toml"
    path.write_text(CONFIG.format(key="cd" * 32, registry="[registry]"))
    return path


def certs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["certs", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_add_then_list_as_a_table_and_as_json(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pem = str(conf.parent / "partner.pem")
    code, out, err = certs(
        capsys, "add", "--config", str(conf), "--api", "pets", "--alias", "p", "--tier", "Partner", pem
    )
    assert code == 0, err
    assert out.startswith("registered 'p' for API 'pets' at tier Partner (sha256 ")
    assert (conf.parent / "registry.db").exists()  # [registry] without url: sqlite:///registry.db beside the file
    code, out, _ = certs(capsys, "list", "--config", str(conf))
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["ALIAS", "API", "TIER", "SUBJECT", "EXPIRES", "DAYS", "LEFT", "SOURCE"]
    assert lines[1].split()[:3] == ["in-file", "pets", "Gold"] and lines[1].split()[-1] == "config"
    assert lines[2].split()[:3] == ["p", "pets", "Partner"] and lines[2].split()[-1] == "registry"
    assert "CN=partner" in lines[2] and lines[2].split()[-2] in ("364", "365")
    code, out, _ = certs(capsys, "list", "--config", str(conf), "--json", "--api", "pets")
    rows = json.loads(out)
    assert [(r["alias"], r["source"], r["tier"]) for r in rows] == [
        ("in-file", "config", "Gold"),
        ("p", "registry", "Partner"),
    ]
    assert set(rows[1]) >= {"api", "subject", "sha256", "not_after", "days_left"}
    code, out, _ = certs(capsys, "list", "--config", str(conf), "--json", "--api", "orders")
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize(
    ("args", "exit_code", "message"),
    [
        (
            ["--api", "nope", "--alias", "x", "--tier", "Gold", "partner.pem"],
            2,
            "unknown API 'nope' (configured: pets, orders)",
        ),
        (["--api", "pets", "--alias", "x", "--tier", "Tin", "partner.pem"], 2, "unknown tier 'Tin'"),
        (["--api", "pets", "--alias", "", "--tier", "Gold", "partner.pem"], 2, "alias '' must be 1 to 255"),
        (["--api", "pets", "--alias", "x", "--tier", "Gold", "partner.key"], 1, "holds a private key"),
        (["--api", "pets", "--alias", "x", "--tier", "Gold", "deployment.toml"], 1, "is not a certificate"),
        (["--api", "pets", "--alias", "x", "--tier", "Gold", "missing.pem"], 1, "cannot be read"),
        (
            ["--api", "pets", "--alias", "in-file", "--tier", "Gold", "partner.pem"],
            1,
            "in the configuration file already",
        ),
        (["--api", "pets", "--alias", "x", "--tier", "Gold", "in-file.pem"], 1, "in the configuration as 'in-file'"),
    ],
)
def test_add_refuses(
    conf: Path, capsys: pytest.CaptureFixture[str], args: list[str], exit_code: int, message: str
) -> None:
    args[-1] = str(conf.parent / args[-1])
    code, out, err = certs(capsys, "add", "--config", str(conf), *args)
    assert (code, out) == (exit_code, "")
    assert message in err and err.count("\n") == 1 and err.startswith("asgi-apim: error: ")


def test_duplicates_remove_and_update(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pem = str(conf.parent / "partner.pem")
    base = ["--config", str(conf), "--api", "pets"]
    assert certs(capsys, "add", *base, "--alias", "p", "--tier", "Gold", pem)[0] == 0
    code, _, err = certs(capsys, "add", *base, "--alias", "p", "--tier", "Gold", pem)
    assert code == 1 and "already has a registered certificate with alias 'p'" in err
    code, _, err = certs(capsys, "add", *base, "--alias", "q", "--tier", "Gold", pem)
    assert code == 1 and "already registered for API 'pets' as 'p'" in err
    assert certs(capsys, "update", *base, "--alias", "p", "--tier", "Bronze")[:2] == (
        0,
        "'p' of API 'pets' is now at tier Bronze\n",
    )
    assert certs(capsys, "update", *base, "--alias", "p", "--tier", "Tin")[0] == 2
    code, _, err = certs(capsys, "update", *base, "--alias", "in-file", "--tier", "Bronze")
    assert code == 1 and "is registered in" in err and "change it there" in err
    assert certs(capsys, "remove", *base, "--alias", "p")[:2] == (0, "removed 'p' from API 'pets'\n")
    code, _, err = certs(capsys, "remove", *base, "--alias", "p")
    assert code == 1 and "has no certificate registered with alias 'p'" in err
    code, out, _ = certs(capsys, "list", "--config", str(conf), "--json")
    assert [r["alias"] for r in json.loads(out)] == ["in-file"]


def test_bad_usage_exits_2(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["certs", "add", "--config", str(conf), "--api", "pets"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["certs"])
    assert info.value.code == 2
    capsys.readouterr()


def test_a_configuration_without_registry_is_told_so(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf.write_text(CONFIG.format(key="cd" * 32, registry=""))
    code, out, err = certs(capsys, "list", "--config", str(conf))
    assert (code, out) == (2, "") and "has no [registry] table" in err


def test_an_unreachable_database_is_one_line_exit_1(
    tmp_path: Path, conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://apim:hunter2-secret@127.0.0.1:1/registry"
    conf.write_text(CONFIG.format(key="cd" * 32, registry=f'[registry]\nurl = "{url}"'))
    code, out, err = certs(capsys, "list", "--config", str(conf))
    assert (code, out) == (1, "") and "registry database unavailable" in err and "hunter2" not in err


def test_check_shows_a_registry_registration_with_its_source(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pem = str(conf.parent / "partner.pem")
    certs(capsys, "add", "--config", str(conf), "--api", "pets", "--alias", "p", "--tier", "Partner", pem)
    assert main(["check", "--config", str(conf), pem]) == 0
    out = capsys.readouterr().out
    assert "pets: accepted, alias p, tier Partner (registered exactly; source registry; mutual_ssl mandatory)" in out
    assert main(["check", "--config", str(conf), str(conf.parent / "in-file.pem")]) == 0
    assert "alias in-file, tier Gold (registered exactly; source config;" in capsys.readouterr().out


def test_read_certificate_takes_pem_or_der_and_one_certificate_only(ca: Issued) -> None:
    leaf = issue_client(ca)
    assert read_certificate(leaf.cert_pem()) == leaf.cert == read_certificate(leaf.der())
    with pytest.raises(CertificateFileError, match="holds 2 certificates"):
        read_certificate(leaf.cert_pem() + ca.cert_pem())
    with pytest.raises(CertificateFileError, match="private key"):
        read_certificate(leaf.cert_pem() + leaf.key_pem())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_read_certificate_refuses_any_other_bytes_with_its_own_error(data: bytes) -> None:
    try:
        read_certificate(data)
    except CertificateFileError:
        return
    raise AssertionError("random bytes read as a certificate")  # pragma: no cover
