import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asgi_apim.certs.trust import TrustedProxies, client_ip, forwarded_address, peer_host


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


def _via_proxy(*lines: bytes) -> dict:
    return {"client": ("127.0.0.1", 1), "headers": [(b"x-forwarded-for", line) for line in lines]}


def test_every_forwarded_for_line_is_read_in_order() -> None:
    gate = TrustedProxies(["127.0.0.1/32"])
    # the client sent its own line; the proxy added a second one rather than appending
    assert client_ip(_via_proxy(b"7.7.7.7", b"1.2.3.4"), gate) == "1.2.3.4"
    assert client_ip(_via_proxy(b"7.7.7.7", b"1.2.3.4, 127.0.0.1"), gate) == "1.2.3.4"
    assert client_ip(_via_proxy(b"1.2.3.4", b"127.0.0.1"), gate) == "1.2.3.4"


@pytest.mark.parametrize(
    "hop, address",
    [
        ("1.2.3.4", "1.2.3.4"),
        (" 1.2.3.4 ", "1.2.3.4"),
        ("1.2.3.4:8080", "1.2.3.4"),
        ("::ffff:1.2.3.4", "1.2.3.4"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("garbage", None),
        ("unknown", None),
        ("1.2.3.4:80:90", None),
        ("[2001:db8::1", None),
        ("", None),
    ],
)
def test_a_forwarded_hop_is_counted_by_its_address(hop: str, address: str | None) -> None:
    assert forwarded_address(hop) == address
    assert forwarded_address(hop) == address  # remembered: the same answer


def test_a_hop_that_is_no_address_ends_at_the_hop_that_reported_it() -> None:
    gate = TrustedProxies(["127.0.0.1/32", "10.0.0.0/8"])
    assert client_ip(_via_proxy(b"garbage"), gate) == "127.0.0.1"  # the peer reported it
    assert client_ip(_via_proxy(b"1.2.3.4, garbage, 10.0.0.5"), gate) == "10.0.0.5"
    assert client_ip(_via_proxy(b"garbage, 1.2.3.4:80"), gate) == "1.2.3.4"
    assert client_ip(_via_proxy(b"10.0.0.7, 127.0.0.1"), gate) == "10.0.0.7"  # all trusted: the first of them
    assert client_ip(_via_proxy(b", ,"), gate) == "127.0.0.1"


_hops = st.one_of(
    st.ip_addresses().map(str),
    st.sampled_from(["127.0.0.1", "10.1.2.3", "::1", "garbage", "", " ", "1.2.3.4:80", "[::1]:80", "unknown"]),
    st.text(alphabet="0123456789abcdef.:[]% ", max_size=20),
)


@given(st.lists(st.lists(_hops, max_size=4), max_size=4), st.sampled_from(["127.0.0.1", "10.9.9.9", "203.0.113.1"]))
def test_the_counted_ip_is_the_peer_or_an_address_and_lines_read_as_one_list(lines: list[list[str]], peer: str) -> None:
    gate = TrustedProxies(["127.0.0.1/32", "10.0.0.0/8", "::1/128"])
    headers = [(b"x-forwarded-for", ", ".join(line).encode()) for line in lines]
    ip = client_ip({"client": (peer, 1), "headers": headers}, gate)
    if peer == "203.0.113.1":
        assert ip == peer  # an untrusted peer's forwarded-for is never read
    else:
        assert str(ipaddress.ip_address(ip)) == ip  # canonical address text, never text of the client's choosing
    joined = [(b"x-forwarded-for", ", ".join(", ".join(line) for line in lines).encode())] if lines else []
    assert client_ip({"client": (peer, 1), "headers": joined}, gate) == ip
