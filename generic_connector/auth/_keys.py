"""Public keys fetched over HTTP(S): a JWK set, Google-style x509 certificates, or OpenID.

Keys are fetched on first use, kept for ``max_age`` seconds of the caller's clock (the ``now``
each check is given, so tests move time instead of sleeping), and fetched again early when a
token names a key id the set does not hold — at most once per ``refresh_interval``, so that
made-up key ids cannot turn every request into a fetch. A key server that is down, slow or
answers garbage raises AuthUnavailable; after a failure, requests fail fast for
``retry_interval`` seconds instead of each waiting for the timeout again. Redirects are not
followed (a 3xx is a failure): the configured URL, and an OpenID ``jwks_uri``, are where the
keys must be, not where another server says they are. Answers are read up to ``max_document``
bytes, never whole.
"""

import asyncio
import json
import re
from typing import Any, Dict, List, NamedTuple, Optional, Type

import aiohttp
from cryptography import x509
from jwt.algorithms import Algorithm, ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import PyJWTError

from generic_connector.auth import AuthFailed, AuthUnavailable

# https, or plain http to this machine only (a test server, a local sidecar): keys fetched
# over plain http from elsewhere could be replaced by anyone on the way.
KEY_URL_PATTERN = (
    r"^(?:https://[^/?#\s]+|http://(?:localhost|127(?:\.[0-9]{1,3}){3}|\[::1\])(?::[0-9]{1,5})?)"
    r"(?:[/?#]\S*)?$"
)
_KEY_URL = re.compile(KEY_URL_PATTERN)

_JWK_TYPES: Dict[str, Type[Algorithm]] = {
    "RSA": RSAAlgorithm,
    "EC": ECAlgorithm,
    "OKP": OKPAlgorithm,
}


class PublicKey(NamedTuple):
    """A verification key and the algorithm its JWK is bound to, if it names one."""

    key: Any
    algorithm: Optional[str] = None


