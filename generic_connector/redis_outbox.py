"""A durable outbox on Redis: outbound requests survive restarts and are shared by replicas.

``put`` writes a conversation's requests to Redis before it returns, so the webhook is answered
only once they are stored; a delivery worker in every replica then sends them. Layout, per
channel, under ``<prefix>:outbox:<channel>``:

- ``:queue:<conversation>`` — a list of the conversation's requests, oldest first;
- ``:ready`` — a sorted set of conversations with requests, scored by when (Redis time, ms)
  they may next be worked on: now for new work, later while a retry waits or while a worker
  holds the conversation;
- ``:lease:<conversation>`` — the worker holding the conversation, with an expiry of
  ``visibility_timeout``, renewed (with the score) every third of it while the worker is alive;
- ``:attempts`` and ``:answers`` — per request: attempts started, the platform's last answer;
- ``:pending`` — the ids of the requests not yet delivered (for ``put``'s awaitable).

Only the lease holder sends, and only the head of the list, which it pops once delivered: so a
conversation's requests go out in order across replicas. A worker that dies stops renewing its
lease; after ``visibility_timeout`` another replica takes the conversation over and sends the
head again (delivery is at least once: a request whose answer was lost with its replica is sent
again). Attempts are counted in Redis before each send, so the retry budget (the channel's
``outbound.retries``, exponential backoff with jitter, ``Retry-After`` honoured) holds across
restarts. A request that exhausts it, or that the platform refuses for good (a 4xx other than
408/425/429, a redirect, a host not in ``outbound.allow_hosts``), moves to the dead-letter
stream ``<prefix>:dead`` with the request as it was (to retry it), a copy with the secrets
masked (to show it), the platform's last answer and the conversation id; ``generic-connector
deliveries`` lists, shows, retries and drops them.

Secrets: requests are stored in Redis as they are (it is the operator's own store). Log lines
name the channel, the kind, the conversation and the status, never a URL or a header; the
dead-letter copy that is shown has every value of the channel's environment variables replaced
by ``${NAME}``, and the values of credential-like headers hidden.

Redis that cannot be reached makes ``put`` raise ``StoreUnavailable`` (the pipeline answers 503
with Retry-After); the worker logs the outage once and waits for Redis to come back. Scripts run
on one Redis server (not a cluster): they reach keys that they build from the channel's prefix.
"""

import asyncio
import base64
import contextlib
import functools
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Set, Tuple, Type
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import aiohttp
import redis.asyncio as aioredis

from generic_connector import defaults
from generic_connector.delivery import client_session, drain, read_at_most, sent
from generic_connector.logtext import get_logger
from generic_connector.outbound import Outbound, OutboundRequest
from generic_connector.outbox import Outbox
from generic_connector.redis_store import (
    DEFAULT_PREFIX,
    UNREACHABLE,
    RedisClient,
    StoreUnavailable,
    dead_key,
    redis_location,
    wait_for_event,
)
from generic_connector.retry import Backoff, retry_after, retryable_status

logger = get_logger(__name__)

ANSWER_KEPT = 500  # characters of the platform's last answer in the dead-letter entry
ID_LENGTH = 32  # hex characters of a request's id, which starts its list element
HIDDEN = "[hidden]"
CREDENTIAL_HEADERS = ("authorization", "cookie", "token", "secret", "key", "signature", "auth")


# Keys ------------------------------------------------------------------------------------------


def outbox_base(prefix: str) -> str:
    """What every channel's keys start with; the channel's name follows."""
    return f"{prefix}:outbox:"


@dataclass(frozen=True)
class Keys:
    base: str

    @classmethod
    def of(cls, prefix: str, channel: str) -> "Keys":
        return cls(outbox_base(prefix) + channel)

    @property
    def ready(self) -> str:
        return f"{self.base}:ready"

    @property
    def attempts(self) -> str:
        return f"{self.base}:attempts"

    @property
    def answers(self) -> str:
        return f"{self.base}:answers"

    @property
    def pending(self) -> str:
        return f"{self.base}:pending"

    @property
    def lease_prefix(self) -> str:
        return f"{self.base}:lease:"

    def queue(self, conversation: str) -> str:
        return f"{self.base}:queue:{conversation}"

    def lease(self, conversation: str) -> str:
        return self.lease_prefix + conversation


