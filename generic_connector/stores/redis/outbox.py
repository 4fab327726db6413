"""The outbox on Redis: outbound requests survive restarts and are shared by replicas.

``put`` stores a conversation's requests in the channel's queue (``queue.py``: per-conversation
order, leases, attempts, retries, dead letters) before it returns, so the webhook is answered
only once they are stored; the queue's worker in every replica sends them, one attempt at a time
(``delivery.attempt``), with the channel's ``outbound.retries``, backoff and ``Retry-After``, and
one conversation's requests spaced by ``outbound.rate`` (the queue's ``spacing``). A
request the platform refuses for good (a 4xx other than 408/425/429, a redirect, a host not in
``outbound.allow_hosts``), or that spends its retries, goes to the dead-letter stream with a copy
for operators; ``generic-connector deliveries`` lists, shows, retries and drops them.

Secrets: requests are stored in Redis as they are (it is the operator's own store). Log lines
name the channel, the kind, the conversation and the status, never a URL or a header; the
dead-letter copy that is shown has every value of the channel's environment variables replaced
by ``${NAME}``, and the values of credential-like headers hidden.
"""

import asyncio
import base64
import contextlib
import json
import time
from typing import Any, Dict, List, Mapping, Optional, Set
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import aiohttp
import redis.asyncio as aioredis

from generic_connector.delivery import attempt_chain, client_session, describe
from generic_connector.logtext import get_logger
from generic_connector.outbound import Chain, Outbound, OutboundRequest
from generic_connector.outbox import Outbox
from generic_connector.retry import Backoff, Outcome
from generic_connector.stores.redis.client import DEFAULT_PREFIX, redis_location
from generic_connector.stores.redis.queue import KEPT, Entry, OnQueue
from generic_connector.tokens import TokenProvider

logger = get_logger(__name__)

HIDDEN = "[hidden]"
CREDENTIAL_HEADERS = ("authorization", "cookie", "token", "secret", "key", "signature", "auth")


# Entries ---------------------------------------------------------------------------------------


def entry_of(channel: str, conversation: str, request: OutboundRequest) -> Dict[str, Any]:
    """What is stored for one request: enough to send it again from any replica."""
    body = request.body
    return {
        "channel": channel,
        "conversation": conversation,
        "kind": request.kind,
        "method": request.method,
        "url": request.url,
        "headers": dict(request.headers),
        "body": base64.b64encode(body).decode("ascii") if body is not None else None,
        "success": request.success,
        "then": request.then.stored() if request.then is not None else None,
        "created": time.time(),
    }


def request_of(entry: Mapping[str, Any]) -> OutboundRequest:
    body = entry.get("body")
    return OutboundRequest(
        entry["kind"],
        entry["method"],
        entry["url"],
        dict(entry.get("headers") or {}),
        base64.b64decode(body) if body is not None else None,
        entry.get("success"),
        Chain.from_stored(entry["then"]) if entry.get("then") else None,
    )


# Masking ---------------------------------------------------------------------------------------


class Masker:
    """Replaces the values of the channel's environment variables by ``${NAME}``."""

    def __init__(self, secrets: Optional[Mapping[str, str]] = None) -> None:
        pairs: Dict[str, str] = {}
        for name, value in (secrets or {}).items():
            if not value:
                continue
            for form in (value, quote(value, safe=""), quote_plus(value), quote(value)):
                pairs.setdefault(form, name)
        self._pairs = sorted(pairs.items(), key=lambda pair: len(pair[0]), reverse=True)

    def __call__(self, text: str) -> str:
        for value, name in self._pairs:
            if value in text:
                text = text.replace(value, f"${{{name}}}")
        return text

    def headers(self, headers: Mapping[str, str]) -> Dict[str, str]:
        """Masked header values; a credential-like header that holds no known secret is hidden
        whole."""
        shown = {}
        for name, value in headers.items():
            masked = self(value)
            if masked == value and any(word in name.lower() for word in CREDENTIAL_HEADERS):
                masked = HIDDEN
            shown[name] = masked
        return shown

    def request(self, entry: Mapping[str, Any]) -> Dict[str, Any]:
        """The copy of a stored request that may be shown."""
        body: Optional[str] = None
        if entry.get("body") is not None:
            raw = base64.b64decode(entry["body"])
            try:
                body = self(raw.decode("utf-8"))
            except UnicodeDecodeError:
                body = f"<{len(raw)} bytes, not UTF-8>"
        return {
            "kind": entry["kind"],
            "method": entry["method"],
            "url": self(entry["url"]),
            "headers": self.headers(entry.get("headers") or {}),
            "body": body,
        }

    def answer(self, text: str, entry: Mapping[str, Any]) -> str:
        """A platform's answer with secrets masked and the request's own header and query
        values hidden (platforms echo them)."""
        text = self(text)
        hidden: Set[str] = set()
        for name, value in (entry.get("headers") or {}).items():
            if any(word in name.lower() for word in CREDENTIAL_HEADERS):
                hidden |= {value, value.split(" ")[-1]}
        with contextlib.suppress(ValueError):
            hidden |= {value for _, value in parse_qsl(urlsplit(entry["url"]).query)}
        for value in sorted((v for v in hidden if len(v) >= 6), key=len, reverse=True):
            text = text.replace(value, HIDDEN)
        return text


