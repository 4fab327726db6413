"""The ``redis`` backend: state in one Redis shared by every replica that names its URL.

``client`` (the shared connection, round trips), ``dedup`` (the de-duplication store),
``queue`` (the one durable queue engine), and its two adapters: ``outbox`` and ``inbox``;
``state`` (what a channel remembers per conversation).
"""

import os
from typing import TYPE_CHECKING, Any, Optional

from generic_connector.stores.redis.client import UNREACHABLE, RedisClient, StoreUnavailable
from generic_connector.stores.redis.dedup import RedisStore
from generic_connector.stores.redis.inbox import RedisInbox
from generic_connector.stores.redis.outbox import RedisOutbox
from generic_connector.stores.redis.state import RedisConversations
from generic_connector.tokens import TokenCache, TokenProvider, TokenUnavailable

if TYPE_CHECKING:
    from generic_connector.config import ChannelConfig


def dedup_store(config: "ChannelConfig") -> RedisStore:
    store = config.store
    return RedisStore(
        config.idempotency.window,
        config.idempotency.max_keys,
        store.url,
        prefix=store.prefix,
        running_timeout=store.running_timeout,
    )


def outbox(config: "ChannelConfig", tokens: Optional[TokenProvider] = None) -> RedisOutbox:
    assert config.outbound is not None  # an outbox is built only for a channel with one
    store = config.store
    # Masked wherever a request is shown (deliveries list/show, logs): every variable read.
    secrets = {name: os.environ[name] for name in config.env_names() if os.environ.get(name)}
    return RedisOutbox(
        config.name,
        config.outbound,
        store.url,
        prefix=store.prefix,
        visibility_timeout=store.visibility_timeout,
        secrets=secrets,
        tokens=tokens,
    )


def inbox(config: "ChannelConfig") -> RedisInbox:
    store = config.store
    return RedisInbox(
        config.name, store.url, store.prefix, visibility_timeout=store.visibility_timeout
    )


def conversations(config: "ChannelConfig") -> RedisConversations:
    return RedisConversations(config.name, config.store.url, config.store.prefix)


def token_cache(config: "ChannelConfig") -> "RedisTokenCache":
    return RedisTokenCache(config.store.url, config.store.prefix)


# KEYS token; ARGV value. Forget the token only if it is still the one refused: another
# replica may have renewed it meanwhile.
DROP_TOKEN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisTokenCache(TokenCache):
    """Tokens under ``<prefix>:token:<channel>:<name>``, expiring when they are to be renewed,
    so that every replica uses the one a replica got."""

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.redis = RedisClient(url)

    async def get(self, key: str) -> Optional[str]:
        value = await self._run("GET", f"{self.prefix}:{key}")
        return value.decode("utf-8") if isinstance(value, bytes) else value

    async def put(self, key: str, value: str, ttl: float) -> None:
        await self._run("SET", f"{self.prefix}:{key}", value, "PX", max(1, int(ttl * 1000)))

    async def drop(self, key: str, value: str) -> None:
        try:
            await self.redis.run(DROP_TOKEN, 1, f"{self.prefix}:{key}", value)
        except UNREACHABLE as error:
            raise TokenUnavailable(str(StoreUnavailable(self.redis.url, error))) from None

    async def _run(self, *command: Any) -> Any:
        try:
            return await self.redis.execute(*command)
        except UNREACHABLE as error:
            raise TokenUnavailable(str(StoreUnavailable(self.redis.url, error))) from None

    async def close(self) -> None:
        await self.redis.close()
