"""Access tokens from a token endpoint: the ``tokens`` section and ``token('name')``.

Some platforms' APIs take a reply only with a short-lived access token, got from a token
endpoint first: an OAuth2 client-credentials grant (RFC 6749 §4.4) or a request of their own.
Each entry of ``tokens`` declares such a request, and ``token('name')`` in an outbound
template's URL or headers stands for its current value.

Tokens stay out of storage and logs: ``token('api')`` renders to the marker ``${token:api}``,
so the outbox (and the Redis dead letters) hold only the marker; the sender puts the current
token in its place in the URL (percent-encoded) and the header values right before each
attempt, never in the body (a user's text could hold a marker). ``TokenProvider`` gets a token
on first use with one request, keeps it in the channel's token cache (this process's memory,
or Redis, shared by replicas) until its expiry minus ``margin``, and shares one request among
concurrent callers. When the platform answers 401 to a request that carried a token, the
token is dropped and the request sent again once, at once.
"""

import asyncio
import dataclasses
import json
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import quote

import aiohttp

from generic_connector import defaults
from generic_connector.delivery import attempt, describe, read_at_most
from generic_connector.errors import GenericConnectorError, RenderError
from generic_connector.expressions import EvaluationError, Expression, truthy
from generic_connector.functions import TOKEN_MARKER, Scope
from generic_connector.logtext import get_logger
from generic_connector.outbound import BODY_FORMATS, HostAllowList, OutboundRequest, RequestTemplate
from generic_connector.retry import Outcome

logger = get_logger(__name__)

MARKER = re.compile(re.escape(TOKEN_MARKER.format("\0")).replace("\0", "([A-Za-z0-9_-]+)"))
DEFAULT_EXPIRES_IN = 3600.0  # seconds, when the answer says nothing
DEFAULT_MARGIN = 60.0
MAX_ANSWER = 65_536  # bytes of a token endpoint's answer
MAX_KEPT = 30 * 86_400.0  # seconds: the longest a token is kept, whatever its answer says
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
# content_type: a body format's name, or its media type.
CONTENT_TYPES = {
    **{cls.media_type: name for name, cls in BODY_FORMATS.items()},
    **{name: name for name in BODY_FORMATS},
}


class TokenUnavailable(GenericConnectorError):
    """No token could be got; the message names the token and a reason, never a secret."""


def marker(name: str) -> str:
    """What ``token(name)`` renders to: ``${token:name}``."""
    return TOKEN_MARKER.format(name)


def names_in(texts: Sequence[str]) -> Set[str]:
    """The tokens whose markers ``texts`` hold."""
    return {match.group(1) for text in texts for match in MARKER.finditer(text)}


@dataclass(frozen=True)
class TokenSpec:
    """One entry of ``tokens``: the request, and where the answer gives the token."""

    name: str
    template: RequestTemplate
    value: Expression
    expires_in: Expression
    margin: float = DEFAULT_MARGIN
    # Over an API's answer (its JSON): true when it says the token was refused, for APIs that
    # answer 200 with an error code instead of 401 (WeCom's errcode 42001).
    refused: Optional[Expression] = None

    @classmethod
    def from_config(cls, name: str, section: Mapping[str, Any]) -> "TokenSpec":
        template = RequestTemplate(
            "token",
            section["url"],
            method=section.get("method", "POST"),
            headers=section.get("headers"),
            body=section.get("body"),
            content_type=CONTENT_TYPES[section.get("content_type", "form")],
        )
        template.where = f"tokens.{name}"
        return cls(
            name,
            template,
            Expression(section.get("value", "access_token")),
            Expression(section.get("expires_in", "expires_in")),
            float(section.get("margin", DEFAULT_MARGIN)),
            Expression(section["refused"]) if section.get("refused") else None,
        )

    def expressions(self) -> List[Expression]:
        optional = [self.refused] if self.refused is not None else []
        return [*self.template.expressions(), self.value, self.expires_in, *optional]

    def refuses(self, outcome: Outcome) -> bool:
        """Whether an attempt's outcome says this token was refused: HTTP 401, or an answer
        that ``refused`` is true for."""
        if outcome.status == 401:
            return True
        if self.refused is None or outcome.done or not outcome.answer:
            return False
        try:
            return truthy(self.refused.search(json.loads(outcome.answer)))
        except (ValueError, EvaluationError):
            return False