# The outbox ------------------------------------------------------------------------------------


class RedisOutbox(Outbox, OnQueue):
    """A channel's outbound requests in Redis, delivered by a worker in every replica."""

    what, storing, items, undone = (
        "outbox",
        "storing outbound requests",
        "request(s)",
        "not delivered",
    )

    def __init__(
        self,
        channel: str,
        outbound: Outbound,
        url: str = "redis://localhost:6379/0",
        prefix: str = DEFAULT_PREFIX,
        *,
        pool: Optional[aioredis.ConnectionPool] = None,
        secrets: Optional[Mapping[str, str]] = None,
        retries: Optional[int] = None,
        tokens: Optional[TokenProvider] = None,
        **tuning: Any,
    ) -> None:
        """``outbound``: the channel's policy (timeout, retries, backoff, max_backoff,
        allow_hosts); ``retries`` overrides its retries. ``secrets``: the values of the
        environment variables the channel reads, by name, masked wherever a request is shown.
        ``tuning``: the queue's (``queue.Queue``; 64 conversations at once by default).
        ``pool``: a connection pool of the outbox's own instead of the process's shared one.
        ``tokens``: fills token('name') markers right before each attempt (stored: the marker)."""
        attempts = (outbound.retries if retries is None else retries) + 1
        backoff = Backoff(outbound.backoff, outbound.max_backoff)
        tuning.setdefault("concurrency", 64)
        tuning.setdefault("spacing", outbound.spacing)  # outbound.rate, kept in Redis
        super().__init__(channel, url, prefix, pool, attempts, backoff, tuning)
        self.outbound = outbound
        self.mask = Masker(secrets)
        self.tokens = tokens
        self._session: Optional[aiohttp.ClientSession] = None

    async def start(self) -> None:
        """Check that Redis answers (StoreUnavailable, naming host and port, when not) and start
        this replica's delivery worker; ``put`` starts it too when nobody did."""
        waiting = await self.queue.waiting()
        logger.info(
            "Channel %s: outbox on Redis at %s; %d conversation(s) with requests to deliver",
            self.channel, redis_location(self.url), waiting,
        )  # fmt: skip
        self.queue.start()

    async def put(self, conversation: str, requests: List[OutboundRequest]) -> "asyncio.Future":
        """Store the requests after the conversation's earlier ones; StoreUnavailable when Redis
        cannot be reached (then nothing is stored). The future completes once all of them have
        left the outbox: delivered, or moved to the dead letters; by whichever replica."""
        stored = [
            json.dumps(entry_of(self.channel, conversation, request), ensure_ascii=False)
            for request in requests
        ]
        ids = await self.queue.put([(conversation, entry) for entry in stored]) if stored else []
        return self.queue.wait(ids)

    async def process(self, entry: Entry) -> Outcome:
        stored = json.loads(entry.payload)
        request = request_of(stored)
        if not self.outbound.allows(request):
            return Outcome(False, problem="the host is not in outbound.allow_hosts")
        if self._session is None or self._session.closed:
            self._session = client_session(self.outbound.timeout)
        try:
            outcome, sent_as = await attempt_chain(
                self._session, request, self.outbound, self.tokens
            )
        except Exception as error:  # it would fail again: to the dead letters
            return Outcome(False, problem=f"failed unexpectedly: {describe(error)}")
        if outcome.done:
            logger.debug(
                "Channel %s: delivered a %s request for conversation %s (HTTP %s)",
                self.channel, request.kind, entry.conversation, outcome.status,
            )  # fmt: skip
            return outcome
        shown = {**stored, "url": sent_as.url, "headers": sent_as.headers}  # tokens hidden too
        answer = self.mask.answer(outcome.answer, shown)[:KEPT]
        return Outcome(
            False,
            retry=outcome.retry,
            delay=outcome.delay,
            status=outcome.status,
            answer=answer,
            problem=outcome.problem,
        )

    def dead_letter(self, entry: Entry) -> Dict[str, str]:
        stored = json.loads(entry.payload)
        shown = json.dumps(self.mask.request(stored), ensure_ascii=False)
        return {"kind": stored["kind"], "shown": shown}

    async def close(self) -> None:
        """Stop taking work, let sends under way finish within ``grace`` seconds, and hand the
        rest back: it stays in Redis, due at once for the other replicas."""
        await self.queue.close()
        if self._session is not None:
            await self._session.close()
        if self.tokens is not None:
            await self.tokens.close()
        await self.redis.close()
