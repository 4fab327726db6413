"""Where outbound requests wait for delivery: the outbox the pipeline puts them in.

Outboxes are registered by name; the one here hands requests straight to this process's
``Delivery`` (pooled connections, retries, per-conversation order).
"""

from typing import TYPE_CHECKING, Any, Awaitable, Dict, List, Type

from generic_connector.delivery import Delivery
from generic_connector.outbound import OutboundRequest

if TYPE_CHECKING:  # config imports this module
    from generic_connector.config import ChannelConfig


class Outbox:
    """What the pipeline asks of an outbox; subclasses register with ``@register``."""

    name = ""

    async def put(self, conversation: str, requests: List[OutboundRequest]) -> Awaitable[Any]:
        """Accept a conversation's requests after its earlier ones; awaiting the result waits
        for their delivery. Once ``put`` returns, the requests are the outbox's to deliver."""
        raise NotImplementedError

    async def close(self) -> None:
        """Finish or hand back what is in flight."""

    async def start(self) -> None:
        """Begin delivering (a shared outbox's workers); raise when it cannot be reached."""

    @classmethod
    def for_channel(cls, config: "ChannelConfig") -> "Outbox":
        """The outbox for a channel's ``outbound`` and ``store`` settings."""
        raise NotImplementedError


OUTBOXES: Dict[str, Type[Outbox]] = {}


def register(cls: Type[Outbox]) -> Type[Outbox]:
    OUTBOXES[cls.name] = cls
    return cls


def build_outbox(config: "ChannelConfig") -> Outbox:
    """The outbox registered as the channel's ``store.type``."""
    return OUTBOXES[config.store.type].for_channel(config)


@register
class MemoryOutbox(Outbox):
    """Requests delivered from this process's memory: lost if the process dies."""

    name = "memory"

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    @classmethod
    def for_channel(cls, config: "ChannelConfig") -> "MemoryOutbox":
        assert config.outbound is not None  # an outbox is built only for a channel with one
        return cls(Delivery(config.name, config.outbound))

    async def put(self, conversation: str, requests: List[OutboundRequest]) -> Awaitable[Any]:
        return self.delivery.schedule(conversation, requests)

    async def close(self) -> None:
        await self.delivery.close()
