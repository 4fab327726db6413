"""The ``memory`` backend: state in this process only, lost when it stops."""

from typing import TYPE_CHECKING, Optional

from generic_connector.conversations import MemoryConversations
from generic_connector.delivery import Delivery
from generic_connector.idempotency import MemoryStore
from generic_connector.outbox import MemoryOutbox
from generic_connector.tokens import MemoryTokenCache, TokenProvider

if TYPE_CHECKING:
    from generic_connector.config import ChannelConfig


def dedup_store(config: "ChannelConfig") -> MemoryStore:
    return MemoryStore(config.idempotency.window, config.idempotency.max_keys)


def outbox(config: "ChannelConfig", tokens: Optional[TokenProvider] = None) -> MemoryOutbox:
    assert config.outbound is not None
    return MemoryOutbox(Delivery(config.name, config.outbound, tokens))


def token_cache(config: "ChannelConfig") -> MemoryTokenCache:
    return MemoryTokenCache()


def conversations(config: "ChannelConfig") -> MemoryConversations:
    return MemoryConversations()
