"""An issuer's signing keys: a JWKS file read once, or a URL fetched with httpx.

Each JWK becomes one prepared key per allowed algorithm it can serve: an RSA
key serves RS*/PS*, an EC key the ES* of its curve, an OKP key EdDSA, and a
JWK that names an ``alg`` serves only that one. ``oct`` keys are never used
(HMAC needs a configured ``shared_secret``), nor keys whose ``use`` is not
``sig``. A key cannot be looked up under an algorithm it was not made for, so
key confusion (an RSA public key as an HMAC secret) has nowhere to happen.

A URL source is fetched asynchronously, refreshed in the background, refetched
at most once per ``min_refetch_interval`` when a token names an unknown
``kid``, and keeps its last good keys while the issuer is unreachable. Every
fetch has a total deadline (``timeout``) and a 1 MiB limit (`asgi_apim._fetch`);
one refetch runs at a time, shared by the requests that wait for it, each
waiting at most ``wait`` seconds before it is answered with the keys known by
then, while the refetch goes on.
`generation` changes when a key that was known disappears or changes, so
caches of tokens verified with it can tell they are stale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import httpx
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms
from jwt.exceptions import InvalidKeyError

from asgi_apim._fetch import fetch
from asgi_apim._redact import redact
from asgi_apim.errors import ConfigError, concealed

logger = logging.getLogger("asgi_apim.auth.jwks")

MAX_JWKS_BYTES = 1024 * 1024
ALGORITHMS = get_default_algorithms()
_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "ES521": "P-521", "ES256K": "secp256k1"}

Keys = Mapping[str | None, Mapping[str, Any]]  # kid -> alg -> prepared key


class JWKSError(ValueError):
    """A JWKS document that cannot be used."""


def _serves(jwk: Mapping[str, Any], alg: str) -> bool:
    kty = jwk.get("kty")
    if jwk.get("alg") not in (None, alg):
        return False
    if alg.startswith(("RS", "PS")):
        return kty == "RSA"
    if alg.startswith("ES"):
        return kty == "EC" and jwk.get("crv") == _CURVES.get(alg)
    if alg == "EdDSA":
        return kty == "OKP" and jwk.get("crv") in ("Ed25519", "Ed448")
    return False


def _key_object(jwk: Mapping[str, Any]) -> Any:
    kty = jwk.get("kty")
    loader: Any = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}.get(kty)  # type: ignore[arg-type]  # kty is a str, checked just before
    if loader is None:
        raise InvalidKeyError(f"unsupported kty {kty!r}")
    key = loader.from_jwk(dict(jwk))
    return key.public_key() if hasattr(key, "public_key") else key


def parse_jwks(
    document: Any, algorithms: Collection[str]
) -> tuple[dict[str | None, dict[str, Any]], dict[str | None, str]]:
    """Prepared keys by ``kid`` and ``alg``, and a fingerprint per ``kid`` (to detect changes)."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JWKSError('not a JWKS: expected an object with a "keys" array')
    asymmetric = [a for a in algorithms if a in ALGORITHMS and not a.startswith("HS") and a.lower() != "none"]
    keys: dict[str | None, dict[str, Any]] = {}
    prints: dict[str | None, str] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        serves = [a for a in asymmetric if _serves(jwk, a)]
        if not serves:
            continue
        try:
            key = _key_object(jwk)
            prepared = {a: ALGORITHMS[a].prepare_key(key) for a in serves}
        except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
            logger.warning("skipping JWK kid=%r: %s", kid, exc)
            continue
        keys.setdefault(kid, {}).update(prepared)
        public = {k: v for k, v in jwk.items() if k in ("kty", "crv", "n", "e", "x", "y", "alg")}
        prints[kid] = prints.get(kid, "") + json.dumps(public, sort_keys=True)
    return keys, prints


# key manager name -> [key sets installed from a URL, fetches that failed] since start-up (metrics)
REFRESHES: dict[str, list[int]] = {}


