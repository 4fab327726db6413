"""What a channel remembers about each conversation, shared by replicas on a shared store.

A conversation's state is a few small JSON values, each of a ``kind``: its reply address (the
thread and room replies go to, also for messages Rasa sends on its own), a pause (a human agent
answers instead of the bot), the buttons last offered (a numbered answer maps back to their
payload). Each backend of ``generic_connector.stores`` supplies a ``ConversationStore``: this
process's memory here, Redis in ``stores.redis.state``, where every replica sees the same.
"""

import time
from typing import Any, Callable, Dict, Optional, Tuple

# The kinds of state, one place: what each holds is documented where it is written.
REPLY_TO = "reply_to"
PAUSED = "paused"
OFFERED = "offered"


class ConversationStore:
    """Small JSON values by (kind, conversation) for one channel; ``ttl`` in seconds (None:
    kept until deleted). Raise ``errors.Unavailable`` when the store cannot be reached."""

    async def get(self, kind: str, conversation: str) -> Optional[Any]:
        raise NotImplementedError

    async def put(
        self, kind: str, conversation: str, value: Any, ttl: Optional[float] = None
    ) -> None:
        raise NotImplementedError

    async def delete(self, kind: str, conversation: str) -> bool:
        """Forget a value; whether there was one."""
        raise NotImplementedError

    async def all(self, kind: str) -> Dict[str, Any]:
        """Every conversation's value of a kind (for operators: paused conversations)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Give back connections."""


class MemoryConversations(ConversationStore):
    """State in this process's memory; ``clock`` is ``time.monotonic`` unless given. At most
    ``max_keys`` values are kept: the oldest are forgotten first."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.clock = clock
        self.max_keys = max_keys
        self._values: Dict[Tuple[str, str], Tuple[Any, Optional[float]]] = {}

    async def get(self, kind: str, conversation: str) -> Optional[Any]:
        kept = self._values.get((kind, conversation))
        if kept is None:
            return None
        value, expires = kept
        if expires is not None and expires <= self.clock():
            del self._values[(kind, conversation)]
            return None
        return value

    async def put(
        self, kind: str, conversation: str, value: Any, ttl: Optional[float] = None
    ) -> None:
        self._values.pop((kind, conversation), None)  # re-inserted: the newest
        if len(self._values) >= self.max_keys:
            del self._values[next(iter(self._values))]
        expires = self.clock() + ttl if ttl is not None else None
        self._values[(kind, conversation)] = (value, expires)

    async def delete(self, kind: str, conversation: str) -> bool:
        return self._values.pop((kind, conversation), None) is not None

    async def all(self, kind: str) -> Dict[str, Any]:
        found = {}
        for own, conversation in list(self._values):
            value = await self.get(own, conversation)
            if own == kind and value is not None:
                found[conversation] = value
        return found
