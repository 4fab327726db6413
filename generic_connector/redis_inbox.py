"""A durable inbox on Redis for early acknowledgement (``request.ack: early``).

The webhook writes the user messages of an inbound request with ``put`` and is answered 2xx as
soon as they are stored; a worker in every replica then hands them to Rasa. Layout, per
channel, under ``<prefix>:inbox:<channel>``:

- the key itself — a stream with one entry per message (fields ``sender``, ``dedup``, ``data``:
  the message as JSON), read by the consumer group ``workers``; every process reads as a
  consumer of its own (host name, process id and a random part);
- ``:order:<conversation>`` — a list of the stream ids of the conversation's entries not yet
  handled, oldest first, pushed by ``put`` in the same script as the entries;
- ``:lease:<conversation>`` — the consumer that works on the conversation, with an expiry of
  ``visibility_timeout``, renewed every third of it while the worker is alive;
- ``:attempts`` — per stream id, the attempts started (counted before each one);
- ``:done:<digest>`` — the messages handled lately (for ``dedup_window`` seconds).

Order: only the lease holder hands entries to the handler, and only the head of the
conversation's list, which it removes once handled; then it goes on with the next head, so a
conversation's messages are handled one after the other, in stream order, across replicas.
The consumer group serves to find work: an entry that a worker reads (``XREADGROUP``), or claims
once it has been pending longer than ``visibility_timeout`` (``XAUTOCLAIM``), makes the worker
take its conversation's lease; when another consumer holds it, the entry is left alone — the
holder reaches it in the list (and acknowledges it, whoever's pending entry it is). The entry
being handled is claimed by the holder's consumer and kept fresh with the lease, so a replica
that dies leaves both to expire together: after ``visibility_timeout`` another replica claims
the entry, takes the lease and handles the conversation from its head again (delivery is at
least once).

De-duplication: each entry has a key, the SHA-256 of sender, message id and text (as the
pipeline's idempotency key); where the platform gives no message id there is none, as a
user's repeated message cannot be told from a retry. A handled entry records its key for
``dedup_window`` seconds, in the same script that acknowledges it; an entry whose key is
recorded (a platform's retry of a webhook whose 2xx was lost, a copy in the same batch) is
acknowledged without being handed over. Duplicates of one conversation are never handled at
the same time, as the lease orders them.

Failures: a handler that raises leaves its entry at the head of the list and retries it after
an exponential backoff (with jitter) while the worker holds the lease; after ``max_attempts``
the entry goes to the dead-letter stream ``<prefix>:dead`` (the outbox's, with ``kind:
inbound``, the error's type and message, and the message as ``message``), is acknowledged, and
the conversation goes on. Attempts are counted in Redis, so an entry that kills the replica
handling it is counted too. A handler that raises ``RetryLater`` (the assistant is not ready)
is retried after the delay it gives without spending an attempt. ``REQUEUE_INBOUND`` puts a
dead-letter entry back in its inbox.

Shut-down: ``close`` stops reading, lets the handlers under way finish within ``grace`` seconds
(cancelling the rest: their attempt is not counted), gives the conversations' leases back and
marks this consumer's pending entries idle past ``visibility_timeout``, so that the other
replicas claim them at once; it logs how many it handed back.

Redis that cannot be reached makes ``start`` and ``put`` raise ``StoreUnavailable`` (the
pipeline answers 503 with Retry-After: nothing is acknowledged that is not stored); the worker
logs the outage once and waits for Redis to come back, and makes the consumer group again if
Redis lost it. Scripts run on one Redis server (not a cluster): some reach keys that they build
from the channel's prefix. Log lines name the channel, the conversation, the stream id and the
error's type, never the user's text.
"""

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import re
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple

import redis.asyncio as aioredis
import redis.exceptions

