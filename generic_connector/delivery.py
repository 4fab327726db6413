"""Sending outbound requests: one pooled aiohttp session per channel, retries, order.

Requests for one conversation go out one after the other, in the order Rasa produced them,
even when a retry waits; other conversations are not held up. With ``outbound.rate``, one
conversation's attempts start at least ``outbound.spacing`` seconds apart (a retry's wait,
``Retry-After`` included, counts towards it). Connection errors, time-outs,
429 and 5xx are retried with exponential backoff and jitter (``Retry-After`` wins when the
platform sends it); other 4xx are not, and neither are redirects, which are not followed (a
redirect would send the body, and perhaps the secrets in it, to a host nobody configured).

Secrets live in URLs and headers, so neither is ever logged: not in our lines, and not through
exception texts (aiohttp's name the host and URL), which are reduced to their type and a reason
such as "connection refused". A platform's error answer is logged with the URL, its path and
query values and every header value cut out, in case the platform echoes them.
"""

import asyncio
import contextlib
import errno
import functools
import re
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import ujson

from generic_connector import defaults
from generic_connector.errors import RenderError
from generic_connector.expressions import EvaluationError, Expression, truthy
from generic_connector.limits import due_after
from generic_connector.logtext import get_logger
from generic_connector.metrics import ChannelMetrics
from generic_connector.outbound import Outbound, OutboundRequest
from generic_connector.retry import Backoff, Outcome, retry_after, retryable_status

if TYPE_CHECKING:
    from generic_connector.tokens import TokenProvider

logger = get_logger(__name__)

ANSWER_LOGGED = 500  # characters of an error answer in the log line
MAX_DRAINED = defaults.MAX_DRAINED
_HIDDEN = "[hidden]"


class Delivery:
    """Delivers a channel's outbound requests; create it in the server's event loop."""

    def __init__(
        self,
        channel: str,
        outbound: Outbound,
        tokens: Optional["TokenProvider"] = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        """``clock`` and ``sleep``: how pacing and retries read and pass time (tests give
        their own)."""
        self.channel = channel
        self.outbound = outbound
        self.tokens = tokens  # fills token('name') markers right before each attempt
        self.backoff = Backoff(outbound.backoff, outbound.max_backoff)
        self._session: Optional[aiohttp.ClientSession] = None
        self._tails: Dict[str, asyncio.Task] = {}  # each conversation's last task
        self._tasks: Set[asyncio.Task] = set()  # every task not done yet
        self.metrics = ChannelMetrics(channel)
        self.clock = clock
        self.sleep = sleep
        self._started: Dict[str, float] = {}  # when each conversation's last attempt started

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = client_session(self.outbound.timeout)
        return self._session

    def schedule(self, conversation: str, requests: List[OutboundRequest]) -> "asyncio.Task[None]":
        """Queue ``requests`` behind the conversation's earlier ones; returns their task.

        The task never fails: what cannot be delivered is logged.
        """
        previous = self._tails.get(conversation)
        task = asyncio.ensure_future(self._after(previous, conversation, requests))
        self._tails[conversation] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._forget(conversation, done))
        return task

    def _forget(self, conversation: str, task: "asyncio.Task[None]") -> None:
        self._tasks.discard(task)
        if self._tails.get(conversation) is task:
            del self._tails[conversation]
            if conversation in self._started:  # kept while a next request must wait for it
                loop = asyncio.get_running_loop()
                loop.call_later(self.outbound.spacing, self._expire, conversation)

    def _expire(self, conversation: str) -> None:
        started = self._started.get(conversation)
        if conversation in self._tails or started is None:
            return
        if due_after(started, self.outbound.spacing, self.clock()) <= 0:
            del self._started[conversation]

    async def _paced(self, conversation: str) -> None:
        """Wait until the conversation may send again (``outbound.rate``), then note the start
        of this attempt."""
        spacing = self.outbound.spacing
        if spacing <= 0:
            return
        wait = due_after(self._started.get(conversation), spacing, self.clock())
        if wait > 0:
            await self.sleep(wait)
        self._started[conversation] = self.clock()

    async def _after(
        self,
        previous: Optional["asyncio.Task[None]"],
        conversation: str,
        requests: List[OutboundRequest],
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        for request in requests:
            await self.send(conversation, request)

    async def send(self, conversation: str, request: OutboundRequest) -> bool:
        """Send one request with retries; log and return False when it cannot be delivered.

        Never raises (but for cancellation): an unexpected error is logged like a failure.
        """
        self.metrics.pending += 1
        try:
            delivered = await self._send(conversation, request)
            self.metrics.outbound["delivered" if delivered else "failed"] += 1
            return delivered
        except Exception as error:  # a bug or a library's surprise must not kill the task
            subject = getattr(request, "subject", "a message")
            logger.error(
                "Channel %s: delivering %s for conversation %s failed unexpectedly: %s",
                self.channel, subject, conversation, describe(error),
            )  # fmt: skip
            self.metrics.outbound["failed"] += 1
            return False
        finally:
            self.metrics.pending -= 1

    async def _send(self, conversation: str, request: OutboundRequest) -> bool:
        if not self.outbound.allows(request):
            logger.error(
                "Channel %s: refused to send %s for conversation %s to host %r on port %s, "
                "which is not in outbound.allow_hosts",
                self.channel, request.subject, conversation, request.host, request.port,
            )  # fmt: skip
            return False
        attempts = self.outbound.retries + 1
        for number in range(1, attempts + 1):
            await self._paced(conversation)
            outcome, sent_as = await attempt_chain(
                self._client(), request, self.outbound, self.tokens
            )
            if outcome.done:
                return True
            if not outcome.retry or number == attempts:
                break
            self.metrics.outbound["retried"] += 1
            await self.sleep(self.backoff.delay(number, outcome.delay))
        if outcome.status is None:
            problem = f"the last attempt failed: {outcome.problem}"
        elif outcome.status < 300:
            problem = f"the platform answered {outcome.problem}"
        elif outcome.status < 400:
            problem = f"the platform answered HTTP {outcome.status} (a redirect)"
        else:
            problem = f"the platform answered {outcome.problem}: {scrub(outcome.answer, sent_as)}"
        logger.error(
            "Channel %s: could not deliver %s for conversation %s after %d attempt(s); %s",
            self.channel, request.subject, conversation, number, problem,
        )  # fmt: skip
        return False

    async def close(self) -> None:
        """Wait (up to the time-out) for deliveries under way, then close the session."""
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self.outbound.timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "Channel %s: replies of %d conversation(s) were still being delivered at "
                    "shut-down; they were not sent",
                    self.channel, len({c for c, t in self._tails.items() if t in pending}),
                )  # fmt: skip
                await asyncio.wait(pending)
        if self._session is not None:
            await self._session.close()
        if self.tokens is not None:
            await self.tokens.close()


