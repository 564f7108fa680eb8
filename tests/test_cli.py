import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from asgi_apim.certs.pki import issue_client, make_ca
from asgi_apim.cli import main


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asgi_apim.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_pki_init_writes_a_usable_pki(tmp_path: Path) -> None:
    r = run("pki", "init", str(tmp_path / "pki"))
    assert r.returncode == 0, r.stderr
    d = tmp_path / "pki"
    for name in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"):
        assert (d / name).stat().st_size > 0
    assert (d / "ca.key").stat().st_mode & 0o077 == 0
    server = x509.load_pem_x509_certificate((d / "server.pem").read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(v) for v in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    client = x509.load_pem_x509_certificate((d / "client.pem").read_bytes())
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    ca = x509.load_pem_x509_certificate((d / "ca.pem").read_bytes())
    client.verify_directly_issued_by(ca)
    server.verify_directly_issued_by(ca)
    ok = subprocess.run(
        ["openssl", "verify", "-CAfile", d / "ca.pem", "-purpose", "sslclient", d / "client.pem"], capture_output=True
    )
    assert ok.returncode == 0


@pytest.mark.parametrize(
    ("args", "prog", "says"),
    [
        ((), "asgi-apim", "required: command"),
        (("frobnicate",), "asgi-apim", "invalid choice: 'frobnicate'"),
        (("--bogus", "keygen"), "asgi-apim", "unrecognized arguments: --bogus"),
        (("serve",), "asgi-apim serve", "required: app, --config"),
        (
            ("serve", "m:app", "--config", "d.toml", "--ssl-cert-reqs", "7"),
            "asgi-apim serve",
            "--ssl-cert-reqs: invalid choice",
        ),
        (("check",), "asgi-apim check", "required: --config"),
        (("keygen", "--bogus"), "asgi-apim keygen", "unrecognized arguments: --bogus"),
        (("encrypt",), "asgi-apim encrypt", "required: --config"),
        (("decrypt", "--config"), "asgi-apim decrypt", "--config: expected one argument"),
        (("rotate-key", "--config", "d.toml"), "asgi-apim rotate-key", "required: --new-key"),
        (("apikey",), "asgi-apim apikey", "required: apikey_command"),
        (("apikey", "issue", "--config", "d.toml"), "asgi-apim apikey issue", "required: --api, --tier"),
        (
            ("apikey", "issue", "--config", "d.toml", "--api", "a", "--tier", "Gold", "--expires", "-1"),
            "asgi-apim apikey issue",
            "--expires",
        ),
        (("pki", "init"), "asgi-apim pki init", "required: dir"),
        (("pki", "init", "d", "--bogus"), "asgi-apim pki init", "unrecognized arguments: --bogus"),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    args: tuple[str, ...],
    prog: str,
    says: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith(f"{prog}: error: ") and says in err
    assert err.rstrip().endswith(f"(see {prog} --help)")
    assert list(tmp_path.iterdir()) == []


def test_a_usage_error_is_one_line_from_the_installed_command_too() -> None:
    r = run("apikey", "issue", "--bogus")
    assert r.returncode == 2 and r.stdout == ""
    assert (
        r.stderr == "asgi-apim apikey issue: error: the following arguments are required: --config, --api, --tier"
        " (see asgi-apim apikey issue --help)\n"
    )


def test_debug_is_accepted_before_and_after_the_command(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.toml")
    quiet = run("check", "--config", missing, "x.pem")
    assert quiet.returncode == 1 and quiet.stderr.count("\n") == 1 and "missing.toml not found" in quiet.stderr
    for args in (
        ("--debug", "check", "--config", missing, "x.pem"),
        ("check", "--config", missing, "x.pem", "--debug"),
    ):
        r = run(*args)
        assert r.returncode == 1
        assert "Traceback" in r.stderr and "ConfigError" in r.stderr
    for args in (("--debug", "keygen"), ("keygen", "--debug")):
        r = run(*args)
        assert r.returncode == 0 and len(r.stdout.strip()) == 64, r.stderr
    r = run("pki", "init", str(tmp_path / "pki"), "--debug", "--days", "1")
    assert r.returncode == 0, r.stderr


def test_help_still_prints_usage_and_exits_0() -> None:
    r = run("keygen", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: asgi-apim keygen") and "--debug" in r.stdout


def test_config_errors_exit_1_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text("[mutual_ssl]\nheader_format = 'xml'\n")
    (tmp_path / "x.pem").write_text("")
    r = run("check", "--config", str(tmp_path / "c.toml"), str(tmp_path / "x.pem"))
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.strip().count("\n") == 0 and "mutual_ssl.header_format" in r.stderr


def test_check_refuses_a_tier_that_does_not_parse(tmp_path: Path) -> None:
    cfg, _, _ = write_config(tmp_path)
    cfg.write_text(cfg.read_text() + '[throttling.tiers]\nGold = "5000/fortnight"\n')
    r = run("check", "--config", str(cfg), str(tmp_path / "partner.pem"))
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(
        "asgi-apim: error: throttling.tiers.Gold: '5000/fortnight'"
    ), r.stderr


def write_config(tmp_path: Path) -> tuple[Path, object, object]:
    ca = make_ca("Partner CA")
    other = make_ca("Other CA")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem())
    partner = issue_client(ca, "partner-a")
    (tmp_path / "partner.pem").write_bytes(partner.cert_pem())
    (tmp_path / "stranger.pem").write_bytes(issue_client(other, "stranger").cert_pem())
    (tmp_path / "noeku.pem").write_bytes(issue_client(ca, "no-eku", eku=None).cert_pem())
    (tmp_path / "deployment.toml").write_text(
        '[mutual_ssl]\ntruststore = ["ca.pem"]\n'
        '[[apis]]\nname = "pets"\ncontext = "/pets"\n[apis.security]\nmutual_ssl = "mandatory"\n'
        '[[apis.certificates]]\nalias = "partners"\ncertificate = "ca.pem"\ntier = "Gold"\n'
        '[[apis]]\nname = "orders"\ncontext = "/orders"\n[apis.security]\nmutual_ssl = "mandatory"\n'
        '[[apis.certificates]]\nalias = "only-a"\ncertificate = "partner.pem"\ntier = "Silver"\n'
    )
    return tmp_path / "deployment.toml", ca, other


def test_check_says_which_apis_accept_and_why(tmp_path: Path) -> None:
    cfg, _, _ = write_config(tmp_path)
    r = run("check", "--config", str(cfg), str(tmp_path / "partner.pem"))
    assert r.returncode == 0, r.stderr
    assert "pets: accepted, alias partners, tier Gold" in r.stdout
    assert "orders: accepted, alias only-a, tier Silver (registered exactly" in r.stdout
    r = run("check", "--config", str(cfg), str(tmp_path / "stranger.pem"))
    assert r.returncode == 1
    assert "pets: refused" in r.stdout and "orders: refused" in r.stdout
    r = run("check", "--config", str(cfg), str(tmp_path / "noeku.pem"))
    assert r.returncode == 1 and "clientAuth" in r.stdout


def test_check_request_explains_each_step(tmp_path: Path) -> None:
    cfg, _, _ = write_config(tmp_path)
    r = run("check", "--config", str(cfg), "--request", "GET /pets/1", "--cert", str(tmp_path / "partner.pem"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mutual_ssl: accepted" in r.stdout and "decided by mutual_ssl" in r.stdout
    assert '"tier": "Gold"' in r.stdout
    r = run("check", "--config", str(cfg), "--request", "GET /pets/1")
    assert r.returncode == 1 and "401" in r.stdout and "900902" in r.stdout
    r = run("check", "--config", str(cfg), "--request", "GET /nowhere")
    assert r.returncode == 1 and "404" in r.stdout


def test_malformed_request_or_header_for_check_is_bad_usage(tmp_path: Path) -> None:
    cfg, _, _ = write_config(tmp_path)
    for args, where in (
        (("--request", "BAD"), "--request"),
        (("--request", "GET pets"), "--request"),
        (("--request", "GET /pets/1", "--header", "nocolon"), "--header"),
        (("--request", "GET /pets/1", "--header", ": empty-name"), "--header"),
        ((str(tmp_path / "partner.pem"), "--header", "X-A: b"), "--header"),
        ((), "CERT.pem or --request"),
    ):
        r = run("check", "--config", str(cfg), *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == ""
        assert r.stderr.count("\n") == 1 and where in r.stderr and "Traceback" not in r.stderr


def test_check_usage_is_reported_before_the_configuration_is_read(tmp_path: Path) -> None:
    r = run("check", "--config", str(tmp_path / "missing.toml"), "--request", "BAD")
    assert r.returncode == 2 and "--request" in r.stderr


def test_pki_init_keeps_an_existing_pki_and_replaces_it_only_when_forced(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    assert run("pki", "init", str(d)).returncode == 0
    ca = (d / "ca.key").read_bytes()
    again = run("pki", "init", str(d))
    assert again.returncode == 0 and "kept" in again.stderr
    assert again.stdout.split() == [
        str(d / n) for n in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")
    ]
    assert (d / "ca.key").read_bytes() == ca
    (d / "client.key").unlink()  # a partial PKI is neither kept nor silently replaced
    partial = run("pki", "init", str(d))
    assert partial.returncode == 1 and "--force" in partial.stderr and "Traceback" not in partial.stderr
    assert (d / "ca.key").read_bytes() == ca and not (d / "client.key").exists()
    forced = run("pki", "init", str(d), "--force")
    assert forced.returncode == 0, forced.stderr
    assert (d / "ca.key").read_bytes() != ca and (d / "client.key").exists()


def test_pki_init_refuses_a_non_positive_lifetime(tmp_path: Path) -> None:
    for days in ("-5", "0", "ten"):
        r = run("pki", "init", str(tmp_path / "pki"), "--days", days)
        assert r.returncode == 2, r.stderr
        assert "--days" in r.stderr and "Traceback" not in r.stderr
        assert not (tmp_path / "pki").exists()
    r = run("pki", "init", str(tmp_path / "pki"), "--days", "2")
    assert r.returncode == 0, r.stderr
    server = x509.load_pem_x509_certificate((tmp_path / "pki" / "server.pem").read_bytes())
    assert (server.not_valid_after_utc - server.not_valid_before_utc).days in (1, 2)


def test_check_refuses_what_serve_would_refuse_at_start_up(tmp_path: Path) -> None:
    run("pki", "init", str(tmp_path / "pki"))
    (tmp_path / "d.toml").write_text(
        '[encryption]\nkey = "' + "ab" * 32 + '"\n[api_keys]\nsigning_key = "nowhere.pem"\n'
        '[[apis]]\nname = "pets"\ncontext = "/pets"\n'
        '[apis.security]\nmutual_ssl = "optional"\napplication = ["api_key"]\n'
    )
    out = run("check", "--config", str(tmp_path / "d.toml"), str(tmp_path / "pki" / "client.pem"))
    assert out.returncode == 1 and "api_keys.signing_key" in out.stderr, out.stderr