# Scripts ---------------------------------------------------------------------------------------

_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS queue, ready, pending; ARGV conversation, then (id, element) pairs.
PUT = (
    _NOW
    + """
for i = 2, #ARGV, 2 do
  redis.call('RPUSH', KEYS[1], ARGV[i + 1])
  redis.call('SADD', KEYS[3], ARGV[i])
end
redis.call('ZADD', KEYS[2], 'NX', now_ms(), ARGV[1])
return redis.call('LLEN', KEYS[1])
"""
)

# KEYS ready; ARGV lease key prefix, token, visibility ms, how many. Leases due conversations.
ACQUIRE = (
    _NOW
    + """
local now = now_ms()
local limit = tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit * 2)
local got = {}
for _, conversation in ipairs(due) do
  if #got >= limit then break end
  if redis.call('SET', ARGV[1] .. conversation, ARGV[2], 'NX', 'PX', ARGV[3]) then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), conversation)
    table.insert(got, conversation)
  end
end
return got
"""
)

# KEYS lease, ready; ARGV token, visibility ms, conversation.
RENEW = (
    _NOW
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 'XX', now_ms() + tonumber(ARGV[2]), ARGV[3])
return 1
"""
)

# KEYS lease, queue, attempts, answers; ARGV token. The head, its attempt count (this one
# included) and its last answer; nil when the lease is lost, {} when the queue is empty.
BEGIN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local head = redis.call('LINDEX', KEYS[2], 0)
if not head then return {} end
local id = string.sub(head, 1, {n})
local attempts = redis.call('HINCRBY', KEYS[3], id, 1)
local last = redis.call('HGET', KEYS[4], id) or ''
return {head, attempts, last}
""".replace("{n}", str(ID_LENGTH))

# KEYS lease, queue, attempts, answers, pending, ready; ARGV token, id, conversation. Pops the
# head if it is still that request (even when the lease was lost: the next holder then skips
# it); the requests left, or -1 when the lease is lost. With none left the conversation is
# given back here, as RELEASE would (one round trip less for most deliveries).
DONE = """
local head = redis.call('LINDEX', KEYS[2], 0)
if head and string.sub(head, 1, {n}) == ARGV[2] then redis.call('LPOP', KEYS[2]) end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
redis.call('SREM', KEYS[5], ARGV[2])
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local left = redis.call('LLEN', KEYS[2])
if left == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[6], ARGV[3])
end
return left
""".replace("{n}", str(ID_LENGTH))

# KEYS lease, queue, attempts, answers, pending, dead; ARGV token, id, then the stream entry's
# field/value pairs. Moves the head to the dead-letter stream: {requests left, stream id}, or
# {-1, false} when the lease is lost.
DEAD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, false} end
local head = redis.call('LINDEX', KEYS[2], 0)
local added = false
if head and string.sub(head, 1, {n}) == ARGV[2] then
  redis.call('LPOP', KEYS[2])
  added = redis.call('XADD', KEYS[6], '*', unpack(ARGV, 3))
end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
redis.call('SREM', KEYS[5], ARGV[2])
return {redis.call('LLEN', KEYS[2]), added}
""".replace("{n}", str(ID_LENGTH))

# KEYS lease, queue, ready, answers; ARGV token, conversation, delay ms, [id, last answer].
# Gives the conversation back: due after the delay, or out of the set when nothing is left.
RELEASE = (
    _NOW
    + """
