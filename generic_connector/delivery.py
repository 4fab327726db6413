"""Sending outbound requests: one pooled aiohttp session per channel, retries, order.

Requests for one conversation go out one after the other, in the order Rasa produced them,
even when a retry waits; other conversations are not held up. Connection errors, time-outs,
429 and 5xx are retried with exponential backoff and jitter (``Retry-After`` wins when the
platform sends it); other 4xx are not. Secrets live in URLs and headers, so neither is logged.
"""

import asyncio
import email.utils
import logging
import random
import time
from typing import Dict, List, Optional

import aiohttp

from generic_connector.outbound import Outbound, OutboundRequest

logger = logging.getLogger(__name__)

RETRY_STATUSES = {429, 500, 502, 503, 504}


class Delivery:
    """Delivers a channel's outbound requests; create it in the server's event loop."""

    def __init__(self, channel: str, outbound: Outbound) -> None:
        self.channel = channel
        self.outbound = outbound
        self._session: Optional[aiohttp.ClientSession] = None
        self._tails: Dict[str, asyncio.Task] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.outbound.timeout),
                connector=aiohttp.TCPConnector(limit=100),
            )
        return self._session

    def schedule(self, conversation: str, requests: List[OutboundRequest]) -> "asyncio.Task[None]":
        """Queue ``requests`` behind the conversation's earlier ones; returns their task."""
        previous = self._tails.get(conversation)
        task = asyncio.ensure_future(self._after(previous, conversation, requests))
        self._tails[conversation] = task
        task.add_done_callback(lambda done: self._forget(conversation, done))
        return task

    def _forget(self, conversation: str, task: "asyncio.Task[None]") -> None:
        if self._tails.get(conversation) is task:
            del self._tails[conversation]

    async def _after(
        self, previous: Optional["asyncio.Task[None]"], conversation: str, requests: list
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        for request in requests:
            await self.send(conversation, request)

    async def send(self, conversation: str, request: OutboundRequest) -> bool:
        """Send one request with retries; log and return False when it cannot be delivered."""
        if not self.outbound.allows(request):
            logger.error(
                "Channel %s: refused to send a %s message for conversation %s to host %r, "
                "which is not in outbound.allow_hosts",
                self.channel, request.kind, conversation, request.host,
            )  # fmt: skip
            return False
        attempts = self.outbound.retries + 1
        problem = ""
        for attempt in range(attempts):
            delay: Optional[float] = None
            try:
                async with self._client().request(
                    request.method, request.url, data=request.body, headers=request.headers
                ) as answer:
                    if answer.status < 300:
                        return True
                    text = (await answer.text())[:500]
                    problem = f"HTTP {answer.status}: {text}"
                    if answer.status not in RETRY_STATUSES:
                        break
                    delay = retry_after(answer.headers.get("Retry-After"))
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                problem = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            if attempt + 1 < attempts:
                await asyncio.sleep(self._backoff(attempt) if delay is None else delay)
        logger.error(
            "Channel %s: could not deliver a %s message for conversation %s after %d attempt(s); "
            "the platform answered %s",
            self.channel, request.kind, conversation, attempt + 1, problem,
        )  # fmt: skip
        return False

    def _backoff(self, attempt: int) -> float:
        base = min(self.outbound.max_backoff, self.outbound.backoff * 2**attempt)
        return base * random.uniform(0.5, 1.5)

    async def close(self) -> None:
        if self._tails:
            await asyncio.wait(list(self._tails.values()), timeout=self.outbound.timeout)
        if self._session is not None:
            await self._session.close()


def retry_after(value: Optional[str], limit: float = 120.0) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, min(seconds, limit))
