from pathlib import Path

import pytest

from asgi_apim.config import DEFAULT_TIERS, load_config, parse_config
from asgi_apim.errors import ConfigError

FULL = """
public_paths = ["/health", "/docs", "/openapi.json"]

[mutual_ssl]
certificate_header = "X-WSO2-CLIENT-CERTIFICATE"
header_format = "auto"
trusted_proxies = ["127.0.0.1/32", "::1/128"]
enable_client_validation = false
enable_certificate_chain_validation = true
truststore = ["certs/ca.pem"]
crl = []
reload_interval = 10

[throttling]
storage = "memory://"
strategy = "moving-window"
fail_open = true

[throttling.tiers]
Unlimited = "unlimited"
Gold = "5000/minute"
Platinum = "10/second;1000/hour"

[[key_managers]]
name = "idp"
issuer = "https://idp.example"
audience = "pets"
jwks_url = "https://idp.example/jwks.json"
algorithms = ["RS256", "ES256"]

[api_keys]
header = "apikey"
query_param = "apikey"
signing_key = "keys/apikey-signing.pem"

[basic_auth]
users_file = "users.htpasswd"

[registry]
url = "sqlite:///registry.db"

[[apis]]
name = "pets"
context = "/pets"
backend = "http://127.0.0.1:9000"
tier = "Unlimited"

[apis.security]
mutual_ssl = "mandatory"
application = ["oauth2", "api_key", "basic"]
application_mandatory = false

[[apis.certificates]]
alias = "partner-a"
certificate = "certs/partner-a.pem"
tier = "Gold"

[[apis.resources]]
path = "/pets/{id}"
methods = ["DELETE"]
scopes = ["pets:write"]
tier = "Bronze"

[apis.backend_security]
type = "basic"
username = "svc"
password = "plain"

[[ssl_profiles]]
servers = ["127.0.0.1:9443"]
ca = "certs/backend-ca.pem"
certificate = "certs/gateway-client.pem"
key = "certs/gateway-client.key"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "deployment.toml"
    p.write_text(text)
    return p


def test_full_contract_example_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    assert cfg.public_paths == ("/health", "/docs", "/openapi.json")
    assert cfg.mutual_ssl.certificate_header == "x-wso2-client-certificate"
    assert cfg.mutual_ssl.truststore == (tmp_path / "certs/ca.pem",)
    assert cfg.throttling.tiers["Platinum"] == "10/second;1000/hour"
    assert cfg.throttling.tiers["Bronze"] == DEFAULT_TIERS["Bronze"]
    api = cfg.api("pets")
    assert api.security.mutual_ssl == "mandatory" and api.security.application == ("oauth2", "api_key", "basic")
    assert api.certificates[0].certificate == tmp_path / "certs/partner-a.pem"
    assert api.certificates[0].api == "pets"
    assert api.resources[0].methods == ("DELETE",)
    assert cfg.key_managers[0].audience == ("pets",)
    assert cfg.registry.url == f"sqlite:///{tmp_path / 'registry.db'}"
    assert cfg.ssl_profiles[0].key == tmp_path / "certs/gateway-client.key"


def test_objects_are_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL))
    with pytest.raises(AttributeError):
        cfg.apis = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    "text, key",
    [
        ("bogus = 1", "bogus"),
        ("[mutual_ssl]\nheader_format = 'xml'", "mutual_ssl.header_format"),
        ("[mutual_ssl]\ntrusted_proxies = ['not-an-ip']", "mutual_ssl.trusted_proxies"),
        ("[mutual_ssl]\nreload_interval = -1", "mutual_ssl.reload_interval"),
        ("[mutual_ssl]\nenable_client_validation = 'yes'", "mutual_ssl.enable_client_validation"),
        ("[mutual_ssl]\ntypo = 1", "mutual_ssl.typo"),
        ("[[apis]]\nname='a'\ncontext='a'", "apis[0].context"),
        ("[[apis]]\nname='a'\ncontext='/a'\ntier='Diamond'", "apis[a].tier"),
        ("[[apis]]\nname='a'\ncontext='/a'\n[apis.security]\nmutual_ssl='sometimes'", "apis[0].security.mutual_ssl"),
        (
            "[[apis]]\nname='a'\ncontext='/a'\n[apis.security]\nmutual_ssl='optional'\napplication=[]",
            "apis[0].security.application",
        ),
        (
            "[[apis]]\nname='a'\ncontext='/a'\n[[apis.resources]]\npath='/a'\nmethods=['FETCH']",
            "apis[0].resources[0].methods",
        ),
        ("[[key_managers]]\nname='k'\nissuer='i'\njwks_file='j'\nalgorithms=['none']", "key_managers[0].algorithms"),
        ("[[key_managers]]\nname='k'\nissuer='i'\njwks_file='j'\nalgorithms=['HS256']", "key_managers[0].algorithms"),
        ("[throttling]\nstrategy='leaky'", "throttling.strategy"),
        ("[api_keys]\nheader='api key'", "api_keys.header"),
        ("[[apis]]\nname='a'\ncontext='/a'\n[[apis.resources]]\npath='/a/{{id}}'", "apis[0].resources[0].path"),
        ("[[apis]]\nname='a'\ncontext='/a'\n[[apis.resources]]\npath='/a/{id:bogus}'", "apis[0].resources[0].path"),
        ("[[apis]]\nname='a'\ncontext='/a'\n[[apis.resources]]\npath='/a/{id'", "apis[0].resources[0].path"),
        ("x = '$env{ASGI_APIM_SURELY_UNSET}'", "x"),
        # values that would be misread, or fail only later
        ("[mutual_ssl]\ntruststore = ['']", "mutual_ssl.truststore[0]"),  # it named the configuration's own directory
        ("[mutual_ssl]\ncrl = ['ok.pem', ' ']", "mutual_ssl.crl[1]"),
        ('[mutual_ssl]\ntruststore = ["certs/ca\\u0000.pem"]', "mutual_ssl.truststore[0]"),  # a TOML escape: a NUL
        ("[api_keys]\nsigning_key = ''", "api_keys.signing_key"),
        ("[[apis]]\nname='a'\ncontext='/a'\n[[apis.resources]]\npath='/a/{id}/{id}'", "apis[0].resources[0].path"),
        (
            "[[key_managers]]\nname='k'\nissuer='i'\njwks_file='j'\njwks_url='https://i/jwks.json'\n",
            "key_managers[0].jwks_file",
        ),
        ("[[key_managers]]\nname='k'\nissuer='i'\njwks_file='j'\nalgorithms = []\n", "key_managers[0].algorithms"),
        ("[[key_managers]]\nname='k'\nissuer='i'\njwks_file='j'\nleeway = 1e300\n", "key_managers[0].leeway"),
        (
            "[[key_managers]]\nname='k'\nissuer='i'\njwks_file='j'\n[[key_managers]]\nname='k'\nissuer='other'\njwks_file='j'\n",
            "key_managers",
        ),
        (
            "[[key_managers]]\nname='k'\nissuer='i'\nshared_secret='short'\nalgorithms=['HS256']\n",
            "key_managers[0].shared_secret",
        ),
        (
            "[[key_managers]]\nname='k'\nissuer='i'\nshared_secret='" + "x" * 32 + "'\nalgorithms=['HS512']\n",
            "key_managers[0].shared_secret",
        ),
        ("[throttling.tiers]\nGold = '10/0 minute'", "throttling.tiers.Gold"),
        ("[throttling.tiers]\nGold = '9223372036854775807/second'", "throttling.tiers.Gold"),
        ("[[apis]]\nname='a'\ncontext='/a'\n[[apis.resources]]\npath='/a/x'\ntier=''", "apis[0].resources[0].tier"),
        ("[[apis]]\nname='a'\ncontext='/a'\ntruststore_tier=''", "apis[0].truststore_tier"),
        (
            "[[apis]]\nname='a'\ncontext='/a'\n[[apis.resources]]\npath='/a/x'\npublic=true\n[apis.resources.security]\nmutual_ssl='mandatory'",
            "apis[0].resources[0].security",
        ),
        ("[[apis]]\nname='a'\ncontext='/a/{id}'", "apis[0].context"),
        ("[[apis]]\nname='a'\ncontext='/a b'", "apis[0].context"),
        ("[[apis]]\nname='a'\ncontext='/a/../b'", "apis[0].context"),
        ("public_paths = ['/health?x']", "public_paths"),
        ("public_paths = ['/h/./x']", "public_paths"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert info.value.key == key, str(info.value)
    assert str(info.value).startswith(key)


def test_env_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APIM_HDR", "X-Client-Cert")
    cfg = load_config(write(tmp_path, "[mutual_ssl]\ncertificate_header = '$env{APIM_HDR}'"))
    assert cfg.mutual_ssl.certificate_header == "x-client-cert"


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[[["))


def test_security_defaults() -> None:
    cfg = parse_config(
        {"apis": [{"name": "a", "context": "/a", "security": {"mutual_ssl": "mandatory"}}]}, base=Path("/")
    )
    sec = cfg.api("a").security
    assert sec.application == () and sec.application_mandatory is False
    cfg = parse_config({"apis": [{"name": "a", "context": "/a"}]}, base=Path("/"))
    assert cfg.api("a").security.application == ("oauth2",)
    assert cfg.api("a").security.application_mandatory is True


def test_secret_reprs_are_redacted(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL.replace('password = "plain"', 'password = "hunter2-secret"')))
    assert "hunter2-secret" not in repr(cfg)
    assert cfg.api("pets").backend_security.password == "hunter2-secret"


def test_duplicate_names_and_contexts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unique"):
        load_config(write(tmp_path, "[[apis]]\nname='a'\ncontext='/a'\n[[apis]]\nname='a'\ncontext='/b'"))
    with pytest.raises(ConfigError, match="share a context"):
        load_config(write(tmp_path, "[[apis]]\nname='a'\ncontext='/a'\n[[apis]]\nname='b'\ncontext='/a/'"))


KM = "[[key_managers]]\nname='k'\nissuer='i'\njwks_file='j'\n"


@pytest.mark.parametrize(
    "text, key",
    [
        ("[mutual_ssl]\nreload_interval = {v}", "mutual_ssl.reload_interval"),
        (KM + "leeway = {v}", "key_managers[0].leeway"),
        (KM + "jwks_refresh_interval = {v}", "key_managers[0].jwks_refresh_interval"),
        (KM + "jwks_min_refetch_interval = {v}", "key_managers[0].jwks_min_refetch_interval"),
    ],
)
@pytest.mark.parametrize("value", ["nan", "+nan", "-nan", "inf", "+inf"])
def test_non_finite_numbers_are_refused(tmp_path: Path, text: str, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match="finite") as info:
        load_config(write(tmp_path, text.format(v=value)))
    assert info.value.key == key, str(info.value)


def test_finite_numbers_still_load(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, "[mutual_ssl]\nreload_interval = 2.5\n" + KM + "leeway = 0\njwks_refresh_interval = 1e3")
    )
    assert cfg.mutual_ssl.reload_interval == 2.5
    assert cfg.key_managers[0].leeway == 0.0 and cfg.key_managers[0].jwks_refresh_interval == 1000.0
    with pytest.raises(ConfigError, match=r"^mutual_ssl.reload_interval: must be a finite number"):
        load_config(write(tmp_path, "[mutual_ssl]\nreload_interval = -inf"))
    with pytest.raises(ConfigError, match=r"^mutual_ssl.reload_interval: must be a number >= 0.1 \(got 0.01\)"):
        load_config(write(tmp_path, "[mutual_ssl]\nreload_interval = 0.01"))


@pytest.mark.parametrize("limit", ["5000/fortnight", "lots", "5000 per", "  "])
def test_tier_limits_are_parsed_when_loading(tmp_path: Path, limit: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"[throttling.tiers]\nGold = {limit!r}\n"))
    assert info.value.key == "throttling.tiers.Gold", str(info.value)


def test_redefined_and_new_tiers_that_parse_load(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[throttling.tiers]\nGold = '10/second;1000/hour'\nFree = 'Unlimited'\n"))
    assert cfg.throttling.tiers["Gold"] == "10/second;1000/hour" and cfg.throttling.tiers["Free"] == "Unlimited"


def test_the_throttling_subscriber_claim_is_every_key_managers_default(tmp_path: Path) -> None:
    text = (
        "[throttling]\nsubscriber_claim = ['client_id', 'sub']\n"
        + KM
        + "[[key_managers]]\nname='own'\nissuer='j'\njwks_file='j'\nsubscriber_claim=['appid']\n"
    )
    cfg = load_config(write(tmp_path, text))
    assert cfg.throttling.subscriber_claim == ("client_id", "sub")
    assert [km.subscriber_claim for km in cfg.key_managers] == [("client_id", "sub"), ("appid",)]
    assert load_config(write(tmp_path, KM)).key_managers[0].subscriber_claim == ("azp", "sub")


@pytest.mark.parametrize("public", ["/", "/pets", "/pets/", "/api"])
def test_a_public_path_covering_an_api_is_refused(tmp_path: Path, public: str) -> None:
    text = (
        f"public_paths = ['{public}']\n[[apis]]\nname='pets'\ncontext='/api/pets'\n"
        "[[apis]]\nname='p2'\ncontext='/pets'\n"
    )
    with pytest.raises(ConfigError, match="covers API") as info:
        load_config(write(tmp_path, text))
    assert info.value.key == "public_paths"


def test_a_public_path_beside_or_below_a_context_loads(tmp_path: Path) -> None:
    text = "public_paths = ['/pets/docs', '/petshop', '/health']\n[[apis]]\nname='pets'\ncontext='/pets'\n"
    assert load_config(write(tmp_path, text)).public_paths == ("/pets/docs", "/petshop", "/health")


def test_two_key_managers_validating_one_issuer_s_jwts_are_refused(tmp_path: Path) -> None:
    text = KM + "[[key_managers]]\nname='k2'\nissuer='i'\njwks_url='https://i/jwks.json'\n"
    with pytest.raises(ConfigError, match="already the issuer of key manager 'k'") as info:
        load_config(write(tmp_path, text))
    assert info.value.key == "key_managers[k2].issuer"
    # opaque tokens of the same issuer, introspected by a key manager of their own: nothing is shadowed
    text = (
        KM
        + "[[key_managers]]\nname='k2'\nissuer='i'\nintrospection_url='https://i/introspect'\nclient_id='c'\nclient_secret='s'\n"
    )
    assert [km.name for km in load_config(write(tmp_path, text)).key_managers] == ["k", "k2"]


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/jwks", "https://h:port/jwks"])
def test_a_key_manager_url_with_an_impossible_port_is_refused(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError, match="port") as info:
        load_config(write(tmp_path, f"[[key_managers]]\nname='k'\nissuer='i'\njwks_url='{url}'\n"))
    assert info.value.key == "key_managers[0].jwks_url"
