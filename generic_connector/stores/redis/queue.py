"""One durable queue on Redis: per-conversation order, leases, attempts, retries, dead letters.

The outbox (replies waiting for the platform's API) and the inbox (messages waiting for the
assistant) are both this queue; each gives it what to do with one entry (``process``) and what
a dead letter shows. Layout under the queue's ``base`` (``<prefix>:outbox:<channel>``,
``<prefix>:inbox:<channel>``):

- ``:queue:<conversation>`` — a list of the conversation's entries, oldest first, each
  ``<id> <payload>``;
- ``:ready`` — a sorted set of conversations with entries, scored by when (Redis time, ms) they
  may next be worked on: now for new work, later while a retry waits or a worker holds them;
- ``:lease:<conversation>`` — the worker holding the conversation, with an expiry of
  ``visibility_timeout``, renewed (with the score) every third of it while the worker lives;
- ``:attempts`` and ``:last`` — per entry: attempts started, how the last one ended;
- ``:pending`` — the ids not yet done (for ``wait``).

A worker takes due conversations in one script (``TAKE``: the lease, the head and its attempt
count, for as many conversations as it has room for), hands the head to ``process``, and with
one more script (``FINISH``) pops it and gets the next head; so a conversation's entries are
worked on in order across replicas, at one round trip per entry. A failed attempt gives the
conversation back, due after the backoff (``RETRY``): no worker sleeps holding a lease. With a
``spacing`` (the outbox's ``outbound.rate``), ``FINISH`` gives the conversation back too, due
that long after (Redis time), also when its list is empty, so that an entry put meanwhile waits
as well (``PUT`` never brings a due time forward); a retry waits at least as long. The pacing
is thus in Redis: shared by replicas, kept across restarts. A
worker that dies stops renewing; after ``visibility_timeout`` another replica takes the
conversation and works on the head again (at least once). Attempts are counted in Redis before
each one, so the budget holds across restarts; an entry that spends it, or that ``process``
refuses for good, moves to the dead-letter stream ``<prefix>:dead`` with its payload (to
requeue it) and a copy the adapter made safe to show. ``REQUEUE`` puts one back.

Redis that cannot be reached makes ``put`` raise ``StoreUnavailable`` (the pipeline answers 503
with Retry-After); the worker logs the outage once and waits for Redis to come back. Scripts run
on one Redis server (not a cluster): they build keys from the queue's base.
"""

import asyncio
import functools
import itertools
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import redis.asyncio as aioredis
import redis.exceptions

from generic_connector import defaults
from generic_connector.logtext import get_logger
from generic_connector.retry import Backoff, Outcome
from generic_connector.stores.redis.client import (
    UNREACHABLE,
    RedisClient,
    StoreUnavailable,
    dead_key,
    redis_location,
)

logger = get_logger(__name__)

