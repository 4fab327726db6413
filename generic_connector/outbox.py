"""Where outbound requests wait for delivery: the outbox the pipeline puts them in.

Each backend of ``generic_connector.stores`` supplies one; the one here hands requests straight
to this process's ``Delivery`` (pooled connections, retries, per-conversation order).
"""

from typing import Any, Awaitable, List

from generic_connector.delivery import Delivery
from generic_connector.outbound import OutboundRequest


class Outbox:
    """What the pipeline asks of an outbox."""

    async def put(self, conversation: str, requests: List[OutboundRequest]) -> Awaitable[Any]:
        """Accept a conversation's requests after its earlier ones; awaiting the result waits
        for their delivery. Once ``put`` returns, the requests are the outbox's to deliver."""
        raise NotImplementedError

    async def close(self) -> None:
        """Finish or hand back what is in flight."""

    async def start(self) -> None:
        """Begin delivering (a shared outbox's workers); raise when it cannot be reached."""


class MemoryOutbox(Outbox):
    """Requests delivered from this process's memory: lost if the process dies."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    async def put(self, conversation: str, requests: List[OutboundRequest]) -> Awaitable[Any]:
        return self.delivery.schedule(conversation, requests)

    async def close(self) -> None:
        await self.delivery.close()
