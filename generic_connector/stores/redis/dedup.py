"""De-duplication shared by several replicas: the idempotency store on Redis.

A key is claimed with ``SET key running:<token> NX PX running_timeout``: one replica wins and
handles the message, the others wait. While the winner works, the claim is renewed (every third
of ``running_timeout``, one script for all of the store's claims), so that a slow turn keeps
it; a replica that dies stops renewing and its claim expires after ``running_timeout``. The
outcome:

- handled: the key holds ``done:<replies as JSON>`` for the window, and every duplicate (here or
  on another replica, waiting or later) gets those replies;
- failed: the claim is deleted (only while it is still this claim), and a waiting duplicate
  claims the key and handles the message itself;
- the claiming replica died: its claim expires, and a waiting duplicate claims the key and
  handles the message itself.

Waiting is polling with a bounded backoff (10 ms doubling to 250 ms). Keys are the pipeline's
(a digest of channel, sender, message id and text), under ``<prefix>:dedup:``. Redis that
cannot be reached makes ``claim`` and ``finish`` raise ``StoreUnavailable``, for the pipeline
to answer 503 with Retry-After rather than a 200 for a message it did not keep; ``release``,
which runs while a failure is being reported, logs it instead (the claim then expires after
``running_timeout``).
"""

import asyncio
import hashlib
import itertools
import os
import time
from typing import Callable, Dict, Optional

import redis.asyncio as aioredis
import ujson

from generic_connector import defaults
from generic_connector.idempotency import IdempotencyStore, Replies
from generic_connector.logtext import get_logger
from generic_connector.stores.redis.client import (
    DEFAULT_PREFIX,
    UNREACHABLE,
    RedisClient,
    StoreUnavailable,
)

logger = get_logger(__name__)

RUNNING = b"running:"
DONE = b"done:"
POLL_FIRST = 0.01
POLL_MAX = 0.25

# KEYS[1] the key; ARGV[1] the claim's value: delete only while it is still this claim.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS the keys; ARGV milliseconds, then each key's claim value: renew only these claims.
_RENEW = """
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end
return 0
"""

# Claim values: unique per process (a random part) and per claim (a counter).
_TOKENS = (f"{os.urandom(8).hex()}{n:x}".encode() for n in itertools.count())


class RedisStore(IdempotencyStore):
    """Handled message keys in Redis, shared by every replica that names the same URL."""

    def __init__(
        self,
        window: float = defaults.IDEMPOTENCY_WINDOW,
        max_keys: int = defaults.IDEMPOTENCY_MAX_KEYS,  # unused: Redis expiry bounds the keys
        url: str = "redis://localhost:6379/0",
        prefix: str = DEFAULT_PREFIX,
        running_timeout: float = defaults.RUNNING_TIMEOUT,
        clock: Callable[[], float] = time.time,
        *,
        pool: Optional[aioredis.ConnectionPool] = None,
    ) -> None:
        """``pool``: a pool of the store's own instead of the process's shared one."""
        self.window = window
        self.max_keys = max_keys
        self.url = url
        self.prefix = prefix
        self.running_timeout = running_timeout
        self.clock = clock
        self.redis = RedisClient(url, pool)
        self._running_ms = max(1, int(running_timeout * 1000))
        self._claims: Dict[str, bytes] = {}  # Redis key → claim value, while handled here
        self._renewing: Optional[asyncio.Task[None]] = None

    def _key(self, key: str) -> str:
        """The pipeline's keys are digests already (``pipeline.dedup_key``); a longer one is
        hashed, so that a key's size stays bounded whoever calls."""
        if len(key) > 64:
            key = hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).hexdigest()
        return f"{self.prefix}:dedup:{key}"

    async def check(self) -> None:
        """At start-up: StoreUnavailable, naming the URL, unless Redis answers."""
        await self.redis.ping()

    async def claim(self, key: str) -> Optional[Replies]:
        name = self._key(key)
        token = RUNNING + next(_TOKENS)
        delay = POLL_FIRST
        started = self.clock()
        execute = self.redis.execute
        try:
            while True:
                if await execute("SET", name, token, "NX", "PX", self._running_ms):
                    self._hold(name, token)
                    return None
                value = await execute("GET", name)
                if value is not None and value.startswith(DONE):
                    waited = self.clock() - started
                    if waited > POLL_FIRST:
                        logger.debug("A duplicate waited %.2f s for the first delivery", waited)
                    return ujson.loads(value[len(DONE) :])
                if value is None:
                    continue  # released or expired meanwhile: claim it
                await asyncio.sleep(delay)  # another delivery is handling it: wait
                delay = min(POLL_MAX, delay * 2)
        except UNREACHABLE as error:
            raise StoreUnavailable(self.url, error, "claiming a message id") from None

    def _hold(self, name: str, token: bytes) -> None:
        self._claims[name] = token
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.ensure_future(self._renew())

    async def _renew(self) -> None:
        """Keep the claims of the messages handled here, all in one script, while there are."""
        while self._claims:
            await asyncio.sleep(self.running_timeout / 3)
            names, tokens = list(self._claims), list(self._claims.values())
            if not names:
                return
            try:
                await self.redis.run(_RENEW, len(names), *names, self._running_ms, *tokens)
            except UNREACHABLE:
                continue  # the claims may expire meanwhile: another replica may take over
            except Exception:  # a renewal must never surface as an unhandled task error
                logger.exception("renewing de-duplication claims failed")

    async def finish(self, key: str, replies: Replies) -> None:
        name = self._key(key)
        self._claims.pop(name, None)
        value = DONE + ujson.dumps(replies).encode("utf-8")
        window_ms = max(1, int(self.window * 1000))
        try:
            await self.redis.execute("SET", name, value, "PX", window_ms)
        except UNREACHABLE as error:
            raise StoreUnavailable(self.url, error, "recording a handled message") from None

    async def release(self, key: str) -> None:
        name = self._key(key)
        token = self._claims.pop(name, None)
        if token is None:
            return
        try:
            await self.redis.run(_RELEASE, 1, name, token)
        except UNREACHABLE as error:
            # Called while a failure is being handled: that failure is what the caller reports.
            # The claim is no longer renewed and expires after running_timeout; until then a
            # duplicate waits, then handles the message.
            logger.warning(
                "A failed message's id could not be released (%s); it is handled again after "
                "%.0f s",
                StoreUnavailable(self.url, error), self.running_timeout,
            )  # fmt: skip

    async def close(self) -> None:
        self._claims.clear()
        if self._renewing is not None:
            self._renewing.cancel()
        await self.redis.close()
