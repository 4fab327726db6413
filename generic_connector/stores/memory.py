"""The ``memory`` backend: state in this process only, lost when it stops."""

from typing import TYPE_CHECKING

from generic_connector.delivery import Delivery
from generic_connector.idempotency import MemoryStore
from generic_connector.outbox import MemoryOutbox
from generic_connector.stores import token_provider
from generic_connector.tokens import MemoryTokenCache

if TYPE_CHECKING:
    from generic_connector.config import ChannelConfig


def dedup_store(config: "ChannelConfig") -> MemoryStore:
    return MemoryStore(config.idempotency.window, config.idempotency.max_keys)


def outbox(config: "ChannelConfig") -> MemoryOutbox:
    assert config.outbound is not None
    return MemoryOutbox(Delivery(config.name, config.outbound, token_provider(config)))


def token_cache(config: "ChannelConfig") -> MemoryTokenCache:
    return MemoryTokenCache()