class TokenCache:
    """Where a channel's tokens are kept until renewal: a part of its ``store.type``."""

    async def get(self, key: str) -> Optional[str]:
        raise NotImplementedError

    async def put(self, key: str, value: str, ttl: float) -> None:
        raise NotImplementedError

    async def drop(self, key: str, value: str) -> None:
        """Forget ``key`` if it still holds ``value`` (another may have renewed it)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Give back connections."""


class MemoryTokenCache(TokenCache):
    """Tokens in this process's memory; ``clock`` is ``time.monotonic`` unless given."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._kept: Dict[str, Tuple[str, float]] = {}

    async def get(self, key: str) -> Optional[str]:
        kept = self._kept.get(key)
        if kept is None or kept[1] <= self.clock():
            return None
        return kept[0]

    async def put(self, key: str, value: str, ttl: float) -> None:
        self._kept[key] = (value, self.clock() + ttl)

    async def drop(self, key: str, value: str) -> None:
        if key in self._kept and self._kept[key][0] == value:
            del self._kept[key]


class TokenProvider:
    """A channel's tokens: got when first needed, kept until renewal, filled into requests."""

    def __init__(
        self,
        channel: str,
        specs: Mapping[str, TokenSpec],
        cache: Optional[TokenCache] = None,
        *,
        allow_hosts: Optional[HostAllowList] = None,
        timeout: float = defaults.OUTBOUND_TIMEOUT,
        scope: Optional[Scope] = None,
    ) -> None:
        self.channel = channel
        self.specs = dict(specs)
        self.cache = cache or MemoryTokenCache()
        self.allow_hosts = allow_hosts
        self.timeout = timeout
        self.scope = scope
        self._locks: Dict[str, asyncio.Lock] = {}

    def key(self, name: str) -> str:
        """The cache key of a token (the Redis cache puts its prefix before it)."""
        return f"token:{self.channel}:{name}"

    async def get(self, name: str, session: aiohttp.ClientSession) -> str:
        """The current token ``name``; TokenUnavailable when none can be got."""
        if name not in self.specs:
            raise TokenUnavailable(f"token {name!r} is not declared in tokens")
        value = await self.cache.get(self.key(name))
        if value is not None:
            return value
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:  # concurrent callers share one request
            value = await self.cache.get(self.key(name))
            if value is None:
                value, ttl = await self._request(self.specs[name], session)
                await self.cache.put(self.key(name), value, ttl)
        return value

    async def invalidate(self, name: str, value: str) -> None:
        """Forget token ``name`` if it is still ``value`` (the platform refused it)."""
        logger.info("Channel %s: token %r was refused; renewing it", self.channel, name)
        await self.cache.drop(self.key(name), value)

    async def attempt(
        self, session: aiohttp.ClientSession, request: OutboundRequest
    ) -> Tuple[Outcome, OutboundRequest]:
        """One attempt at ``request`` (``delivery.attempt``) with its markers filled, and the
        request as sent. A 401 to a request that carried a token (or an answer its ``refused``
        is true for): the token is dropped and the request sent again once, at once. No token
        to be had: an outcome to retry."""
        filled = request
        for again in (False, True):
            try:
                url, headers, used = await self.fill(request.url, request.headers, session)
            except TokenUnavailable as error:
                return Outcome(False, retry=True, problem=str(error)), filled
            filled = dataclasses.replace(request, url=url, headers=headers)
            outcome = await attempt(session, filled)
            if again or not any(self.specs[name].refuses(outcome) for name in used):
                break
            for name, value in used.items():
                await self.invalidate(name, value)
        return outcome, filled

    async def fill(
        self, url: str, headers: Mapping[str, str], session: aiohttp.ClientSession
    ) -> Tuple[str, Dict[str, str], Dict[str, str]]:
        """``url`` and ``headers`` with the current tokens for their markers, and the tokens
        used by name (to invalidate after a 401)."""
        names = sorted(names_in([url, *headers.values()]))
        used = {name: await self.get(name, session) for name in names}
        if not used:
            return url, dict(headers), used

        def put(encode: Callable[[str], str]) -> Callable[["re.Match[str]"], str]:
            return lambda match: encode(used[match.group(1)])

        url = MARKER.sub(put(lambda value: quote(value, safe="")), url)
        filled = {name: MARKER.sub(put(str), value) for name, value in headers.items()}
        return url, filled, used

    async def _request(self, spec: TokenSpec, session: aiohttp.ClientSession) -> Tuple[str, float]:
        """(token, seconds to keep it) from one request to the token endpoint."""
        failed = f"token {spec.name!r}"
        try:
            request = spec.template.render({}, self.scope)
        except (RenderError, EvaluationError) as error:
            raise TokenUnavailable(f"{failed}: {error}") from None
        if self.allow_hosts is not None and not self.allow_hosts.allows(request.url):
            raise TokenUnavailable(f"{failed}: the host is not in outbound.allow_hosts")
        try:
            async with session.request(
                request.method,
                request.url,
                data=request.body,
                headers=request.headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as answer:
                status = answer.status
                raw = await read_at_most(answer, MAX_ANSWER + 1)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            self._log(spec.name, None, describe(error))
            raise TokenUnavailable(f"{failed}: {describe(error)}") from None
        if status >= 300:
            self._log(spec.name, status, "the token endpoint refused the request")
            raise TokenUnavailable(f"{failed}: the token endpoint answered HTTP {status}")
        value, ttl = self._read(spec, raw)
        logger.info(
            "Channel %s: got token %r (HTTP %s), kept %.0f s", self.channel, spec.name, status, ttl
        )
        return value, ttl

    def _read(self, spec: TokenSpec, raw: bytes) -> Tuple[str, float]:
        failed = f"token {spec.name!r}"
        try:
            answer = json.loads(raw) if len(raw) <= MAX_ANSWER else None
        except ValueError:
            answer = None
        if answer is None:
            self._log(spec.name, 200, "the answer is no JSON, or too large")
            raise TokenUnavailable(f"{failed}: the answer is no JSON, or too large")
        try:
            value = spec.value.search(answer, self.scope)
            expires = spec.expires_in.search(answer, self.scope)
        except EvaluationError as error:
            raise TokenUnavailable(f"{failed}: {error}") from None
        if not isinstance(value, str) or not value or _UNSAFE.search(value):
            self._log(spec.name, 200, "the answer holds no usable token at `value`")
            raise TokenUnavailable(f"{failed}: the answer holds no usable token")
        seconds = _seconds(expires)
        ttl = seconds - spec.margin
        return value, ttl if ttl > 0 else seconds / 2  # a margin too long: half the lifetime

    def _log(self, name: str, status: Optional[int], reason: str) -> None:
        logger.error(
            "Channel %s: could not get token %r (HTTP %s): %s",
            self.channel, name, status if status is not None else "-", reason,
        )  # fmt: skip

    async def close(self) -> None:
        await self.cache.close()


def _seconds(value: Any) -> float:
    """``expires_in`` as seconds: a positive number or numeric string, else the default."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return DEFAULT_EXPIRES_IN
    if not seconds > 0:  # also NaN
        return DEFAULT_EXPIRES_IN
    return min(seconds, MAX_KEPT)


def build_specs(section: Optional[Mapping[str, Any]]) -> Dict[str, TokenSpec]:
    """The ``tokens`` section's entries, by name."""
    return {name: TokenSpec.from_config(name, spec) for name, spec in (section or {}).items()}
