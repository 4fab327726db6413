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
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

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


class Fetcher:
    """Gives the JSON answer of a fetch request."""

    async def fetch(self, request: FetchRequest, template: FetchTemplate) -> Any:
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
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        problem = ""
        for attempt in range(template.retries + 1):
            if attempt:
                await asyncio.sleep(FETCH_BACKOFF.delay(attempt))
            try:
                status, raw = await self._attempt(self._session, request, template)
            except TokenUnavailable as error:
                problem = str(error)
                continue
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
                # ValueError: what aiohttp or yarl refuse in a URL (InvalidURL is one too).
                # The exception's text may hold the URL, and with it a token: its type only.
                problem = type(error).__name__
                continue
            if status < 300:
                return _json(raw, request.name)
            problem = f"HTTP {status}"
            if not retryable_status(status):
                break
        raise FetchFailed(f"fetch {request.name!r} failed: {problem}")

    async def _attempt(
        self, session: aiohttp.ClientSession, request: FetchRequest, template: FetchTemplate
    ) -> Tuple[int, bytes]:
        """(status, body) of one attempt; the body is read only for a success."""
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
                raw = await _body(answer, request.name) if status < 300 else b""
            if status != 401 or not used or again or self.tokens is None:
                break
            for name, value in used.items():
                await self.tokens.invalidate(name, value)
        return status, raw

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self.tokens is not None and self.owns_tokens:
            await self.tokens.close()


class SampleFetcher(Fetcher):
    """The dry run's and test cases' stand-in: sample answers by fetch name."""

    def __init__(self, answers: Optional[Mapping[str, Any]] = None) -> None:
        self.answers = dict(answers or {})
        self.requests: List[FetchRequest] = []

    async def fetch(self, request: FetchRequest, template: FetchTemplate) -> Any:
        self.requests.append(request)
        if request.name not in self.answers:
            raise FetchFailed(f"fetch {request.name!r}: no sample answer (give it in `fetched`)")
        return self.answers[request.name]


async def _body(answer: aiohttp.ClientResponse, name: str) -> bytes:
    """The whole body, however many writes it came in; FetchFailed beyond MAX_ANSWER bytes
    (refused on Content-Length before anything is read)."""
    if (answer.content_length or 0) > MAX_ANSWER:
        raise FetchFailed(f"fetch {name!r}: the answer is larger than {MAX_ANSWER} bytes")
    return await read_at_most(answer, MAX_ANSWER + 1)


def _json(raw: bytes, name: str) -> Any:
    if len(raw) > MAX_ANSWER:
        raise FetchFailed(f"fetch {name!r}: the answer is larger than {MAX_ANSWER} bytes")
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