local mine = redis.call('GET', KEYS[1]) == ARGV[1]
local left = redis.call('LLEN', KEYS[2])
if mine then
  if ARGV[4] then redis.call('HSET', KEYS[4], ARGV[4], ARGV[5]) end
  redis.call('DEL', KEYS[1])
  if left == 0 then
    redis.call('ZREM', KEYS[3], ARGV[2])
  else
    redis.call('ZADD', KEYS[3], now_ms() + tonumber(ARGV[3]), ARGV[2])
  end
end
return {mine and 1 or 0, left}
"""
)

# KEYS dead; ARGV stream id, outbox base. A dead-letter entry back at the end of its
# conversation's queue, with a new attempt budget; 0 when there is no such entry.
REQUEUE = (
    _NOW
    + """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local raw = found[1][2]
local f = {}
for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
local base = ARGV[2] .. f['channel']
redis.call('RPUSH', base .. ':queue:' .. f['conversation'], f['entry'] .. ' ' .. f['request'])
redis.call('SADD', base .. ':pending', f['entry'])
redis.call('HDEL', base .. ':attempts', f['entry'])
redis.call('HDEL', base .. ':answers', f['entry'])
redis.call('ZADD', base .. ':ready', 'NX', now_ms(), f['conversation'])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""
)


# Entries ---------------------------------------------------------------------------------------