async def attempt_chain(
    session: aiohttp.ClientSession,
    request: OutboundRequest,
    outbound: Outbound,
    tokens: Optional["TokenProvider"] = None,
) -> Tuple[Outcome, OutboundRequest]:
    """One attempt at ``request`` and, when it is a chain's step, at each request after it in
    turn, rendered from the answer before; the outcome of the last one tried and that request
    as sent (with its tokens, for masking). A chain is tried whole: a retry starts again from
    its first step, so a step must be safe to repeat (an upload is)."""
    while True:
        if tokens is None:
            outcome, sent_as = await attempt(session, request), request
        else:
            outcome, sent_as = await tokens.attempt(session, request)
        if not outcome.done or request.then is None:
            return outcome, sent_as
        try:
            request = outbound.next_request(request.then, outcome.value)
        except (RenderError, EvaluationError) as error:
            return Outcome(False, problem=f"the step after a 2xx: {error}"), request
        if not outbound.allows(request):
            return Outcome(False, problem="a step's host is not in outbound.allow_hosts"), request


async def attempt(session: aiohttp.ClientSession, request: OutboundRequest) -> Outcome:
    """One attempt at an outbound request (the memory outbox's and the Redis outbox's). Raises
    only what no retry can mend (aiohttp's ValueError for a line break in a header value), and
    cancellation. Its ``answer`` is the platform's, unmasked."""
    try:
        async with sent(session, request) as answer:
            status = answer.status
            if status < 300 and (request.success is not None or request.then is not None):
                return await _judged(answer, request.success)
            if status < 300:
                await drain(answer)  # bounded: a success's body is not needed
                return Outcome(True, status=status)
            if status < 400:
                problem = f"HTTP {status}, a redirect, not followed"
                return Outcome(False, status=status, problem=problem)
            text = (await read_at_most(answer, 4 * ANSWER_LOGGED)).decode("utf-8", "replace")
            return Outcome(
                False,
                retry=retryable_status(status),
                delay=retry_after(answer.headers.get("Retry-After")),
                status=status,
                answer=text,
                problem=f"HTTP {status}",
            )
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        return Outcome(False, retry=retryable(error), problem=describe(error))


async def _judged(answer: aiohttp.ClientResponse, success: Optional[str]) -> Outcome:
    """A 2xx answer read, as its JSON (its text when it is not JSON), and judged by the
    template's ``success`` expression, if any: true is a delivery; anything else is retried,
    as the platform did not send the message. The outcome's ``value`` is what was read."""
    raw = await read_at_most(answer, MAX_DRAINED)
    text = raw.decode("utf-8", "replace")
    try:
        value: Any = ujson.loads(raw)
    except ValueError:
        value = text
    try:
        sent = success is None or truthy(_success(success).search(value))
    except EvaluationError:
        sent = False
    if sent:
        return Outcome(True, status=answer.status, value=value)
    assert success is not None
    problem = f"HTTP {answer.status}, but success ({success}) is not true"
    return Outcome(False, retry=True, status=answer.status, answer=text, problem=problem)


