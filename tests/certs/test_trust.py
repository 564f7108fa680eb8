import pytest

from asgi_apim.certs.trust import TrustedProxies, client_ip, peer_host


@pytest.mark.parametrize(
    "host, trusted",
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("0:0:0:0:0:0:0:1", True),
        ("::ffff:127.0.0.1", True),
        ("10.1.2.3", True),
        ("10.255.255.255", True),
        ("11.0.0.1", False),
        ("127.0.0.2", False),
        ("fe80::1%eth0", False),
        ("", False),
        ("localhost", False),
        ("127.0.0.1 ", False),
        ("not an address", False),
    ],
)
def test_membership(host: str, trusted: bool) -> None:
    gate = TrustedProxies(["127.0.0.1/32", "::1/128", "10.0.0.0/8"])
    assert (host in gate) is trusted
    assert (host in gate) is trusted  # the memo gives the same answer


def test_non_strings_are_never_trusted() -> None:
    gate = TrustedProxies(["0.0.0.0/0"])
    assert None not in gate
    assert 2130706433 not in gate
    assert "8.8.8.8" in gate


def test_peer_prefers_the_socket_record_over_rewritten_client() -> None:
    scope = {"asgi_apim.peer": ("10.0.0.9", 4000), "client": ("1.2.3.4", 1)}
    assert peer_host(scope) == "10.0.0.9"
    assert peer_host({"client": ("1.2.3.4", 1)}) == "1.2.3.4"
    assert peer_host({}) is None


def test_client_ip_reads_xff_only_from_trusted_peers() -> None:
    gate = TrustedProxies(["127.0.0.1/32"])
    xff = [(b"x-forwarded-for", b"6.6.6.6, 9.9.9.9")]
    assert client_ip({"client": ("127.0.0.1", 1), "headers": xff}, gate) == "9.9.9.9"
    assert client_ip({"client": ("5.5.5.5", 1), "headers": xff}, gate) == "5.5.5.5"
    assert client_ip({"client": ("127.0.0.1", 1), "headers": []}, gate) == "127.0.0.1"