def entry_of(channel: str, conversation: str, request: OutboundRequest) -> Dict[str, Any]:
    """What is stored for one request: enough to send it again from any replica."""
    body = request.body
    return {
        "id": os.urandom(ID_LENGTH // 2).hex(),
        "channel": channel,
        "conversation": conversation,
        "kind": request.kind,
        "method": request.method,
        "url": request.url,
        "headers": dict(request.headers),
        "body": base64.b64encode(body).decode("ascii") if body is not None else None,
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
    )


def element(entry: Mapping[str, Any]) -> str:
    """The list element: the id first (scripts compare it), then the entry as JSON."""
    return f"{entry['id']} {json.dumps(entry, ensure_ascii=False)}"


def parse_element(raw: bytes) -> Dict[str, Any]:
    return json.loads(raw[ID_LENGTH + 1 :])


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


# Sending ---------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One attempt: delivered, to retry (after ``delay`` if the platform said), or refused."""

    delivered: bool
    retry: bool = False
    status: Optional[int] = None
    answer: str = ""
    problem: str = ""
    delay: Optional[float] = None


_OS_REASONS: Tuple[Tuple[Type[BaseException], str], ...] = (
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (socket.gaierror, "host name not resolved"),
    (TimeoutError, "timed out"),
)


def describe(error: BaseException) -> str:
    """An exception's type and a reason, never its text (aiohttp's texts name the URL)."""
    name = type(error).__name__
    if isinstance(error, asyncio.TimeoutError):
        return f"{name} (timed out)"
    if isinstance(error, aiohttp.ClientConnectorError):
        cause = error.os_error
        reason = next((text for cls, text in _OS_REASONS if isinstance(cause, cls)), "")
        return f"{name} ({reason or 'connection failed'})"
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return f"{name} (the server closed the connection)"
    return name


# The outbox ------------------------------------------------------------------------------------


class RedisOutbox(Outbox):
    """A channel's outbound requests in Redis, delivered by a worker in every replica."""

    def __init__(
        self,
        channel: str,
        outbound: Outbound,
        url: str = "redis://localhost:6379/0",
        prefix: str = DEFAULT_PREFIX,
        visibility_timeout: float = defaults.VISIBILITY_TIMEOUT,
        secrets: Optional[Mapping[str, str]] = None,
        retries: Optional[int] = None,
        poll_interval: float = 0.5,
        grace: float = 5.0,
        concurrency: int = 64,
        *,
        pool: Optional[aioredis.ConnectionPool] = None,
    ) -> None:
        """``outbound``: the channel's policy (timeout, retries, backoff, max_backoff,
        allow_hosts); ``retries`` overrides its retries. ``secrets``: the values of the
        environment variables the channel reads, by name, masked wherever a request is shown.
        ``poll_interval``: how often the worker looks for work other replicas stored;
        ``grace``: how long ``close`` lets sends under way finish. ``pool``: a connection pool
        of the outbox's own instead of the process's shared one for ``url``."""
        self.channel = channel
        self.outbound = outbound
        self.url = url
        self.prefix = prefix
        self.visibility_timeout = visibility_timeout
        self.max_attempts = (outbound.retries if retries is None else retries) + 1
        self.poll_interval = poll_interval
        self.grace = grace
        self.concurrency = concurrency
        self.backoff = Backoff(outbound.backoff, outbound.max_backoff)
        self.mask = Masker(secrets)
        self.keys = Keys.of(prefix, channel)
        self.redis = RedisClient(url, pool)
        self.where = redis_location(url)
        # This replica's leases hold this token.
        self.token = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(6).hex()}"
        self._visibility_ms = max(1, int(visibility_timeout * 1000))
        self._worker: Optional[asyncio.Task[None]] = None
        self._active: Dict[str, asyncio.Task[None]] = {}
        self._waiters: Dict[str, Tuple[asyncio.Future[None], Set[str]]] = {}
        self._wake: Optional[asyncio.Event] = None
        self._closing = False
        self._killed = False  # kill(): stopped as a dying process would
        self._session: Optional[aiohttp.ClientSession] = None
        self._down = False

    # The pipeline's side ----------------------------------------------------------------------

    async def start(self) -> None:
        """Check that Redis answers (StoreUnavailable, naming host and port, when not) and start
        this replica's delivery worker; ``put`` starts it too when nobody did."""
        await self.redis.ping()
        try:
            pending = await self.redis.get().zcard(self.keys.ready)
        except UNREACHABLE as error:
            raise StoreUnavailable(self.url, error) from None
        logger.info(
            "Channel %s: outbox on Redis at %s; %d conversation(s) with requests to deliver",
            self.channel, self.where, pending,
        )  # fmt: skip
        self._start_worker()

    async def put(self, conversation: str, requests: List[OutboundRequest]) -> "asyncio.Future":
        """Store the requests after the conversation's earlier ones; StoreUnavailable when Redis
        cannot be reached (then nothing is stored).

        Returns a future that completes (with None) once all of them have left the outbox:
        delivered, or moved to the dead-letter stream; by whichever replica. It never fails;
        at ``close`` the futures still waiting complete too, as their requests stay in Redis
        for the other replicas.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        if not requests:
            future.set_result(None)
            return future
        entries = [entry_of(self.channel, conversation, request) for request in requests]
        args: List[str] = [conversation]
        for entry in entries:
            args += [entry["id"], element(entry)]
        keys = [self.keys.queue(conversation), self.keys.ready, self.keys.pending]
        try:
            await self.redis.run(PUT, len(keys), *keys, *args)
        except UNREACHABLE as error:
            raise StoreUnavailable(self.url, error, "storing outbound requests") from None
        if self._closing:
            future.set_result(None)  # stored: another replica delivers them
            return future
        ids = {entry["id"] for entry in entries}
        for entry_id in ids:
            self._waiters[entry_id] = (future, ids)
        self._start_worker()
        assert self._wake is not None
        self._wake.set()
        return future

    @property
    def worker(self) -> Optional["asyncio.Task[None]"]:
        """This replica's delivery worker (``kill`` stops it as a dying process would)."""
        return self._worker

    def kill(self) -> None:
        """Stop at once, as if the process had died: sends stop where they are, leases are
        left to expire. A flag as well as a cancellation: redis-py can lose a cancellation
        that arrives during a command, and the worker would go on sending."""
        self._killed = True
        for task in [self._worker, *self._active.values()]:
            if task is not None:
                task.cancel()

    def _start_worker(self) -> None:
        if self._worker is None and not self._closing:
            self._wake = asyncio.Event()
            self._worker = asyncio.ensure_future(self._run())

    # The worker -------------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None
        try:
            while not self._closing and not self._killed:
                self._wake.clear()
                try:
                    await self._acquire()
                    if self._waiters:
                        await self._check_waiters()
                    self._back_up()
                except UNREACHABLE as error:
                    self._unreachable(error)
                except Exception:
                    logger.exception(
                        "Channel %s: the outbox worker failed; it goes on", self.channel
                    )
                await wait_for_event(self._wake, self.poll_interval)
        except asyncio.CancelledError:
            self.kill()  # sends stop where they are, leases are left to expire
            raise

    async def _acquire(self) -> None:
        free = self.concurrency - len(self._active)
        if free <= 0:
            return
        got = await self.redis.run(
            ACQUIRE, 1, self.keys.ready,
            self.keys.lease_prefix, self.token, self._visibility_ms, free,
        )  # fmt: skip
        for raw in got:
            conversation = raw.decode("utf-8")
            if conversation in self._active:
                continue
            task = asyncio.ensure_future(self._work(conversation))
            self._active[conversation] = task
            task.add_done_callback(functools.partial(self._worked, conversation))

    def _worked(self, conversation: str, task: "asyncio.Task[None]") -> None:
        if self._active.get(conversation) is task:
            del self._active[conversation]
        error = None if task.cancelled() else task.exception()
        if error is not None:
            if isinstance(error, UNREACHABLE):
                self._unreachable(error)
            else:
                logger.error(
                    "Channel %s: delivering for conversation %s failed unexpectedly: %s; its "
                    "requests stay in the outbox",
                    self.channel, conversation, type(error).__name__,
                )  # fmt: skip
        if self._wake is not None:
            self._wake.set()

    def _unreachable(self, error: BaseException) -> None:
        if not self._down:
            self._down = True
            logger.error(
                "Channel %s: %s; deliveries wait until it answers again",
                self.channel, StoreUnavailable(self.url, error),
            )  # fmt: skip

    def _back_up(self) -> None:
        if self._down:
            self._down = False
            logger.info(
                "Channel %s: Redis at %s answers again; deliveries go on",
                self.channel, self.where,
            )  # fmt: skip

    async def _check_waiters(self) -> None:
        """Complete the futures of requests that another replica delivered."""
        ids = list(self._waiters)
        async with self.redis.get().pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.sismember(self.keys.pending, entry_id)
            members = await pipe.execute()
        for entry_id, pending in zip(ids, members):
            if not pending:
                self._left(entry_id)

    def _left(self, entry_id: str) -> None:
        """A request left the outbox (delivered or dead): complete its put's future if last."""
        waiter = self._waiters.pop(entry_id, None)
        if waiter is None:
            return
        future, ids = waiter
        ids.discard(entry_id)
        if not ids and not future.done():
            future.set_result(None)

    async def _work(self, conversation: str) -> None:
        """Send the conversation's requests in order while this replica holds its lease."""
        finished = asyncio.Event()
        renewing = asyncio.ensure_future(self._renew(conversation, finished))
        try:
            await self._send_queue(conversation, renewing)
        finally:
            # Both: a cancellation can be lost inside redis-py's connection check, and a
            # renewal that outlived its work would hold the lease with nothing behind it.
            finished.set()
            renewing.cancel()

    async def _send_queue(self, conversation: str, renewing: "asyncio.Task[None]") -> None:
        keys = self.keys
        lease, queue = keys.lease(conversation), keys.queue(conversation)
        while not self._closing and not self._killed:
            if renewing.done():
                return  # the lease was lost: whoever holds it now sends
            begun = await self.redis.run(
                BEGIN, 4, lease, queue, keys.attempts, keys.answers, self.token
            )
            if begun is None:
                return  # the lease was lost
            if not begun:
                await self._release(conversation, 0)
                return
            raw, attempts, last = begun
            entry = parse_element(raw)
            if attempts > self.max_attempts:
                # A replica died during or after the last attempt: the budget is spent.
                outcome = _stored_outcome(last)
                if await self._dead(conversation, entry, attempts - 1, outcome) < 0:
                    return
                continue
            outcome = await self._send(entry)
            if outcome.delivered:
                left = await self.redis.run(
                    DONE, 6, lease, queue, keys.attempts, keys.answers, keys.pending,
                    keys.ready, self.token, entry["id"], conversation,
                )  # fmt: skip
                self._left(entry["id"])
                logger.debug(
                    "Channel %s: delivered a %s request for conversation %s (HTTP %s)",
                    self.channel, entry["kind"], conversation, outcome.status,
                )  # fmt: skip
                if left <= 0:
                    return  # nothing left, and given back; or the lease was lost
                continue
            if outcome.retry and attempts < self.max_attempts:
                delay = self.backoff.delay(attempts, outcome.delay)
                logger.warning(
                    "Channel %s: a %s request for conversation %s: attempt %d of %d failed "
                    "(%s); next attempt in %.1f s",
                    self.channel, entry["kind"], conversation, attempts, self.max_attempts,
                    outcome.problem, delay,
                )  # fmt: skip
                await self._release(conversation, delay, entry["id"], outcome)
                self._wake_in(delay)
                return
            if await self._dead(conversation, entry, attempts, outcome) < 0:
                return

    async def _renew(self, conversation: str, finished: asyncio.Event) -> None:
        """Keep the lease while the conversation is worked on; return once it is lost."""
        keys = [self.keys.lease(conversation), self.keys.ready]
        while True:
            await asyncio.sleep(self.visibility_timeout / 3)
            if finished.is_set():
                return
            try:
                renewed = await self.redis.run(
                    RENEW, 2, *keys, self.token, self._visibility_ms, conversation
                )
            except UNREACHABLE:
                continue
            if not renewed:
                return

    async def _release(
        self,
        conversation: str,
        delay: float,
        entry_id: Optional[str] = None,
        outcome: Optional[Outcome] = None,
    ) -> Tuple[int, int]:
        """Give the conversation back, due after ``delay`` s; (released, requests left)."""
        keys = [
            self.keys.lease(conversation),
            self.keys.queue(conversation),
            self.keys.ready,
            self.keys.answers,
        ]
        args: List[Any] = [self.token, conversation, int(delay * 1000)]
        if entry_id is not None and outcome is not None:
            args += [entry_id, json.dumps(_outcome_fields(outcome))]
        released, left = await self.redis.run(RELEASE, len(keys), *keys, *args)
        return released, left

    async def _dead(
        self, conversation: str, entry: Dict[str, Any], attempts: int, outcome: Outcome
    ) -> int:
        """Move the head to the dead-letter stream; the requests left, -1 if the lease is lost."""
        fields = {
            "channel": self.channel,
            "conversation": conversation,
            "entry": entry["id"],
            "kind": entry["kind"],
            "attempts": str(attempts),
            "status": "" if outcome.status is None else str(outcome.status),
            "answer": outcome.answer,
            "problem": outcome.problem,
            "reason": "retries exhausted" if outcome.retry else "not retried",
            "at": f"{time.time():.3f}",
            "shown": json.dumps(self.mask.request(entry), ensure_ascii=False),
            "request": json.dumps(entry, ensure_ascii=False),
        }
        pairs = [part for item in fields.items() for part in item]
        keys = [
            self.keys.lease(conversation),
            self.keys.queue(conversation),
            self.keys.attempts,
            self.keys.answers,
            self.keys.pending,
            dead_key(self.prefix),
        ]
        left, stream_id = await self.redis.run(
            DEAD, len(keys), *keys, self.token, entry["id"], *pairs
        )
        if left < 0:
            return left
        self._left(entry["id"])
        shown_id = stream_id.decode() if stream_id else "-"
        logger.error(
            "Channel %s: a %s request for conversation %s was not delivered after %d "
            "attempt(s) (%s); moved to the dead-letter stream as %s",
            self.channel, entry["kind"], conversation, attempts, outcome.problem, shown_id,
        )  # fmt: skip
        if left == 0:
            await self._release(conversation, 0)
        return left

    def _wake_in(self, delay: float) -> None:
        """Look for work again once a retry is due (sooner than the next poll)."""
        if self._wake is not None and delay < self.poll_interval:
            asyncio.get_running_loop().call_later(delay, self._wake.set)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = client_session(self.outbound.timeout)
        return self._session

    async def _send(self, entry: Dict[str, Any]) -> Outcome:
        """One attempt; never raises but for cancellation."""
        request = request_of(entry)
        if not self.outbound.allows(request):
            return Outcome(False, problem="the host is not in outbound.allow_hosts")
        try:
            async with sent(self._client(), request) as answer:
                status = answer.status
                if status < 300:
                    await drain(answer)  # bounded: a success's body is not needed
                    return Outcome(True, status=status)
                raw = await read_at_most(answer, 4 * ANSWER_KEPT)
                text = self.mask.answer(raw.decode("utf-8", errors="replace"), entry)
                if status < 400:
                    problem = f"HTTP {status}, a redirect, not followed"
                    return Outcome(False, status=status, answer=text[:ANSWER_KEPT], problem=problem)
                delay = retry_after(answer.headers.get("Retry-After"))
                return Outcome(
                    False,
                    retry=retryable_status(status),
                    status=status,
                    answer=text[:ANSWER_KEPT],
                    problem=f"HTTP {status}",
                    delay=delay,
                )
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            permanent = isinstance(
                error, (aiohttp.InvalidURL, aiohttp.ClientConnectorCertificateError)
            )
            return Outcome(False, retry=not permanent, problem=describe(error))
        except Exception as error:  # a library's surprise: retried like a connection error
            return Outcome(False, retry=True, problem=describe(error))

    # Shut-down --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop taking work, let sends under way finish within ``grace`` seconds, and hand the
        rest back: it stays in Redis, and the conversations are due at once for the other
        replicas (one log line per conversation with requests left)."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            await asyncio.wait([worker])
        active = dict(self._active)
        if active:
            _, pending = await asyncio.wait(list(active.values()), timeout=self.grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            for conversation in active:
                await self._hand_back(conversation)
        try:
            waiting = await self.redis.get().zcard(self.keys.ready)
        except UNREACHABLE:
            waiting = None
        if waiting:
            logger.info(
                "Channel %s: outbox closed; %d conversation(s) have requests waiting in Redis",
                self.channel, waiting,
            )  # fmt: skip
        for future, _ in list(self._waiters.values()):
            if not future.done():
                future.set_result(None)
        self._waiters.clear()
        if self._session is not None:
            await self._session.close()
        await self.redis.close()

    async def _hand_back(self, conversation: str) -> None:
        try:
            _, left = await self._release(conversation, 0)
        except UNREACHABLE as error:
            logger.warning(
                "Channel %s: conversation %s could not be handed back (%s); another replica "
                "takes it over after %.0f s",
                self.channel, conversation, StoreUnavailable(self.url, error),
                self.visibility_timeout,
            )  # fmt: skip
            return
        if left:
            logger.warning(
                "Channel %s: shutting down with %d request(s) of conversation %s not delivered; "
                "they stay in the outbox for the other replicas (or the next start)",
                self.channel, left, conversation,
            )  # fmt: skip


def _outcome_fields(outcome: Outcome) -> Dict[str, Any]:
    return {"status": outcome.status, "answer": outcome.answer, "problem": outcome.problem}


def _stored_outcome(raw: bytes) -> Outcome:
    """The last answer another replica recorded, for a request whose budget it spent."""
    try:
        fields = json.loads(raw) if raw else {}
    except ValueError:
        fields = {}
    problem = fields.get("problem") or "the replica sending it stopped during the last attempt"
    return Outcome(
        False,
        retry=True,
        status=fields.get("status"),
        answer=fields.get("answer") or "",
        problem=problem,
    )