class KeySet:
    """The keys at ``url`` (``kind``: ``jwks``, ``x509`` or ``openid``), cached."""

    refresh_interval = 60.0
    retry_interval = 10.0
    max_document = 1_048_576

    def __init__(self, url: str, kind: str, max_age: float = 3600, timeout: float = 5) -> None:
        self.url = url
        self.kind = kind
        self.max_age = max_age
        self.timeout = timeout
        self._keys: Optional[Dict[Optional[str], PublicKey]] = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._error: Optional[str] = None
        self._generation = 0
        self._lock: Optional[asyncio.Lock] = None
        self._lock_loop: Optional[asyncio.AbstractEventLoop] = None

    async def get(self, kid: Optional[str], now: float) -> PublicKey:
        """The key a token names; AuthFailed if the set has no such key, AuthUnavailable if the
        set cannot be fetched."""
        if self._keys is not None and now - self._fetched_at < self.max_age:
            found = self._find(kid)
            if found is not None:
                return found
            if now - self._attempted_at < self.refresh_interval:
                raise AuthFailed(self._unknown(kid))
        elif self._error is not None and now - self._attempted_at < self.retry_interval:
            raise AuthUnavailable(self._error)
        await self._refresh(now)
        found = self._find(kid)
        if found is None:
            raise AuthFailed(self._unknown(kid))
        return found

    def _find(self, kid: Optional[str]) -> Optional[PublicKey]:
        keys = self._keys or {}
        if kid is None and len(keys) == 1:  # a token need not name the only key
            return next(iter(keys.values()))
        return keys.get(kid) if kid is not None else None

    def _unknown(self, kid: Optional[str]) -> str:
        if kid is None:
            return f"the token names no key id (kid) and {self.url} holds {len(self._keys or {})}"
        return f"unknown key id {kid!r} (not among the keys of {self.url})"

    async def _refresh(self, now: float) -> None:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        generation = self._generation
        async with self._lock:
            if self._generation != generation:  # refreshed while this request waited
                if self._error is not None:
                    raise AuthUnavailable(self._error)
                return
            self._attempted_at = now
            try:
                keys = await self._fetch()
            except AuthUnavailable as error:
                self._error = str(error)
                raise
            else:
                self._keys, self._fetched_at, self._error = keys, now, None
            finally:
                # Counted once the fetch is over, so that requests waiting for it use its result.
                self._generation += 1

    async def _fetch(self) -> Dict[Optional[str], PublicKey]:
        if self.kind == "openid":
            metadata = await self._get_json(self.url)
            jwks_uri = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
            if not isinstance(jwks_uri, str) or not _KEY_URL.match(jwks_uri):
                raise AuthUnavailable(f"{self.url} names no https jwks_uri")
            return _parse_jwks(await self._get_json(jwks_uri), jwks_uri)
        document = await self._get_json(self.url)
        if self.kind == "x509":
            return _parse_x509(document, self.url)
        return _parse_jwks(document, self.url)

    async def _get_json(self, url: str) -> Any:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(
                url, headers={"Accept": "application/json"}, allow_redirects=False
            ) as response:
                if 300 <= response.status < 400:  # where to is not followed, nor logged
                    raise AuthUnavailable(
                        f"key server {url} answered HTTP {response.status} (a redirect, not "
                        "followed: configure the URL it names)"
                    )
                if response.status != 200:
                    raise AuthUnavailable(f"key server {url} answered HTTP {response.status}")
                document = await self._read(response, url)
        except asyncio.TimeoutError:
            raise AuthUnavailable(
                f"key server {url} did not answer within {self.timeout:g} s"
            ) from None
        except aiohttp.ClientError as error:
            raise AuthUnavailable(f"key server {url} is unreachable: {error}") from None
        try:
            return json.loads(document)
        except ValueError:  # UnicodeDecodeError included
            raise AuthUnavailable(f"key server {url} answered something that is not JSON") from None

    async def _read(self, response: aiohttp.ClientResponse, url: str) -> bytes:
        """The body, up to ``max_document`` bytes (refused on Content-Length, or once more
        arrived; the connection is then closed, not read to its end)."""
        too_large = AuthUnavailable(f"key server {url} answered more than 1 MiB")
        if (response.content_length or 0) > self.max_document:
            raise too_large
        chunks: List[bytes] = []
        size = 0
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
            if size > self.max_document:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)


def _public(key: Any) -> Any:
    """The public half, should a key set hold a private key."""
    return key.public_key() if hasattr(key, "public_key") else key


def _parse_jwks(document: Any, url: str) -> Dict[Optional[str], PublicKey]:
    """RFC 7517 ``{"keys": [...]}``; keys that are not for signatures or not usable are skipped."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise AuthUnavailable(f"key server {url} answered JSON that is not a JWK set")
    keys: Dict[Optional[str], PublicKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        algorithm = _JWK_TYPES.get(entry.get("kty"))  # type: ignore[arg-type]
        try:
            key = _public(algorithm.from_jwk(entry)) if algorithm else None
        except (PyJWTError, ValueError, TypeError, KeyError):  # one bad entry of a good set
            key = None
        if key is not None:
            kid = entry.get("kid") if isinstance(entry.get("kid"), str) else None
            alg = entry.get("alg") if isinstance(entry.get("alg"), str) else None
            keys[kid] = PublicKey(key, alg)
    if not keys:
        raise AuthUnavailable(f"key server {url} answered a JWK set with no usable signing key")
    return keys


def _parse_x509(document: Any, url: str) -> Dict[Optional[str], PublicKey]:
    """Google's ``{"<kid>": "-----BEGIN CERTIFICATE-----..."}``: each certificate's public key."""
    if not isinstance(document, dict):
        raise AuthUnavailable(f"key server {url} answered JSON that is not a map of certificates")
    keys: Dict[Optional[str], PublicKey] = {}
    for kid, pem in document.items():
        if not isinstance(pem, str):
            continue
        try:
            keys[kid] = PublicKey(x509.load_pem_x509_certificate(pem.encode()).public_key())
        except ValueError:
            continue
    if not keys:
        raise AuthUnavailable(f"key server {url} answered no usable certificate")
    return keys
