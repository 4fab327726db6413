"""De-duplication shared by several replicas: the idempotency store on Redis.

A key is claimed with ``SET key running:<token> NX PX running_timeout``: one replica wins and
handles the message, the others wait. While the winner works, the claim is renewed (every third
of ``running_timeout``), so that a slow turn keeps it; a replica that dies stops renewing and
its claim expires after ``running_timeout``. The outcome:

- handled: the key holds ``done:<replies as JSON>`` for the window, and every duplicate (here or
  on another replica, waiting or later) gets those replies;
- failed: the claim is deleted (only while it is still this claim), and a waiting duplicate
  claims the key and handles the message itself;
- the claiming replica died: its claim expires, and a waiting duplicate claims the key and
  handles the message itself.

Waiting is polling with a bounded backoff (10 ms doubling to 250 ms). Keys are the SHA-256 of
the pipeline's key, under ``<prefix>:dedup:``. Every store of a process that names the same URL
shares one connection pool (per event loop). Redis that cannot be reached makes ``claim`` and
``finish`` raise ``StoreUnavailable``, for the pipeline to answer 503 with Retry-After rather
than a 200 for a message it did not keep; ``release``, which runs while a failure is being
reported, logs it instead (the claim then expires after ``running_timeout``).
"""

import asyncio
import hashlib
import os
import time
from typing import Any, Callable, Dict, Optional, Tuple, Type
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
import ujson

from generic_connector import defaults
from generic_connector.errors import Unavailable
from generic_connector.idempotency import IdempotencyStore, Replies
from generic_connector.logtext import get_logger

logger = get_logger(__name__)

DEFAULT_PREFIX = "generic_connector"
CONNECT_TIMEOUT = 2.0  # seconds to open a connection: an outage is reported quickly
SOCKET_TIMEOUT = 5.0  # seconds for a command's answer
RUNNING = b"running:"
DONE = b"done:"
POLL_FIRST = 0.01
POLL_MAX = 0.25

# Errors that mean "Redis cannot be reached (now)", rather than a bug.
UNREACHABLE: Tuple[Type[BaseException], ...] = (
    redis.exceptions.ConnectionError,  # refused, reset, loading (BusyLoadingError)
    redis.exceptions.TimeoutError,
    OSError,
    asyncio.TimeoutError,
)


class StoreUnavailable(Unavailable):
    """Redis cannot be reached. The message names host, port and database, never a password."""

    def __init__(self, url: str, error: Optional[BaseException] = None, doing: str = "") -> None:
        self.where = redis_location(url)
        reason = f": {_reason(error)}" if error is not None else ""
        what = f" ({doing})" if doing else ""
        super().__init__(f"Redis at {self.where} cannot be reached{what}{reason}")


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


def dead_key(prefix: str) -> str:
    """The dead-letter stream, shared by the outbox and the inbox of every channel."""
    return f"{prefix}:dead"


def redis_location(url: str) -> str:
    """``host:port/db`` of a Redis URL (``unix:/path`` for sockets), without user or password."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return "an invalid Redis URL"
    if ":" in host:
        host = f"[{host}]"
    db = parts.path.lstrip("/") or "0"
    return f"{host}:{port}/{db}"


def _reason(error: BaseException) -> str:
    """The error's type and text; redis-py's texts name host and port, never the password."""
    text = str(error).strip()
    name = type(error).__name__
    return f"{name} ({text})" if text else name


# Connection pools: one per URL and event loop. Connections (and the pool's lock) belong to the
# loop that made them, so a process that runs several loops one after the other (tests,
# command-line tools) gets a pool per loop; a server has one loop and so one pool per URL.
_POOLS: Dict[Tuple[str, int], aioredis.ConnectionPool] = {}
_USERS: Dict[Tuple[str, int], int] = {}


def shared_pool(url: str) -> Tuple[Tuple[str, int], aioredis.ConnectionPool]:
    """The process's pool for ``url`` (in the running loop), and its key for ``give_back``."""
    key = (url, id(asyncio.get_running_loop()))
    pool = _POOLS.get(key)
    if pool is None:
        pool = _POOLS[key] = new_pool(url)
        _USERS[key] = 0
    _USERS[key] += 1
    return key, pool


async def give_back(key: Tuple[str, int]) -> None:
    """One user fewer of a shared pool; the last one disconnects it."""
    if key not in _USERS:
        return
    _USERS[key] -= 1
    if _USERS[key] <= 0:
        pool = _POOLS.pop(key)
        del _USERS[key]
        await pool.disconnect()