class JWKSource:
    """The current keys of one issuer. Build once; `get` is the per-request call."""

    def __init__(
        self,
        algorithms: Collection[str],
        *,
        url: str | None = None,
        file: Path | None = None,
        refresh_interval: float = 300.0,
        min_refetch_interval: float = 30.0,
        timeout: float = 5.0,
        wait: float = 5.0,
        name: str = "",
        setting: str | None = None,
    ) -> None:
        if (url is None) == (file is None):
            raise ValueError("exactly one of url or file")
        self.algorithms = tuple(algorithms)
        self.url = url
        self._shown = concealed(redact(url)) if url else ""  # the URL as logs name it: no credentials
        self.name = name
        self.refresh_interval = refresh_interval
        self.min_refetch_interval = min_refetch_interval
        self.timeout = timeout  # the total deadline of one fetch
        self.wait = wait  # how long a request for an unknown kid waits for the refetch
        self.generation = 0
        self._keys: dict[str | None, dict[str, Any]] = {}
        self._prints: dict[str | None, str] = {}
        self._last_fetch = float("-inf")
        self._refetch: asyncio.Task[bool] | None = None
        self._client: httpx.AsyncClient | None = self._new_client() if url else None
        self._task: asyncio.Task[None] | None = None
        if file is not None:
            try:
                document = json.loads(Path(file).read_bytes())
                self._install(*parse_jwks(document, self.algorithms))
            except (OSError, ValueError) as exc:
                where = setting or f"key_managers[{name}].jwks_file"  # the key that named the file
                raise ConfigError(where, f"cannot load {file}: {exc}") from None

    def get(self, kid: str | None, alg: str) -> list[Any]:
        """Keys that may verify a token with this ``kid`` (any, when None) and ``alg``."""
        if kid is None:
            return [k[alg] for k in self._keys.values() if alg in k]
        entry = self._keys.get(kid)
        if entry is None:
            return []
        key = entry.get(alg)
        return [] if key is None else [key]

    def knows(self, kid: str | None) -> bool:
        if kid is None:
            return bool(self._keys)
        return kid in self._keys

    async def lookup(self, kid: str | None, alg: str) -> list[Any]:
        """Like `get`, refetching (rate-limited) when ``kid`` is unknown to a URL source.

        The caller waits for the refetch at most `wait` seconds, then has its answer from the
        keys known by then; the refetch goes on in the background. Callers of known keys never
        wait: no lock is held while the issuer is asked."""
        found = self.get(kid, alg)
        if found or self.url is None or self.knows(kid):
            return found
        task = self._current_refetch()
        if task is None and time.monotonic() - self._last_fetch >= self.min_refetch_interval:
            task = self._start_refetch()
        if task is not None and self.wait > 0:
            await asyncio.wait((task,), timeout=self.wait)  # never cancels the refetch it waits for
        return self.get(kid, alg)

    def _current_refetch(self) -> asyncio.Task[bool] | None:
        task = self._refetch
        if task is not None and task.get_loop() is not asyncio.get_running_loop():
            self._refetch = task = None  # left by an event loop that has ended (a test client's, say)
        return task

    def _start_refetch(self) -> asyncio.Task[bool]:
        """The one refetch in flight, shared by every caller that waits for it."""
        task = self._current_refetch()
        if task is None:
            task = asyncio.get_running_loop().create_task(self.refresh(), name=f"asgi-apim JWKS refetch {self.name}")
            task.add_done_callback(self._refetched)
            self._refetch = task
        return task

    def _refetched(self, task: asyncio.Task[bool]) -> None:
        if self._refetch is task:
            self._refetch = None
        if not task.cancelled() and task.exception() is not None:  # refresh catches what it can; log the rest
            logger.error("JWKS refetch for key manager %r failed", self.name, exc_info=task.exception())

    async def refresh(self) -> bool:
        """Fetch the URL once, within `timeout` seconds and `MAX_JWKS_BYTES`; on any failure keep
        the last good keys. True when keys were installed."""
        if self.url is None:
            return False
        self._last_fetch = time.monotonic()
        if self._client is None:
            self._client = self._new_client()
        try:
            answer = await fetch(
                self._client,
                "GET",
                self.url,
                deadline=self.timeout,
                max_bytes=MAX_JWKS_BYTES,
                headers={"accept": "application/jwk-set+json, application/json"},
            )
            if answer.status != 200:
                raise JWKSError(f"HTTP {answer.status}")
            keys, prints = parse_jwks(json.loads(answer.body), self.algorithms)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the last good keys (FetchError, a bad answer, JSON nested too deep)
            REFRESHES.setdefault(self.name, [0, 0])[1] += 1
            logger.warning(
                "JWKS fetch for key manager %r from %s failed, keeping %d key(s): %s",
                self.name,
                self._shown,
                len(self._keys),
                concealed(redact(self.url, str(exc))),
            )
            return False
        self._install(keys, prints)
        REFRESHES.setdefault(self.name, [0, 0])[0] += 1
        return True

    def _new_client(self) -> httpx.AsyncClient:
        # built at start-up: loading the CA bundle is too slow for the event loop
        return httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)

    def _install(self, keys: dict[str | None, dict[str, Any]], prints: dict[str | None, str]) -> None:
        if any(prints.get(kid) != fp for kid, fp in self._prints.items()):
            self.generation += 1
        self._keys, self._prints = keys, prints

    async def start(self) -> None:
        if self.url is None or self._task is not None:
            return
        await asyncio.shield(self._start_refetch())
        self._task = asyncio.get_running_loop().create_task(self._refresher(), name=f"asgi-apim JWKS {self.name}")

    async def _refresher(self) -> None:
        while True:
            delay = (
                self.refresh_interval if self._keys else min(self.refresh_interval, max(1.0, self.min_refetch_interval))
            )
            await asyncio.sleep(delay)
            try:
                await asyncio.shield(self._start_refetch())  # shared with requests waiting for new keys
            except Exception:  # noqa: BLE001 - the refresher must outlive any one bad answer
                logger.exception("JWKS refresh for key manager %r failed", self.name)

    async def aclose(self) -> None:
        for task in (self._refetch, self._task):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._refetch = self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