@functools.lru_cache(maxsize=64)
def _success(source: str) -> Expression:
    return Expression(source)


async def drain(answer: aiohttp.ClientResponse, limit: int = MAX_DRAINED) -> None:
    """Read a success's body, up to ``limit`` bytes, so that its connection goes back to the
    pool; a longer answer is not read on, its connection is closed instead. The message is
    delivered whatever happens to the rest of the answer (a retry would send it twice)."""
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        if (answer.content_length or 0) <= limit:
            await read_at_most(answer, limit)
    if not answer.content.at_eof():
        answer.close()


async def read_at_most(answer: aiohttp.ClientResponse, limit: int) -> bytes:
    """The answer's body up to ``limit`` bytes: read until its end or the limit, however many
    writes it arrives in (``content.read(n)`` gives only what is buffered)."""
    chunks: List[bytes] = []
    size = 0
    while size < limit:
        chunk = await answer.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# Why a request failed, without the URL or host that the exceptions' texts carry.
_OS_REASONS: Tuple[Tuple[type, str], ...] = (
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (socket.gaierror, "host name not resolved"),
    (ssl.SSLError, "TLS failed"),
    (TimeoutError, "timed out"),
)
_CLIENT_REASONS: Tuple[Tuple[type, str], ...] = (  # the first that matches
    (asyncio.TimeoutError, "timed out"),
    (aiohttp.InvalidURL, "invalid URL"),
    (aiohttp.ClientConnectorCertificateError, "TLS certificate not accepted"),
    (aiohttp.ClientSSLError, "TLS failed"),
    (aiohttp.ServerDisconnectedError, "the server closed the connection"),
    (aiohttp.ClientPayloadError, "the answer's body was cut short or malformed"),
    (aiohttp.ClientResponseError, "the answer was malformed"),
)


def describe(error: BaseException) -> str:
    """The exception's type and a reason that names no host, URL or header."""
    reason = _reason(error)
    name = type(error).__name__
    return f"{name} ({reason})" if reason else name


def _reason(error: BaseException) -> str:
    found = next((text for cls, text in _CLIENT_REASONS if isinstance(error, cls)), "")
    if found or not isinstance(error, OSError):
        return found
    cause = getattr(error, "os_error", error)  # what a ClientConnectorError wraps
    found = next((text for cls, text in _OS_REASONS if isinstance(cause, cls)), "")
    if found or not isinstance(cause, OSError) or not cause.errno:
        return found or "connection failed"
    return errno.errorcode.get(cause.errno, "connection failed")


def retryable(error: BaseException) -> bool:
    """Connection errors and time-outs may pass; a URL that does not parse, or a certificate
    that is not accepted, will not."""
    return not isinstance(error, (aiohttp.InvalidURL, aiohttp.ClientConnectorCertificateError))


_SECRET_LIKE = re.compile(r"\d")


def scrub(text: str, request: OutboundRequest) -> str:
    """``text`` (a platform's error answer) with the request's URL and header values cut out."""
    values = [v for k, v in request.headers.items() if k.lower() != "content-type"]
    secrets = {request.url, *values, *(value.split(" ")[-1] for value in values)}  # Bearer x
    try:
        parts = urlsplit(request.url)
    except ValueError:
        parts = None
    if parts is not None:
        secrets |= {parts.netloc, parts.path, parts.query, f"{parts.path}?{parts.query}"}
        secrets |= {value for _, value in parse_qsl(parts.query)}
        # Tokens in paths (Telegram's /bot<token>/): segments with a digit in them.
        secrets |= {s for s in parts.path.split("/") if len(s) >= 6 and _SECRET_LIKE.search(s)}
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, _HIDDEN)
    return text[:ANSWER_LOGGED]


def client_session(timeout: float) -> aiohttp.ClientSession:
    """The pooled session of a channel's outbound requests (its process's outbox or the
    shared one). Cookies a platform's API sets are not kept: they would go out with every
    later conversation's requests."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout),
        connector=aiohttp.TCPConnector(limit=100),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def sent(session: aiohttp.ClientSession, request: OutboundRequest) -> Any:
    """``async with sent(session, request) as answer``: one attempt at an outbound request.

    Redirects are not followed: an allowed host could otherwise send a reply elsewhere.
    """
    return session.request(
        request.method,
        request.url,
        data=request.body,
        headers=request.headers,
        allow_redirects=False,
    )