from generic_connector import defaults
from generic_connector.errors import RetryLater
from generic_connector.logtext import get_logger
from generic_connector.redis_store import (
    DEFAULT_PREFIX,
    UNREACHABLE,
    RedisClient,
    StoreUnavailable,
    dead_key,
    redis_location,
    wait_for_event,
)
from generic_connector.retry import Backoff

logger = get_logger(__name__)

Handler = Callable[[Dict[str, Any]], Awaitable[None]]

GROUP = "workers"
PROBLEM_KEPT = 500  # characters of the last error's message in the dead-letter entry
BATCH = 100  # entries claimed or handed back per command
# Errors that mean Redis cannot store anything now (full, read-only replica, failing disk).
REFUSALS = ("OOM", "READONLY", "MISCONF", "NOREPLICAS", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")


# Keys ------------------------------------------------------------------------------------------


def inbox_base(prefix: str) -> str:
    """What every channel's inbox stream starts with; the channel's name follows."""
    return f"{prefix}:inbox:"


@dataclass(frozen=True)
class Keys:
    stream: str

    @classmethod
    def of(cls, prefix: str, channel: str) -> "Keys":
        return cls(inbox_base(prefix) + channel)

    @property
    def attempts(self) -> str:
        return f"{self.stream}:attempts"

    @property
    def done_prefix(self) -> str:
        return f"{self.stream}:done:"

    def order(self, conversation: str) -> str:
        return f"{self.stream}:order:{conversation}"

    def lease(self, conversation: str) -> str:
        return f"{self.stream}:lease:{conversation}"


# Scripts ---------------------------------------------------------------------------------------

# KEYS stream, then the order list of each entry; ARGV (sender, dedup key, JSON) per entry.
# Every entry and its place in its conversation's order, in one script: all or none.
PUT = """
local ids = {}
for i = 1, #KEYS - 1 do
  local b = (i - 1) * 3
  local id = redis.call('XADD', KEYS[1], '*',
    'sender', ARGV[b + 1], 'dedup', ARGV[b + 2], 'data', ARGV[b + 3])
  redis.call('RPUSH', KEYS[i + 1], id)
  ids[i] = id
end
return ids
"""

# KEYS lease; ARGV token, visibility ms. 1 when the lease is (now) this consumer's.
ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS lease, stream; ARGV token, visibility ms, group, consumer, the entry handled ('' none).
# Renews the lease and keeps the entry handled claimed by this consumer (its idle time 0).
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[5] ~= '' then
  redis.call('XCLAIM', KEYS[2], ARGV[3], ARGV[4], 0, ARGV[5], 'JUSTID')
end
return 1
"""

# KEYS lease, order, stream, attempts; ARGV token, group, consumer, done key prefix.
# The conversation's head to hand over: {'entry', id, JSON, attempts (this one included),
# duplicates skipped, missing skipped, its de-duplication key}; {'empty', ...} when nothing
# is left (the lease is then given back); {'more', ...} after many skipped; nil when the lease
# is not this consumer's.
BEGIN = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local duplicates, missing = 0, 0
for _ = 1, 200 do
  local head = redis.call('LINDEX', KEYS[2], 0)
  if not head then
    redis.call('DEL', KEYS[1])
    return {'empty', '', '', 0, duplicates, missing, ''}
  end
  local found = redis.call('XRANGE', KEYS[3], head, head)
  if #found == 0 then
    missing = missing + 1
  else
    local raw = found[1][2]
    local f = {}
    for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
    local dedup = f['dedup'] or ''
    if dedup ~= '' and redis.call('EXISTS', ARGV[4] .. dedup) == 1 then
      duplicates = duplicates + 1
    else
      redis.call('XCLAIM', KEYS[3], ARGV[2], ARGV[3], 0, head, 'JUSTID')
      local attempts = redis.call('HINCRBY', KEYS[4], head, 1)
      return {'entry', head, f['data'], attempts, duplicates, missing, dedup}
    end
  end
  redis.call('LPOP', KEYS[2])
  redis.call('XACK', KEYS[3], ARGV[2], head)
  redis.call('XDEL', KEYS[3], head)
  redis.call('HDEL', KEYS[4], head)
end
return {'more', '', '', 0, duplicates, missing, ''}
"""

# KEYS lease, order, stream, attempts; ARGV token, group, id, done key ('' for none), window ms.
# The entry handled: out of the order (if still its head), acknowledged, deleted, recorded for
# de-duplication. The entries left (the lease is given back at 0), or -1 when it was lost.
DONE = """
if redis.call('LINDEX', KEYS[2], 0) == ARGV[3] then redis.call('LPOP', KEYS[2]) end
redis.call('XACK', KEYS[3], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[3], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', ARGV[4], ARGV[3], 'PX', ARGV[5]) end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local left = redis.call('LLEN', KEYS[2])
if left == 0 then redis.call('DEL', KEYS[1]) end
return left
"""

# KEYS lease, order, stream, attempts, dead; ARGV token, group, id, then the dead-letter
# entry's field/value pairs. {entries left, dead-letter id}, or {-1, false} when the lease is
# lost.
DEAD = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1, false} end
local added = false
if redis.call('LINDEX', KEYS[2], 0) == ARGV[3] then
  redis.call('LPOP', KEYS[2])
  added = redis.call('XADD', KEYS[5], '*', unpack(ARGV, 4))