def new_pool(url: str) -> aioredis.ConnectionPool:
    """A connection pool for ``url`` with short time-outs (the URL's own options win)."""
    options: Dict[str, Any] = {}
    query = urlsplit(url).query
    if "socket_connect_timeout" not in query:
        options["socket_connect_timeout"] = CONNECT_TIMEOUT
    if "socket_timeout" not in query:
        options["socket_timeout"] = SOCKET_TIMEOUT
    return aioredis.ConnectionPool.from_url(url, **options)


_SHAS: Dict[str, str] = {}


class RedisClient:
    """A client on a shared (or given) pool, created in the running loop when first used."""

    def __init__(self, url: str, pool: Optional[aioredis.ConnectionPool] = None) -> None:
        self.url = url
        self._given = pool
        self._shared: Optional[Tuple[str, int]] = None
        self._client: Optional[aioredis.Redis] = None

    def get(self) -> aioredis.Redis:
        if self._client is None:
            pool = self._given
            if pool is None:
                self._shared, pool = shared_pool(self.url)
            self._client = aioredis.Redis(connection_pool=pool)
        return self._client

    async def run(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        """A Lua script by its SHA-1 (sent whole the first time, and after a Redis restart)."""
        sha = _SHAS.get(script)
        if sha is None:
            sha = _SHAS[script] = hashlib.sha1(script.encode("utf-8")).hexdigest()
        client = self.get()
        try:
            return await client.evalsha(sha, numkeys, *keys_and_args)
        except redis.exceptions.NoScriptError:
            return await client.eval(script, numkeys, *keys_and_args)

    async def ping(self) -> None:
        """StoreUnavailable unless Redis answers (for start-up checks)."""
        try:
            await self.get().ping()
        except UNREACHABLE as error:
            raise StoreUnavailable(self.url, error) from None

    async def close(self) -> None:
        self._client = None
        if self._shared is not None:
            key, self._shared = self._shared, None
            await give_back(key)


# KEYS[1] the key; ARGV[1] the claim's value: delete only while it is still this claim.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1] the key; ARGV[1] the claim's value, ARGV[2] milliseconds: renew only this claim.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


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
        # Keys this store claimed and still handles: their claim value and renewing task.
        self._claims: Dict[str, Tuple[bytes, asyncio.Task[None]]] = {}

    def _key(self, key: str) -> str:
        digest = hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).hexdigest()
        return f"{self.prefix}:dedup:{digest}"

    async def check(self) -> None:
        """At start-up: StoreUnavailable, naming the URL, unless Redis answers."""
        await self.redis.ping()

    async def claim(self, key: str) -> Optional[Replies]:
        name = self._key(key)
        token = RUNNING + os.urandom(12).hex().encode()
        running_ms = max(1, int(self.running_timeout * 1000))
        delay = POLL_FIRST
        started = self.clock()
        try:
            client = self.redis.get()
            while True:
                if await client.set(name, token, nx=True, px=running_ms):
                    self._hold(key, name, token)
                    return None
                value = await client.get(name)
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

    def _hold(self, key: str, name: str, token: bytes) -> None:
        previous = self._claims.pop(key, None)
        if previous is not None:
            previous[1].cancel()
        renewing = asyncio.ensure_future(self._renew(name, token))
        self._claims[key] = (token, renewing)

    async def _renew(self, name: str, token: bytes) -> None:
        """Keep a claim while its message is handled; stop once it is no longer ours."""
        interval = self.running_timeout / 3
        running_ms = max(1, int(self.running_timeout * 1000))
        while True:
            await asyncio.sleep(interval)
            try:
                if not await self.redis.run(_RENEW, 1, name, token, running_ms):
                    return
            except UNREACHABLE:
                continue  # the claim may expire meanwhile: another replica may take over
            except Exception:  # a renewal must never surface as an unhandled task error
                logger.exception("renewing a de-duplication claim failed")
                return

    def _let_go(self, key: str) -> Optional[bytes]:
        held = self._claims.pop(key, None)
        if held is None:
            return None
        held[1].cancel()
        return held[0]

    async def finish(self, key: str, replies: Replies) -> None:
        self._let_go(key)
        value = DONE + ujson.dumps(replies).encode("utf-8")
        try:
            await self.redis.get().set(self._key(key), value, px=max(1, int(self.window * 1000)))
        except UNREACHABLE as error:
            raise StoreUnavailable(self.url, error, "recording a handled message") from None

    async def release(self, key: str) -> None:
        token = self._let_go(key)
        if token is None:
            return
        try:
            await self.redis.run(_RELEASE, 1, self._key(key), token)
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
        for key in list(self._claims):
            self._let_go(key)
        await self.redis.close()
