"""A URI's credentials kept out of what asgi-apim says: errors and logs name a storage,
an introspection endpoint or a JWKS by its URI with the user information and any
password-like query parameter replaced by ``***``."""

from __future__ import annotations

import re
from collections.abc import Sequence

# a query parameter whose name holds one of these words carries a credential
_CREDENTIAL_NAME = r"[^=&;#?]*(?:pass|pwd|secret|token|auth|cred|key|sig)[^=&;#?]*"
_SECRET_PARAM = re.compile(rf"(?i)([?&;]{_CREDENTIAL_NAME}=)([^&;#]*)")


WITHHELD = "(the details are withheld: they quote the URI's credentials)"


def redact(uri: str, text: str | None = None) -> str:
    """``text`` (default: the URI itself) without the URI's credentials: the value of any query
    parameter whose name speaks of a password, secret, token, key, signature or credential, then the user
    information (everything between ``://`` and the last ``@``, whether the URI parses or not).
    A message that still holds a password once the URI in it is redacted (an error quoting a
    part of it) is withheld, all but the redacted URI."""
    passwords = [m.group(2) for m in _SECRET_PARAM.finditer(uri)]
    safe = _SECRET_PARAM.sub(r"\1***", uri)
    scheme, sep, rest = safe.partition("://")
    if sep and "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        passwords.append(userinfo.partition(":")[2] or userinfo)
        safe = f"{scheme}://***@{host}"
    if text is None:
        return safe
    text = text.replace(uri, safe)
    if any(p and p in text for p in passwords):
        return f"{safe}: {WITHHELD}"
    return text


def query_credentials(names: Sequence[str] = ()) -> re.Pattern[str]:
    """A pattern of the query parameters that carry credentials: ``names`` (an API key's
    parameter, say) and any whose name speaks of a password, secret, token, key or credential;
    ``pattern.sub(r"\\1***", text)`` keeps each name and hides its value."""
    listed = [re.escape(n) for n in names if n]
    if not listed:
        return _SECRET_PARAM
    return re.compile(rf"(?i)([?&;](?:{'|'.join(listed)}|{_CREDENTIAL_NAME})=)([^&;#]*)")
