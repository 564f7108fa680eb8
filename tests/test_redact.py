"""A URI's credentials kept out of what asgi-apim says (`asgi_apim._redact`)."""

from __future__ import annotations

import pytest

from asgi_apim._redact import WITHHELD, query_credentials, redact


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://***@127.0.0.1:6379/0"),
        ("http://gw:pw@h/introspect", "http://***@h/introspect"),
        (
            "http://h/jwks?api_key=A&apikey=B&key=C&pwd=D&sig=E&password=F&access_token=G&page=2",
            "http://h/jwks?api_key=***&apikey=***&key=***&pwd=***&sig=***&password=***&access_token=***&page=2",
        ),
        ("http://h/jwks.json", "http://h/jwks.json"),
        ("redis://:p@ss@[::1:1/0", "redis://***@[::1:1/0"),  # an '@' in the password, and a host that does not parse
    ],
)
def test_the_credentials_of_a_uri_are_replaced(uri: str, shown: str) -> None:
    assert redact(uri) == shown


def test_a_message_quoting_a_password_outside_the_uri_is_withheld() -> None:
    uri = "redis://:hunter2pw@h:1/0"
    assert redact(uri, f"{uri}: refused") == "redis://***@h:1/0: refused"
    assert redact(uri, "auth failed for hunter2pw") == f"redis://***@h:1/0: {WITHHELD}"


def test_query_credentials_keep_names_and_hide_values() -> None:
    pattern = query_credentials(["partner"])
    assert (
        pattern.sub(r"\1***", "/a?partner=P&client_secret=S&q=keyboard&monkey=M")
        == "/a?partner=***&client_secret=***&q=keyboard&monkey=***"
    )