ID_LENGTH = 32  # characters of an entry's id, which starts its list element
KEPT = 500  # characters of a platform's answer or an error's text kept for a dead letter
# Errors that mean Redis cannot store anything now (full, read-only replica, failing disk).
REFUSALS = ("OOM", "READONLY", "MISCONF", "NOREPLICAS", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN")


@dataclass(frozen=True)
class Entry:
    """The head of a conversation, handed to ``process``: ``attempts`` includes this one;
    ``last`` is how the previous attempt ended (on whichever replica)."""

    id: str
    conversation: str
    payload: str
    attempts: int
    last: Optional[Outcome] = None


# Scripts ---------------------------------------------------------------------------------------

# The head of a conversation for its lease holder ({1, head, attempts, last}), or, when none is
# left, the lease and the ready entry dropped ({0}). KEYS in every script: ready, attempts,
# last, pending, dead; ARGV[1] the queue's base, ARGV[2] the worker's token.
_NEXT = """
local ready, attempts, last = KEYS[1], KEYS[2], KEYS[3]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function head_of(conversation, lease)
  local head = redis.call('LINDEX', ARGV[1] .. ':queue:' .. conversation, 0)
  if not head then
    redis.call('DEL', lease)
    redis.call('ZREM', ready, conversation)
    return {0}
  end
  local id = string.sub(head, 1, {n})
  return {1, head, redis.call('HINCRBY', attempts, id, 1), redis.call('HGET', last, id) or ''}
end
""".replace("{n}", str(ID_LENGTH))

# ARGV base, token; then per entry conversation, id, element. Every entry after its
# conversation's earlier ones, in one script: all or none.
PUT = (
    _NEXT
    + """
local now = now_ms()
for i = 3, #ARGV, 3 do
  redis.call('RPUSH', ARGV[1] .. ':queue:' .. ARGV[i], ARGV[i + 2])
  redis.call('SADD', KEYS[4], ARGV[i + 1])
  redis.call('ZADD', ready, 'NX', now, ARGV[i])
end
return 1
"""
)

# ARGV base, token, visibility ms, how many. Leases due conversations: per conversation taken,
# {conversation, head, attempts, last}, flattened.
TAKE = (
    _NEXT
    + """
local now = now_ms()
local got = {}
local due = redis.call('ZRANGEBYSCORE', ready, '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]) * 2)
for _, conversation in ipairs(due) do
  if #got >= tonumber(ARGV[4]) * 4 then break end
  local lease = ARGV[1] .. ':lease:' .. conversation
  if redis.call('SET', lease, ARGV[2], 'NX', 'PX', ARGV[3]) then
    local head = head_of(conversation, lease)
    if head[1] == 1 then
      redis.call('ZADD', ready, 'XX', now + tonumber(ARGV[3]), conversation)
      table.insert(got, conversation)
      for i = 2, 4 do table.insert(got, head[i]) end
    end
  end
end
return got
"""
)

# ARGV base, token, conversation, id, spacing ms, then the dead letter's field/value pairs
# (none: done). The entry out of the queue (if still its head: a lost lease's new holder may
# have done it) and, when dead, into the dead-letter stream; then the next head as ``head_of``
# gives it, with the dead letter's id last; {-1} when the lease is no longer this worker's.
# With a spacing, no next head: the conversation is given back, due after the spacing.
FINISH = (
    _NEXT
    + """
local lease = ARGV[1] .. ':lease:' .. ARGV[3]
local mine = redis.call('GET', lease) == ARGV[2]
local dying = #ARGV > 5
if dying and not mine then return {-1} end
local queue = ARGV[1] .. ':queue:' .. ARGV[3]
local head = redis.call('LINDEX', queue, 0)
local dead = ''
if head and string.sub(head, 1, {n}) == ARGV[4] then
  redis.call('LPOP', queue)
  if dying then dead = redis.call('XADD', KEYS[5], '*', unpack(ARGV, 6)) end
end
redis.call('HDEL', attempts, ARGV[4])
redis.call('HDEL', last, ARGV[4])
redis.call('SREM', KEYS[4], ARGV[4])
if not mine then return {-1} end
local spacing = tonumber(ARGV[5])
if spacing > 0 then
  redis.call('DEL', lease)
  redis.call('ZADD', ready, now_ms() + spacing, ARGV[3])
  return {0, '', 0, '', dead}
end
local after = head_of(ARGV[3], lease)
if after[1] == 0 then after = {0, '', 0, ''} end
after[5] = dead
return after
""".replace("{n}", str(ID_LENGTH))
)

# ARGV base, token, conversation, delay ms, id ('' none), how it ended, '1' to not count it.
# Gives the conversation back, due after the delay (or out of the ready set when empty): the
# entries left, or -1 when the lease is no longer this worker's.
RETRY = (
    _NEXT
    + """
local lease = ARGV[1] .. ':lease:' .. ARGV[3]
if redis.call('GET', lease) ~= ARGV[2] then return -1 end
if ARGV[5] ~= '' then
  if ARGV[7] == '1' then
    if redis.call('HINCRBY', attempts, ARGV[5], -1) <= 0 then
      redis.call('HDEL', attempts, ARGV[5])
    end
  else
    redis.call('HSET', last, ARGV[5], ARGV[6])
  end
end
redis.call('DEL', lease)
local left = redis.call('LLEN', ARGV[1] .. ':queue:' .. ARGV[3])
if left == 0 then
  redis.call('ZREM', ready, ARGV[3])
else
  redis.call('ZADD', ready, now_ms() + tonumber(ARGV[4]), ARGV[3])
end
return left
"""
)

# ARGV base, token, visibility ms, then conversations: the leases still this worker's are
# renewed (with their ready score); the others are returned.
RENEW = (
    _NEXT
    + """
local lost = {}
local due = now_ms() + tonumber(ARGV[3])
for i = 4, #ARGV do
  local lease = ARGV[1] .. ':lease:' .. ARGV[i]
  if redis.call('GET', lease) == ARGV[2] then
    redis.call('PEXPIRE', lease, ARGV[3])
    redis.call('ZADD', ready, 'XX', due, ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""
)

# KEYS dead; ARGV stream id, prefix. A dead letter back at the end of its conversation's queue,
# with a new attempt budget; 0 when there is no such entry. (Dead letters written before the
# queues were one engine name no queue: the kind says which.)
REQUEUE = """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return 0 end
local raw = found[1][2]
local f = {}
for i = 1, #raw, 2 do f[raw[i]] = raw[i + 1] end
local base = f['queue']
if not base then
  local kind = f['kind'] == 'inbound' and ':inbox:' or ':outbox:'
  base = ARGV[2] .. kind .. f['channel']
end
local payload = f['payload'] or f['request'] or f['message']
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('RPUSH', base .. ':queue:' .. f['conversation'], f['entry'] .. ' ' .. payload)
redis.call('SADD', base .. ':pending', f['entry'])
redis.call('HDEL', base .. ':attempts', f['entry'])
redis.call('HDEL', base .. ':last', f['entry'])
redis.call('ZADD', base .. ':ready', 'NX', now, f['conversation'])
redis.call('XDEL', KEYS[1], ARGV[1])
return 1
"""


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _last(raw: object) -> Optional[Outcome]:
    try:
        fields = json.loads(raw) if raw else None  # type: ignore[arg-type]
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        return None
    status = fields.get("status")
    return Outcome(
        False,
        retry=True,
        status=status if isinstance(status, int) else None,
        answer=str(fields.get("answer") or ""),
        problem=str(fields.get("problem") or ""),
    )


def _is_refusal(error: redis.exceptions.ResponseError) -> bool:
    return str(error).split(" ", 1)[0].upper() in REFUSALS


# Entry ids: unique per process (a random part) and per entry (a counter); os.urandom per
# entry is a system call.
_IDS = (f"{os.urandom(8).hex()}{n:016x}" for n in itertools.count())


async def wait_for_event(event: asyncio.Event, timeout: float) -> None:
    """Return once ``event`` is set or ``timeout`` seconds have passed.

    Not ``asyncio.wait_for(event.wait(), timeout)``: on Python 3.9 that returns normally when
    a cancellation arrives as the event is set, and the cancelled worker goes on running.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()


# The queue -------------------------------------------------------------------------------------


class Queue:
    """A channel's durable queue in Redis, worked on by a worker in every replica."""

    def __init__(
        self,
        front: "OnQueue",
        channel: str,
        redis: RedisClient,
        base: str,
        prefix: str,
        max_attempts: int,
        backoff: Backoff,
        *,
        visibility_timeout: float = defaults.VISIBILITY_TIMEOUT,
        concurrency: int = 16,
        grace: float = 5.0,
        poll_interval: float = 0.5,
        spacing: float = 0.0,
    ) -> None:
        """``max_attempts``: attempts before an entry goes to the dead letters;
        ``visibility_timeout``: how long a conversation stays with a replica that stopped
        renewing it; ``concurrency``: conversations worked on at once by this process;
        ``grace``: how long ``close`` lets attempts under way finish; ``poll_interval``: how
        often the worker looks for work other replicas stored; ``spacing``: seconds between
        the starts of two attempts of one conversation (``outbound.rate``)."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.front = front
        self.channel = channel
        self.redis = redis
        self.base = base
        self.prefix = prefix
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.visibility_timeout = visibility_timeout
        self.concurrency = concurrency
        self.grace = grace
        self.poll_interval = poll_interval
        self.spacing = max(0.0, spacing)
        self._spacing_ms = int(self.spacing * 1000 + 0.999)  # never less than asked
        # This replica's leases hold this token.
        self.token = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(6).hex()}"
        self._visibility_ms = max(1, int(visibility_timeout * 1000))
        self._keys = [f"{base}:ready", f"{base}:attempts", f"{base}:last", f"{base}:pending"]
        self._keys.append(dead_key(prefix))
        self._worker: Optional[asyncio.Task[None]] = None
        self._renewer: Optional[asyncio.Task[None]] = None
        self._active: Dict[str, asyncio.Task[None]] = {}
        self._current: Dict[str, str] = {}  # conversation → the entry under way
        self._lost: Set[str] = set()  # conversations whose lease another worker took
        # Entry id → the future of the ``wait`` it is part of, and the ids still in the queue.
        self._waiters: Dict[str, Tuple[asyncio.Future[None], Set[str]]] = {}
        self._checked = 0.0  # when entries others worked on were last looked up
        self._wake: Optional[asyncio.Event] = None  # made in the running loop: ``start``
        self._closing = False
        self._killed = False
        self._down = False

    # Storing ----------------------------------------------------------------------------------

    async def put(self, entries: Sequence[Tuple[str, str]]) -> List[str]:
        """Store (conversation, payload) pairs after their conversations' earlier entries, all
        or none; their ids. StoreUnavailable when Redis cannot take them."""
        ids = [next(_IDS) for _ in entries]
        args: List[str] = []
        for entry_id, (conversation, payload) in zip(ids, entries):
            args += [conversation, entry_id, f"{entry_id} {payload}"]
        doing = self.front.storing
        try:
            await self._script(PUT, *args)
        except UNREACHABLE as error:
            raise StoreUnavailable(self.redis.url, error, doing) from None
        except redis.exceptions.ResponseError as error:
            if _is_refusal(error):
                raise StoreUnavailable(self.redis.url, error, doing) from None
            raise
        self.start()
        self._poke()
        return ids

    def wait(self, ids: Sequence[str]) -> "asyncio.Future[None]":
        """A future that completes once the entries have left the queue: done, or dead; by
        whichever replica. It never fails: at ``close`` the futures still waiting complete too,
        as their entries stay in Redis for the other replicas."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not ids or self._closing:
            future.set_result(None)
            return future
        waiter = (future, set(ids))
        for entry_id in ids:
            self._waiters[entry_id] = waiter
        return future

    async def waiting(self) -> int:
        """Conversations with entries in the queue (for the start-up log line)."""
        try:
            return int(await self.redis.execute("ZCARD", self._keys[0]))
        except UNREACHABLE as error:
            raise StoreUnavailable(self.redis.url, error) from None

    async def _script(self, script: str, *args: object) -> Any:
        return await self.redis.run(
            script, len(self._keys), *self._keys, self.base, self.token, *args
        )

    # The worker -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start this replica's worker (``put`` starts it too when nobody did)."""
        if self._worker is None and not self._closing and not self._killed:
            self._wake = asyncio.Event()
            self._worker = asyncio.ensure_future(self._run())

    def _poke(self) -> None:
        """Look for work now rather than at the next poll."""
        if self._wake is not None:
            self._wake.set()

    @property
    def worker(self) -> Optional["asyncio.Task[None]"]:
        """This replica's worker (``kill`` stops it as a dying process would)."""
        return self._worker

    def kill(self) -> None:
        """Stop at once, as if the process had died: attempts stop where they are, leases are
        left to expire. A flag as well as a cancellation: redis-py can lose a cancellation
        that arrives during a command, and the worker would go on."""
        self._killed = True
        for task in [self._worker, self._renewer, *self._active.values()]:
            if task is not None:
                task.cancel()

    async def _run(self) -> None:
        assert self._wake is not None
        try:
            while not self._closing and not self._killed:
                self._wake.clear()
                try:
                    await self._take()
                    if self._waiters:
                        await self._check_waiters()
                    self._back_up()
                except UNREACHABLE as error:
                    self._unreachable(error)
                except Exception as error:
                    logger.error(
                        "Channel %s: the %s worker failed (%s); it goes on",
                        self.channel, self.front.what, type(error).__name__,
                    )  # fmt: skip
                await wait_for_event(self._wake, self.poll_interval)
        except asyncio.CancelledError:
            if not self._closing:
                self.kill()  # attempts stop where they are, leases expire
            raise

    async def _take(self) -> None:
        free = self.concurrency - len(self._active)
        if free <= 0:
            return
        got = await self._script(TAKE, self._visibility_ms, free)
        assert isinstance(got, list)
        for number in range(0, len(got), 4):
            conversation = _text(got[number])
            if conversation in self._active:
                continue  # its lease had expired under a renewal that failed; it is ours again
            head = self._entry(conversation, got[number + 1 : number + 4])
            task = asyncio.ensure_future(self._work(head))
            self._active[conversation] = task
            task.add_done_callback(functools.partial(self._worked, conversation))
        if self._active and (self._renewer is None or self._renewer.done()):
            self._renewer = asyncio.ensure_future(self._renew())

    def _entry(self, conversation: str, head: Sequence[object]) -> Entry:
        raw, attempts, last = head
        assert isinstance(raw, bytes) and isinstance(attempts, int)
        return Entry(
            raw[:ID_LENGTH].decode("ascii"),
            conversation,
            raw[ID_LENGTH + 1 :].decode("utf-8"),
            attempts,
            _last(last),
        )

    def _worked(self, conversation: str, task: "asyncio.Task[None]") -> None:
        if self._active.get(conversation) is task:
            del self._active[conversation]
        self._lost.discard(conversation)
        if not self._closing:
            self._current.pop(conversation, None)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            if isinstance(error, UNREACHABLE):
                self._unreachable(error)
            else:
                logger.error(
                    "Channel %s: conversation %s failed unexpectedly in the %s (%s); its "
                    "entries stay there",
                    self.channel, conversation, self.front.what, type(error).__name__,
                )  # fmt: skip
        self._poke()

    async def _work(self, entry: Optional[Entry]) -> None:
        """The conversation's entries in order, while this worker holds its lease. The entry
        under way stays in ``_current`` until it is finished: ``close`` does not count an
        attempt it stopped, or one that was never made."""
        while entry is not None:
            conversation = entry.conversation
            self._current[conversation] = entry.id
            if self._closing or self._killed or conversation in self._lost:
                return  # a lost lease: whoever holds it now goes on
            if entry.attempts > self.max_attempts:
                # A replica died during the last attempt: the budget is spent.
                last = entry.last or Outcome(False, retry=True)
                problem = last.problem or self.front.stopped
                outcome = Outcome(
                    False, True, status=last.status, answer=last.answer, problem=problem
                )
                entry = await self._dead(entry, entry.attempts - 1, outcome)
                continue
            outcome = await self.front.process(entry)
            if outcome.done:
                entry, _ = await self._finish(entry)
            elif not outcome.counted or (outcome.retry and entry.attempts < self.max_attempts):
                await self._retry(entry, outcome)
                entry = None
            else:
                entry = await self._dead(entry, entry.attempts, outcome)
        self._current.pop(conversation, None)

    async def _finish(self, entry: Entry, *dead: str) -> Tuple[Optional[Entry], str]:
        """Pop the head (into the dead letters when ``dead`` gives its fields): the next head
        (None when there is none or the lease was lost) and the dead letter's id. Retried
        while Redis is away (for up to the visibility timeout): the entry would otherwise be
        worked on again."""
        deadline = time.monotonic() + self.visibility_timeout
        delay = 0.05
        while True:
            try:
                after = await self._script(
                    FINISH, entry.conversation, entry.id, self._spacing_ms, *dead
                )
                break
            except UNREACHABLE:
                if time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(1.0, delay * 2)
        self._left(entry.id)
        if self._spacing_ms and after[0] == 0:  # given back, due after the spacing
            asyncio.get_running_loop().call_later(self.spacing, self._poke)
        dead_id = _text(after[4]) if len(after) > 4 and after[4] else ""
        if after[0] != 1:
            return None, dead_id
        return self._entry(entry.conversation, after[1:4]), dead_id

    async def _dead(self, entry: Entry, attempts: int, outcome: Outcome) -> Optional[Entry]:
        """Move the head to the dead letters; the next head, as ``_finish``."""
        fields = {
            "channel": self.channel,
            "conversation": entry.conversation,
            "entry": entry.id,
            "queue": self.base,
            "attempts": str(attempts),
            "status": "" if outcome.status is None else str(outcome.status),
            "answer": outcome.answer[:KEPT],
            "problem": outcome.problem[:KEPT],
            "reason": "retries exhausted" if outcome.retry else "not retried",
            "at": f"{time.time():.3f}",
            "payload": entry.payload,
            **self.front.dead_letter(entry),
        }
        following, dead_id = await self._finish(
            entry, *[p for item in fields.items() for p in item]
        )
        if dead_id:
            logger.error(
                "Channel %s: %s entry %s of conversation %s failed after %d attempt(s) (%s); "
                "moved to the dead-letter stream as %s",
                self.channel, self.front.what, entry.id, entry.conversation, attempts,
                outcome.problem.split(":", 1)[0], dead_id,
            )  # fmt: skip
        return following

    async def _retry(self, entry: Entry, outcome: Outcome) -> None:
        """Give the conversation back, due after the backoff (or the delay asked for)."""
        if outcome.counted:
            delay = self.backoff.delay(entry.attempts, outcome.delay)
            logger.warning(
                "Channel %s: %s entry %s of conversation %s: attempt %d of %d failed (%s); next "
                "attempt in %.1f s",
                self.channel, self.front.what, entry.id, entry.conversation, entry.attempts,
                self.max_attempts, outcome.problem.split(":", 1)[0], delay,
            )  # fmt: skip
        else:
            delay = max(0.0, outcome.delay or 0.0)
            logger.info(
                "Channel %s: %s entry %s of conversation %s handed back (%s)",
                self.channel, self.front.what, entry.id, entry.conversation, outcome.problem,
            )  # fmt: skip
        delay = max(delay, self.spacing)  # the attempt that failed was a request too
        uncount = "" if outcome.counted else "1"
        await self._script(
            RETRY, entry.conversation, int(delay * 1000), entry.id, outcome.stored(), uncount
        )
        if delay < self.poll_interval:
            asyncio.get_running_loop().call_later(delay, self._poke)

    async def _renew(self) -> None:
        """Keep the leases of the conversations worked on, all in one script, while there are."""
        while self._active and not self._killed:
            await asyncio.sleep(self.visibility_timeout / 3)
            held = list(self._active)
            if not held:
                return
            try:
                lost = await self._script(RENEW, self._visibility_ms, *held)
            except UNREACHABLE:
                continue
            assert isinstance(lost, list)
            for conversation in map(_text, lost):
                if conversation in self._active:
                    self._lost.add(conversation)
                    logger.warning(
                        "Channel %s: the %s lease of conversation %s was lost; another replica "
                        "goes on",
                        self.channel, self.front.what, conversation,
                    )  # fmt: skip

    # Waiters ----------------------------------------------------------------------------------

    def _left(self, entry_id: str) -> None:
        """An entry left the queue: complete its waiter's future if it was the last."""
        future, ids = self._waiters.pop(entry_id, (None, set()))
        ids.discard(entry_id)
        if future is not None and not ids and not future.done():
            future.set_result(None)

    async def _check_waiters(self) -> None:
        """Complete the futures of entries another replica finished (every poll interval)."""
        now = time.monotonic()
        if now - self._checked < self.poll_interval:
            return
        self._checked = now
        ids = list(self._waiters)
        ask = functools.partial(self.redis.execute, "SISMEMBER", self._keys[3])
        pending = await asyncio.gather(*map(ask, ids))  # one round trip
        for entry_id, still in zip(ids, pending):
            if not still:
                self._left(entry_id)

    # Outages ----------------------------------------------------------------------------------

    def _unreachable(self, error: BaseException) -> None:
        if not self._down:
            self._down = True
            logger.error(
                "Channel %s: %s; the %s waits until it answers again",
                self.channel, StoreUnavailable(self.redis.url, error), self.front.what,
            )  # fmt: skip

    def _back_up(self) -> None:
        if self._down:
            self._down = False
            logger.info(
                "Channel %s: Redis at %s answers again; the %s goes on",
                self.channel, redis_location(self.redis.url), self.front.what,
            )  # fmt: skip

    # Shut-down --------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop taking work, let attempts under way finish within ``grace`` seconds (the rest
        are stopped and not counted), and give the conversations back: due at once for the
        other replicas. One log line says what was left."""
        self._closing = True
        self._poke()
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            await asyncio.wait([worker])
        active = dict(self._active)
        _, pending = await asyncio.wait(active.values(), timeout=self.grace) if active else ((), ())
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        if self._renewer is not None:
            self._renewer.cancel()
        handed = 0
        try:
            for conversation in active:  # the entry under way (or next) is not counted
                entry_id = self._current.get(conversation, "")
                uncount = "1" if entry_id else ""
                left = await self._script(RETRY, conversation, 0, entry_id, "", uncount)
                handed += left >= 0
                if left > 0:
                    logger.warning(
                        "Channel %s: shutting down with %d %s of conversation %s %s; they stay "
                        "in the %s for the other replicas (or the next start)",
                        self.channel, left, self.front.items, conversation,
                        self.front.undone, self.front.what,
                    )  # fmt: skip
            waiting = await self.waiting()
        except (StoreUnavailable, *UNREACHABLE):  # type: ignore[misc]
            logger.warning(
                "Channel %s: %s closed; Redis could not be reached to hand its conversations "
                "back: the other replicas take them over after %.0f s",
                self.channel, self.front.what, self.visibility_timeout,
            )  # fmt: skip
        else:
            if handed or waiting:
                logger.info(
                    "Channel %s: %s closed; %d conversation(s) handed back to the other "
                    "replicas (%d stopped at the end of the %.1f s grace period), %d "
                    "conversation(s) waiting in Redis",
                    self.channel, self.front.what, handed, len(pending), self.grace, waiting,
                )  # fmt: skip
        for future, _ in list(self._waiters.values()):
            if not future.done():
                future.set_result(None)
        self._waiters.clear()


class OnQueue:
    """The outbox and the inbox: a channel's queue under ``<prefix>:<what>:<channel>``, and
    what to do with its entries (``process``) and show of a dead one (``dead_letter``)."""

    what: str  # "outbox", "inbox": the keys' and the log lines' word
    storing: str  # what ``put`` does, for StoreUnavailable: "storing inbound messages"
    items: str  # "request(s)", "message(s)"
    undone: str  # "not delivered", "not handled"
    # After an attempt died with its worker on the last one.
    stopped = "the worker handling it stopped during the last attempt"

    def __init__(
        self,
        channel: str,
        url: str,
        prefix: str,
        pool: Optional[aioredis.ConnectionPool],
        max_attempts: int,
        backoff: Backoff,
        tuning: Dict[str, Any],
    ) -> None:
        """``tuning``: the queue's ``visibility_timeout``, ``concurrency``, ``grace`` and
        ``poll_interval`` (``Queue``), where they differ from its defaults."""
        self.channel = channel
        self.url = url
        self.redis = RedisClient(url, pool)
        base = f"{prefix}:{self.what}:{channel}"
        self.queue = Queue(self, channel, self.redis, base, prefix, max_attempts, backoff, **tuning)

    async def process(self, entry: Entry) -> Outcome:
        raise NotImplementedError

    def dead_letter(self, entry: Entry) -> Dict[str, str]:
        raise NotImplementedError

    @property
    def worker(self) -> Optional["asyncio.Task[None]"]:
        """This process's worker (``kill`` stops it as a dying process would)."""
        return self.queue.worker

    def kill(self) -> None:
        """Stop at once, as if the process had died (``Queue.kill``)."""
        self.queue.kill()
