"""The Redis connection every part of the ``redis`` backend shares, and what goes wrong with it.

Every part of a process that names the same URL shares one connection pool (per event loop).
``RedisClient.execute`` sends a command together with the others issued in the same turn of the
event loop, as one pipeline: one round trip for all of them (redis-py has no such mode). Under
load the webhooks of many requests claim, store and finish at about the same time, so that a
handled message costs far fewer round trips than it sends commands; the process counts both
(``metrics.REDIS``, shown in ``/metrics`` and by ``bench/store.py``).

Redis that cannot be reached raises one of ``UNREACHABLE``; the parts turn it into
``StoreUnavailable``, which names host, port and database, never a password, and which the
pipeline answers with 503 and Retry-After.
"""

import asyncio
import hashlib
from typing import Any, Dict, List, Optional, Tuple, Type
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions

from generic_connector.errors import Unavailable
from generic_connector.metrics import REDIS

DEFAULT_PREFIX = "generic_connector"
CONNECT_TIMEOUT = 2.0  # seconds to open a connection: an outage is reported quickly
SOCKET_TIMEOUT = 5.0  # seconds for a command's answer

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

Command = Tuple[Any, ...]


class RedisClient:
    """A client on a shared (or given) pool, created in the running loop when first used."""

    def __init__(self, url: str, pool: Optional[aioredis.ConnectionPool] = None) -> None:
        self.url = url
        self._given = pool
        self._shared: Optional[Tuple[str, int]] = None
        self._client: Optional[aioredis.Redis] = None
        self._batch: List[Tuple[Command, asyncio.Future[Any]]] = []

    def get(self) -> aioredis.Redis:
        if self._client is None:
            pool = self._given
            if pool is None:
                self._shared, pool = shared_pool(self.url)
            self._client = aioredis.Redis(connection_pool=pool)
        return self._client

    async def execute(self, *command: Any) -> Any:
        """One command's answer; it goes out with the others issued in this turn of the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._batch.append((command, future))
        if len(self._batch) == 1:
            loop.call_soon(self._send_batch)
        return await future

    async def run(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        """A Lua script by its SHA-1 (sent whole the first time, and after a Redis restart)."""
        sha = _SHAS.get(script)
        if sha is None:
            sha = _SHAS[script] = hashlib.sha1(script.encode("utf-8")).hexdigest()
        try:
            return await self.execute("EVALSHA", sha, numkeys, *keys_and_args)
        except redis.exceptions.NoScriptError:
            return await self.execute("EVAL", script, numkeys, *keys_and_args)

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        asyncio.ensure_future(self._send(batch))

    async def _send(self, batch: List[Tuple[Command, "asyncio.Future[Any]"]]) -> None:
        """The batch on one connection, written at once, the answers read in order. Not
        redis-py's pipeline object: the callers take Redis' answers as they are, and the
        pipeline's per-command bookkeeping cost a tenth of a request on the Redis route."""
        REDIS.round_trips += 1
        REDIS.commands += len(batch)
        pool = self.get().connection_pool
        results: List[Any] = []
        try:
            connection = await pool.get_connection("_")
            try:
                packed = connection.pack_commands([command for command, _ in batch])
                await connection.send_packed_command(packed, check_health=False)
                for _ in batch:
                    try:
                        results.append(await connection.read_response())
                    except redis.exceptions.ResponseError as error:
                        results.append(error)
            finally:
                await pool.release(connection)
        except BaseException as error:  # unreachable, or cancelled: every caller hears of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        for (_, future), result in zip(batch, results):
            if future.done():
                continue  # its caller was cancelled
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def ping(self) -> None:
        """StoreUnavailable unless Redis answers (for start-up checks)."""
        try:
            await self.execute("PING")
        except UNREACHABLE as error:
            raise StoreUnavailable(self.url, error) from None

    async def close(self) -> None:
        self._client = None
        if self._shared is not None:
            key, self._shared = self._shared, None
            await give_back(key)
