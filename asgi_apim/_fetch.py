"""One outbound HTTP call with a total deadline and a size limit, on httpx.

Every call asgi-apim makes to another server (a JWKS, an introspection
endpoint, a token endpoint) goes through `fetch`, so that no server can hold a
request, or memory, longer than configured:

- ``deadline`` covers the whole call: connecting, sending, the response head
  and the whole body. httpx's own timeouts apply per operation (a server that
  drips a byte every few seconds never trips them); this one does not reset.
- The body is read as a stream and counted. A ``Content-Length`` over
  ``max_bytes`` is refused before a byte of the body is read; a body that
  grows past ``max_bytes`` is abandoned at once, and the connection closed
  (httpx does not put a half-read connection back in its pool).
- Compressed bodies are refused: the request asks for ``identity``, and a
  response with another ``Content-Encoding`` is an error. A decompressor
  inflates a whole chunk at once (1 000 times its size for gzip), which a
  byte limit counted after decompression could not bound.

The errors, all `FetchError`::

    FetchError
    ├── FetchTimeout ......... the deadline passed
    ├── FetchTooLarge ........ the body is (or says it is) larger than max_bytes
    └── FetchFailed .......... the transport failed, or the answer cannot be read
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["FetchError", "FetchFailed", "FetchTimeout", "FetchTooLarge", "Fetched", "fetch"]


class FetchError(Exception):
    """An outbound call gave no usable answer. The text may quote what httpx said (a URL
    with its credentials among it): log it through `asgi_apim._redact.redact`."""


class FetchTimeout(FetchError):
    """The call's total deadline passed."""


class FetchTooLarge(FetchError):
    """The body is larger than the call allows."""


class FetchFailed(FetchError):
    """The connection failed or the answer cannot be read."""


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    headers: httpx.Headers
    body: bytes


def _declared_length(headers: httpx.Headers) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() else None


async def fetch(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    deadline: float,
    max_bytes: int,
    **kwargs: Any,
) -> Fetched:
    """``client.stream(method, url, **kwargs)``, read whole within ``deadline`` seconds and
    ``max_bytes`` bytes of body. Raises `FetchError`; never waits longer than ``deadline``."""
    headers = httpx.Headers(kwargs.pop("headers", None))
    headers["accept-encoding"] = "identity"
    try:
        async with asyncio.timeout(deadline):
            async with client.stream(method, url, headers=headers, **kwargs) as response:
                encoding = response.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise FetchFailed(f"compressed answer ({encoding}) refused")
                declared = _declared_length(response.headers)
                if declared is not None and declared > max_bytes:
                    raise FetchTooLarge(f"answer of {declared} bytes is over the limit of {max_bytes}")
                body = bytearray()
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) > max_bytes:
                        raise FetchTooLarge(f"answer is over the limit of {max_bytes} bytes")
                return Fetched(response.status_code, response.headers, bytes(body))
    except TimeoutError:
        raise FetchTimeout(f"no complete answer within {deadline:g} s") from None
    except FetchError:
        raise
    except httpx.TimeoutException:
        raise FetchTimeout(f"no complete answer within {deadline:g} s") from None
    except Exception as exc:  # noqa: BLE001 - httpx's errors, and what it raises for a URL it cannot use
        text = str(exc)
        raise FetchFailed(f"{type(exc).__name__}: {text}" if text else type(exc).__name__) from None
