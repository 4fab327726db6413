"""Fetching before mapping: requests whose JSON answers the mapping reads as ``fetched``.

Some platforms' webhooks carry only ids (Webex's ``messages/created``): the message must be
fetched from the platform's API before it can be mapped. ``request.fetch`` declares those
requests; each event's answers are put under ``fetched.<name>`` in the event the ignore rules
and fields see. A fetch that fails answers 503, so the platform retries. The dry run and the
mapping test cases take sample answers (a case's ``fetched``) instead of HTTP. The templates
(``FetchTemplate``, ``FetchRequest``, ``FetchFailed``) are in ``fetch_template``, re-exported
here.
"""

import asyncio
import json
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import aiohttp

from generic_connector import defaults
from generic_connector.delivery import read_at_most
from generic_connector.fetch_template import FetchFailed, FetchRequest, FetchTemplate
from generic_connector.functions import Scope
from generic_connector.logtext import get_logger
from generic_connector.retry import Backoff, retryable_status
from generic_connector.tokens import TokenUnavailable

if TYPE_CHECKING:
    from generic_connector.tokens import TokenProvider

logger = get_logger(__name__)

MAX_ANSWER = defaults.FETCH_MAX_ANSWER
FETCH_BACKOFF = Backoff(defaults.FETCH_BACKOFF, defaults.FETCH_MAX_BACKOFF)


class Downloaded(NamedTuple):
    """A download's body (None when it is larger than the limit) and its media type."""

    body: Optional[bytes]
    mime: Optional[str]


class Fetcher:
    """Gives the JSON answer of a fetch request, or the bytes of a download."""

    async def fetch(self, request: FetchRequest, template: FetchTemplate) -> Any:
        raise NotImplementedError

    async def download(
        self, request: FetchRequest, template: FetchTemplate, limit: int
    ) -> Downloaded:
        raise NotImplementedError

    async def close(self) -> None:
        """Give back connections."""


class HTTPFetcher(Fetcher):
    """Real requests: one pooled session, retries with backoff, no redirects followed.

    ``tokens`` fills ``token('name')`` markers in URLs and headers right before each attempt
    (the channel's provider, shared with its outbox); a 401 to a request that carried a token
    drops the token and sends the request again once, at once, as outbound requests do.
    ``owns_tokens``: ``close`` closes the provider too (a channel with no outbox to do it).
    """

    def __init__(self, tokens: Optional["TokenProvider"] = None, owns_tokens: bool = False) -> None:
        self.tokens = tokens
        self.owns_tokens = owns_tokens
        self._session: Optional[aiohttp.ClientSession] = None

    async def fetch(self, request: FetchRequest, template: FetchTemplate) -> Any:
        raw, _ = await self._get(request, template, MAX_ANSWER)
        if raw is None:
            raise FetchFailed(
                f"fetch {request.name!r}: the answer is larger than {MAX_ANSWER} bytes"
            )
        return _json(raw, request.name)

    async def download(
        self, request: FetchRequest, template: FetchTemplate, limit: int
    ) -> Downloaded:
        return Downloaded(*await self._get(request, template, limit))

    async def _get(
        self, request: FetchRequest, template: FetchTemplate, limit: int
    ) -> Tuple[Optional[bytes], Optional[str]]:
        """(body, media type) of a 2xx answer, with retries; body None beyond ``limit``."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        problem = ""
        for attempt in range(template.retries + 1):
            if attempt:
                await asyncio.sleep(FETCH_BACKOFF.delay(attempt))
            try:
                status, raw, mime = await self._attempt(self._session, request, template, limit)
            except TokenUnavailable as error:
                problem = str(error)
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                # ValueError: what aiohttp or yarl refuse in a URL (InvalidURL is one too).
                # The exception's text may hold the URL, and with it a token: its type only.
                problem = type(error).__name__
                continue
            if status < 300:
                return raw, mime
            problem = f"HTTP {status}"
            if not retryable_status(status):
                break
        raise FetchFailed(f"fetch {request.name!r} failed: {problem}")

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        request: FetchRequest,
        template: FetchTemplate,
        limit: int,
    ) -> Tuple[int, Optional[bytes], Optional[str]]:
        """(status, body, media type) of one attempt; the body is read only for a success."""
        for again in (False, True):
            url, headers = request.url, request.headers
            used: Dict[str, str] = {}
            if self.tokens is not None:
                url, headers, used = await self.tokens.fill(url, headers, session)
            async with session.request(
                request.method,
                url,
                data=request.body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=template.timeout),
            ) as answer:
                status = answer.status
                raw = await _body(answer, limit) if status < 300 else b""
                mime = answer.headers.get("Content-Type")
            if status != 401 or not used or again or self.tokens is None:
                break
            for name, value in used.items():
                await self.tokens.invalidate(name, value)
        return status, raw, mime

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.tokens is not None and self.owns_tokens:
            await self.tokens.close()


class SampleFetcher(Fetcher):
    """The dry run's and test cases' stand-in: sample answers by fetch name (a download's
    sample is its text, under the download's name)."""

    def __init__(self, answers: Optional[Mapping[str, Any]] = None) -> None:
        self.answers = dict(answers or {})
        self.requests: List[FetchRequest] = []

    async def fetch(self, request: FetchRequest, template: FetchTemplate) -> Any:
        self.requests.append(request)
        if request.name not in self.answers:
            raise FetchFailed(f"fetch {request.name!r}: no sample answer (give it in `fetched`)")
        return self.answers[request.name]

    async def download(
        self, request: FetchRequest, template: FetchTemplate, limit: int
    ) -> Downloaded:
        sample = await self.fetch(request, template)
        raw = sample.encode("utf-8") if isinstance(sample, str) else json.dumps(sample).encode()
        return Downloaded(raw if len(raw) <= limit else None, None)


async def _body(answer: aiohttp.ClientResponse, limit: int) -> Optional[bytes]:
    """The whole body, however many writes it came in; None beyond ``limit`` bytes (refused on
    Content-Length before anything is read)."""
    if (answer.content_length or 0) > limit:
        return None
    raw = await read_at_most(answer, limit + 1)
    return raw if len(raw) <= limit else None


def _json(raw: bytes, name: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise FetchFailed(f"fetch {name!r}: the answer is not JSON") from None


async def fetched_event(
    event: Any, templates: List[FetchTemplate], fetcher: Fetcher, scope: Optional[Scope]
) -> Any:
    """The event with ``fetched: {name: answer, ...}`` added (a copy; the body is not changed).
    A fetch whose ``when`` is not true for the event is not made: its answer is null. Each
    template sees the answers of those before it as ``fetched``."""
    answers: Dict[str, Any] = {}
    for template in templates:
        seen = {**event, "fetched": dict(answers)} if isinstance(event, dict) else event
        if not template.wanted(seen, scope):
            answers[template.name] = None
            continue
        request = template.render(seen, scope)
        answers[template.name] = await fetcher.fetch(request, template)
    return {**event, "fetched": answers} if isinstance(event, dict) else {"fetched": answers}