end
redis.call('XACK', KEYS[3], ARGV[2], ARGV[3])
redis.call('XDEL', KEYS[3], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[3])
local left = redis.call('LLEN', KEYS[2])
if left == 0 then redis.call('DEL', KEYS[1]) end
return {left, added}
"""

# KEYS lease; ARGV token. Gives the lease back if it is still this consumer's.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS stream; ARGV group, idle ms, this consumer. Deletes the consumers that have nothing
# pending and have not read for that long (every start of a process adds one).
FORGET = """
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local t = {}
  for i = 1, #c, 2 do t[c[i]] = c[i + 1] end
  if t['pending'] == 0 and t['idle'] > tonumber(ARGV[2]) and t['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], t['name'])
    removed = removed + 1
  end
end
return removed
"""

# KEYS dead; ARGV stream id, inbox base (``<prefix>:inbox:``). An inbound dead-letter entry
# back at the end of its conversation in its inbox, with a new attempt budget: its new stream
# id, or 0 when there is no such entry or it is not inbound.
REQUEUE_INBOUND = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local raw = found[1][2]
local f = {}
for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
if f['kind'] ~= 'inbound' then return 0 end
local stream = ARGV[2] .. f['channel']
local id = redis.call('XADD', stream, '*',
  'sender', f['conversation'], 'dedup', f['dedup'] or '', 'data', f['message'])
redis.call('RPUSH', stream .. ':order:' .. f['conversation'], id)
redis.call('XDEL', KEYS[1], ARGV[1])
return id
"""


# Entries ---------------------------------------------------------------------------------------


def dedup_key(entry: Dict[str, Any]) -> str:
    """The de-duplication digest of an entry: sender, message id and text; '' (none) without
    a message id, as a user's repeated message cannot be told from a platform's retry."""
    sender = str(entry.get("sender", ""))
    message_id = entry.get("message_id")
    if message_id in (None, ""):
        return ""
    parts: List[Any] = ["id", sender, str(message_id), entry.get("text")]
    canonical = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8", errors="surrogatepass")).hexdigest()


_URL_SECRETS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s@]*@|(?P<query>\?[^\s'\"]*)", re.I)


def problem_of(error: BaseException) -> str:
    """The error's type and message (URL credentials and query strings hidden), shortened."""
    text = _URL_SECRETS.sub(
        lambda m: m.group("scheme") + "[hidden]@" if m.group("scheme") else "?[hidden]",
        str(error).strip(),
    )
    if len(text) > PROBLEM_KEPT:
        text = text[: PROBLEM_KEPT - 1] + "…"
    name = type(error).__name__
    return f"{name}: {text}" if text else name


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _is_refusal(error: redis.exceptions.ResponseError) -> bool:
    return str(error).split(" ", 1)[0].upper() in REFUSALS


# The inbox -------------------------------------------------------------------------------------


class RedisInbox:
    """A channel's inbound messages in a Redis stream, handed to ``handler`` by a worker in
    every replica: at least once, de-duplicated, in order per conversation."""

    def __init__(
        self,
        channel: str,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        visibility_timeout: float = defaults.VISIBILITY_TIMEOUT,
        max_attempts: int = 5,
        concurrency: int = 16,
        grace: float = 5.0,
        *,
        pool: Optional[aioredis.ConnectionPool] = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        dedup_window: float = defaults.IDEMPOTENCY_WINDOW,
        poll_interval: float = 0.5,
    ) -> None:
        """``visibility_timeout``: how long an entry (and its conversation) stays with a
        replica that stopped renewing it; ``max_attempts``: handler calls before an entry
        goes to the dead-letter stream; ``concurrency``: conversations handled at once by this
        process; ``grace``: how long ``close`` lets handlers under way finish. ``backoff`` and
        ``max_backoff``: the delay after a failed attempt (doubling, with jitter);
        ``dedup_window``: seconds a handled message is remembered (0: no de-duplication);
        ``poll_interval``: the longest a read blocks. ``pool``: a connection pool of the
        inbox's own instead of the process's shared one for ``url``."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.channel = channel
        self.url = url
        self.prefix = prefix
        self.visibility_timeout = visibility_timeout
        self.max_attempts = max_attempts
        self.concurrency = concurrency
        self.grace = grace
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.retry = Backoff(backoff, max_backoff)
        self.dedup_window = dedup_window
        self.keys = Keys.of(prefix, channel)
        self.redis = RedisClient(url, pool)
        self.where = redis_location(url)
        # This process's consumer name, which its leases hold too.
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(6).hex()}"
        self._visibility_ms = max(1, int(visibility_timeout * 1000))
        # Entries are claimed a little after their lease has expired (both are renewed at once).
        self._claim_idle_ms = self._visibility_ms + max(50, self._visibility_ms // 50)
        # Claims run a few times per visibility timeout; reads block no longer than that.
        self._claim_every = max(0.05, min(visibility_timeout / 4, 5.0))
        self._block = max(0.01, min(poll_interval, self._claim_every))
        self._handler: Optional[Handler] = None
        self._worker: Optional[asyncio.Task[None]] = None
        self._active: Dict[str, asyncio.Task[None]] = {}
        self._again: Set[str] = set()  # conversations with new work while their task ran
        self._waiting: OrderedDict[str, None] = OrderedDict()  # beyond ``concurrency``
        self._leased: Set[str] = set()
        self._current: Dict[str, str] = {}  # conversation → the stream id being handled
        self._stopping: Optional[asyncio.Event] = None
        self._closing = False
        self._killed = False  # the worker was cancelled: nothing is started any more
        self._down = False

    # The pipeline's side ----------------------------------------------------------------------

    async def start(self, handler: Handler) -> None:
        """Check that Redis answers (StoreUnavailable, naming host and port, when not), make
        the consumer group if it is missing, and start this process's worker."""
        if self._closing:
            raise RuntimeError("the inbox is closed")
        self._handler = handler
        await self.redis.ping()
        try:
            await self._create_group()
            forgotten = await self.redis.run(
                FORGET, 1, self.keys.stream, GROUP, self._forget_after_ms(), self.consumer
            )
            waiting = await self.redis.get().xlen(self.keys.stream)
        except UNREACHABLE as error:
            raise StoreUnavailable(self.url, error, "starting the inbox") from None
        logger.info(
            "Channel %s: inbox on Redis at %s; %d message(s) waiting%s",
            self.channel, self.where, waiting,
            f" ({forgotten} idle consumer(s) removed)" if forgotten else "",
        )  # fmt: skip
        if self._worker is None:
            self._stopping = asyncio.Event()
            self._worker = asyncio.ensure_future(self._run())

    async def put(self, entries: List[Dict[str, Any]]) -> None:
        """Store the entries (each a user message as a JSON-serialisable dict with at least
        ``sender``) after their conversations' earlier ones, all or none; StoreUnavailable when
        Redis cannot be reached (then nothing is stored)."""
        if not entries:
            return
        keys: List[str] = [self.keys.stream]
        args: List[str] = []
        for entry in entries:
            if "sender" not in entry:
                raise ValueError("an inbox entry needs a sender")
            sender = str(entry["sender"])
            dedup = dedup_key(entry) if self.dedup_window > 0 else ""
            keys.append(self.keys.order(sender))
            args += [sender, dedup, json.dumps(entry, ensure_ascii=False)]
        try:
            await self.redis.run(PUT, len(keys), *keys, *args)
        except UNREACHABLE as error:
            raise StoreUnavailable(self.url, error, "storing inbound messages") from None
        except redis.exceptions.ResponseError as error:
            if _is_refusal(error):
                raise StoreUnavailable(self.url, error, "storing inbound messages") from None
            raise

    @property
    def worker(self) -> Optional["asyncio.Task[None]"]:
        """This process's reading worker (``kill`` stops it as a dying process would)."""
        return self._worker

    def kill(self) -> None:
        """Stop at once, as if the process had died: handlers stop where they are, leases and
        pending entries are left to expire. A flag as well as a cancellation: redis-py can
        lose a cancellation that arrives during a command, and the worker would go on."""
        self._killed = True
        for task in [self._worker, *self._active.values()]:
            if task is not None:
                task.cancel()

    # Reading ----------------------------------------------------------------------------------

    async def _create_group(self) -> None:
        try:
            await self.redis.get().xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    def _forget_after_ms(self) -> int:
        return int(max(3600.0, 10 * self.visibility_timeout) * 1000)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_claim = 0.0
        try:
            while not self._closing and not self._killed:
                try:
                    if loop.time() >= next_claim:
                        await self._claim_idle()
                        next_claim = loop.time() + self._claim_every
                    free = self.concurrency - len(self._active)
                    if free > 0:
                        await self._read(free)
                    else:
                        await self._pause(self._block)
                    self._back_up()
                except UNREACHABLE as error:
                    self._unreachable(error)
                    await self._pause(self._claim_every)
                except redis.exceptions.ResponseError as error:
                    if "NOGROUP" in str(error):  # Redis lost it (restarted empty, flushed)
                        await self._create_group()
                        continue
                    logger.error(
                        "Channel %s: the inbox worker got an error from Redis (%s); it goes on",
                        self.channel, error,
                    )  # fmt: skip
                    await self._pause(self._claim_every)
                except Exception:
                    logger.exception(
                        "Channel %s: the inbox worker failed; it goes on", self.channel
                    )
                    await self._pause(self._claim_every)
        except asyncio.CancelledError:
            if not self._closing:
                self.kill()  # handlers stop where they are, leases and entries expire
            raise

    async def _read(self, count: int) -> None:
        found = await self.redis.get().xreadgroup(
            GROUP,
            self.consumer,
            {self.keys.stream: ">"},
            count=count,
            block=max(1, int(self._block * 1000)),
        )
        for _, entries in found or []:
            for _, fields in entries:
                self._notify(fields)

    async def _claim_idle(self) -> None:
        """Entries pending longer than the visibility timeout (a replica died or handed them
        back, or their conversation was leased elsewhere): their conversations are looked at."""
        start = "0-0"
        for _ in range(10):
            answer = await self.redis.get().xautoclaim(
                self.keys.stream, GROUP, self.consumer, self._claim_idle_ms, start, count=BATCH
            )
            start, claimed = answer[0], answer[1]
            for entry_id, fields in claimed:
                if entry_id is not None and fields:
                    self._notify(fields)
            if _text(start) == "0-0":
                return

    def _notify(self, fields: Dict[bytes, bytes]) -> None:
        sender = fields.get(b"sender")
        if sender is None:
            return
        self._wake(_text(sender))

    def _wake(self, conversation: str) -> None:
        if self._closing or self._killed:
            return
        if conversation in self._active:
            self._again.add(conversation)
        elif len(self._active) >= self.concurrency:
            self._waiting[conversation] = None
        else:
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
                    "Channel %s: handling conversation %s failed unexpectedly (%s); its "
                    "messages stay in the inbox",
                    self.channel, conversation, problem_of(error),
                )  # fmt: skip
        if self._closing or self._killed:
            return
        if conversation in self._again:
            self._again.discard(conversation)
            self._wake(conversation)
        while self._waiting and len(self._active) < self.concurrency:
            waiting, _ = self._waiting.popitem(last=False)
            self._wake(waiting)

    async def _pause(self, delay: float) -> None:
        """Sleep, but no longer than until ``close`` is called."""
        if self._stopping is None:
            await asyncio.sleep(delay)
            return
        await wait_for_event(self._stopping, delay)

    def _unreachable(self, error: BaseException) -> None:
        if not self._down:
            self._down = True
            logger.error(
                "Channel %s: %s; the inbox waits until it answers again",
                self.channel, StoreUnavailable(self.url, error),
            )  # fmt: skip

    def _back_up(self) -> None:
        if self._down:
            self._down = False
            logger.info(
                "Channel %s: Redis at %s answers again; the inbox goes on",
                self.channel, self.where,
            )  # fmt: skip

    # Handling ---------------------------------------------------------------------------------

    async def _work(self, conversation: str) -> None:
        """Hand the conversation's entries over in order while this process holds its lease."""
        lease = self.keys.lease(conversation)
        if not await self.redis.run(ACQUIRE, 1, lease, self.consumer, self._visibility_ms):
            return  # another replica works on it and reaches this entry in the order
        self._leased.add(conversation)
        renewing = asyncio.ensure_future(self._renew(conversation))
        try:
            await self._drain(conversation, renewing)
        finally:
            renewing.cancel()
            self._current.pop(conversation, None)

    async def _drain(self, conversation: str, renewing: "asyncio.Task[None]") -> None:
        keys = self.keys
        lease, order = keys.lease(conversation), keys.order(conversation)
        assert self._handler is not None
        while not self._closing and not self._killed:
            if renewing.done():
                self._leased.discard(conversation)
                return  # the lease was lost: whoever holds it now goes on
            begun = await self.redis.run(
                BEGIN, 4, lease, order, keys.stream, keys.attempts,
                self.consumer, GROUP, self.consumer, keys.done_prefix,
            )  # fmt: skip
            if begun is None:
                self._leased.discard(conversation)
                return
            status, entry_id, data, attempts, duplicates, missing, dedup = begun
            if duplicates:
                logger.info(
                    "Channel %s: %d message(s) of conversation %s were handled before; not "
                    "handed over again",
                    self.channel, duplicates, conversation,
                )  # fmt: skip
            if missing:
                logger.warning(
                    "Channel %s: %d message(s) of conversation %s were no longer in the stream",
                    self.channel, missing, conversation,
                )  # fmt: skip
            if status == b"empty":
                self._leased.discard(conversation)
                return
            if status != b"entry":
                continue
            entry_id, dedup = _text(entry_id), _text(dedup)
            self._current[conversation] = entry_id
            # To the dead-letter stream, with (attempts, problem).
            dead = functools.partial(self._dead, conversation, entry_id, data, dedup)
            if attempts > self.max_attempts:
                # The replica handling it stopped during the last attempt: the budget is spent.
                problem = "the worker handling it stopped during the last attempt"
                if await dead(attempts - 1, problem) <= 0:
                    return
                continue
            try:
                entry = json.loads(data)
            except ValueError as error:
                if await dead(attempts, problem_of(error)) <= 0:
                    return
                continue
            try:
                await self._handler(entry)
            except RetryLater as later:
                await self._uncount(entry_id)
                logger.info(
                    "Channel %s: message %s of conversation %s handed back by the handler (%s)",
                    self.channel, entry_id, conversation, later,
                )  # fmt: skip
                await self._pause(max(0.0, later.delay))
                continue
            except Exception as error:
                problem = problem_of(error)
                if attempts >= self.max_attempts:
                    if await dead(attempts, problem) <= 0:
                        return
                    continue
                delay = self.retry.delay(attempts)
                logger.warning(
                    "Channel %s: message %s of conversation %s: attempt %d of %d failed (%s); "
                    "next attempt in %.1f s",
                    self.channel, entry_id, conversation, attempts, self.max_attempts,
                    type(error).__name__, delay,
                )  # fmt: skip
                await self._pause(delay)
                continue
            if await self._done(conversation, entry_id, dedup) <= 0:
                return

    async def _done(self, conversation: str, entry_id: str, dedup: str) -> int:
        """Acknowledge a handled entry; retried while Redis is away (for up to the visibility
        timeout), since the entry would otherwise be handled again."""
        keys = self.keys
        done = keys.done_prefix + dedup if dedup and self.dedup_window > 0 else ""
        window_ms = max(1, int(self.dedup_window * 1000))
        args = [self.consumer, GROUP, entry_id, done, window_ms]
        lease, order = keys.lease(conversation), keys.order(conversation)
        self._current.pop(conversation, None)  # handled: renewals need not claim it any more
        left = await self._persist(DONE, [lease, order, keys.stream, keys.attempts], args)
        if left <= 0:
            self._leased.discard(conversation)
        return left

    async def _dead(
        self, conversation: str, entry_id: str, data: Any, dedup: str, attempts: int, problem: str
    ) -> int:
        """Move the entry to the dead-letter stream; the entries left, -1 if the lease is lost."""
        message = _text(data)
        try:
            shown: Any = {k: v for k, v in json.loads(message).items() if k != "event"}
        except (ValueError, AttributeError):
            shown = None
        fields = {
            "channel": self.channel,
            "conversation": conversation,
            "entry": entry_id,
            "kind": "inbound",
            "attempts": str(attempts),
            "status": "",
            "answer": "",
            "problem": problem,
            "reason": "retries exhausted",
            "at": f"{time.time():.3f}",
            "shown": json.dumps(shown, ensure_ascii=False),
            "message": message,
            "dedup": dedup,
        }
        pairs = [part for item in fields.items() for part in item]
        keys = self.keys
        lease, order = keys.lease(conversation), keys.order(conversation)
        self._current.pop(conversation, None)
        left, dead_id = await self._persist(
            DEAD,
            [lease, order, keys.stream, keys.attempts, dead_key(self.prefix)],
            [self.consumer, GROUP, entry_id, *pairs],
        )
        if left <= 0:
            self._leased.discard(conversation)
        if left >= 0:
            logger.error(
                "Channel %s: message %s of conversation %s failed %d time(s) (%s); moved to "
                "the dead-letter stream as %s",
                self.channel, entry_id, conversation, attempts, problem.split(":", 1)[0],
                _text(dead_id) if dead_id else "-",
            )  # fmt: skip
        return left

    async def _persist(self, script: str, keys: List[str], args: List[Any]) -> Any:
        deadline = time.monotonic() + self.visibility_timeout
        delay = 0.05
        while True:
            try:
                return await self.redis.run(script, len(keys), *keys, *args)
            except UNREACHABLE:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)

    async def _uncount(self, entry_id: str) -> None:
        with contextlib.suppress(*UNREACHABLE):
            await self.redis.get().hincrby(self.keys.attempts, entry_id, -1)

    async def _renew(self, conversation: str) -> None:
        """Keep the lease (and the entry handled) while the conversation is worked on; return
        once the lease is lost."""
        keys = [self.keys.lease(conversation), self.keys.stream]
        while True:
            await asyncio.sleep(self.visibility_timeout / 3)
            current = self._current.get(conversation, "")
            try:
                renewed = await self.redis.run(
                    RENEW, 2, *keys, self.consumer, self._visibility_ms, GROUP, self.consumer,
                    current,
                )  # fmt: skip
            except UNREACHABLE:
                continue
            except redis.exceptions.ResponseError:
                continue  # the group was lost; the worker makes it again
            if not renewed:
                # Only news while a handler is under way (else the lease was just given back).
                log = logger.warning if conversation in self._current else logger.debug
                log(
                    "Channel %s: the lease of conversation %s was lost; another replica goes on",
                    self.channel, conversation,
                )  # fmt: skip
                return

    # Shut-down --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop reading, let handlers under way finish within ``grace`` seconds (cancelling
        the rest), give the leases back and hand this consumer's pending entries to the other
        replicas at once; one log line says how many."""
        self._closing = True
        if self._stopping is not None:
            self._stopping.set()
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            _, pending = await asyncio.wait([worker], timeout=self._block + 2.0)
            if pending:
                worker.cancel()
                await asyncio.wait([worker])
        active = dict(self._active)
        cancelled: List[str] = []
        if active:
            _, pending = await asyncio.wait(list(active.values()), timeout=self.grace)
            cancelled = [c for c, task in active.items() if task in pending]
            # The entries under way, whose attempts do not count (they were stopped).
            stopped = [self._current[c] for c in cancelled if c in self._current]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
            for entry_id in stopped:
                await self._uncount(entry_id)
        if self._handler is None:  # never started: nothing to hand back
            await self.redis.close()
            return
        handed, waiting = await self._hand_back()
        if handed is None:
            logger.warning(
                "Channel %s: inbox closed; Redis could not be reached to hand its messages "
                "back: the other replicas take them over after %.0f s",
                self.channel, self.visibility_timeout,
            )  # fmt: skip
        else:
            logger.info(
                "Channel %s: inbox closed; %d message(s) handed back to the other replicas "
                "(%d stopped at the end of the %.1f s grace period), %d waiting in the inbox",
                self.channel, handed, len(cancelled), self.grace, waiting,
            )  # fmt: skip
        await self.redis.close()

    async def _hand_back(self) -> Tuple[Optional[int], int]:
        """Give the leases back and mark this consumer's pending entries idle for the visibility
        timeout, so that another replica claims them at once: (how many, entries waiting), or
        (None, 0) when Redis cannot be reached."""
        handed = 0
        try:
            for conversation in list(self._leased):
                await self.redis.run(RELEASE, 1, self.keys.lease(conversation), self.consumer)
                self._leased.discard(conversation)
            client = self.redis.get()
            start = "-"
            while True:
                pending = await client.xpending_range(
                    self.keys.stream, GROUP, start, "+", BATCH, consumername=self.consumer
                )
                ids = [item["message_id"] for item in pending]
                if ids:
                    await client.xclaim(
                        self.keys.stream, GROUP, self.consumer, 0, ids,
                        idle=self._claim_idle_ms + self._visibility_ms, justid=True,
                    )  # fmt: skip
                    handed += len(ids)
                if len(ids) < BATCH:
                    break
                start = "(" + _text(ids[-1])
            waiting = await client.xlen(self.keys.stream)
        except UNREACHABLE:
            return None, 0
        except redis.exceptions.ResponseError as error:
            if "NOGROUP" in str(error):
                return handed, 0
            raise
        return handed, waiting
