"""Idempotency: a delivery the channel already handled is acknowledged, not handled again.

A message counts as already handled when a message with the same key (channel, sender,
platform message id, text) was handled within the window. A message whose handling failed is
released, so that the platform's retry is processed. Stores implement ``IdempotencyStore`` and
are registered by name (``idempotency.store``); the one here keeps keys in memory.
"""

import asyncio
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Type

import ujson

from generic_connector import defaults

Replies = List[Dict[str, Any]]


class IdempotencyStore:
    """What the pipeline asks of a store; subclasses register with ``@register``."""

    name = ""

    async def claim(self, key: str) -> Optional[Replies]:
        """None when the caller must handle the message and then ``finish`` or ``release``.

        Otherwise the key was handled before: the bot messages it got then. A duplicate that
        arrives while the first delivery runs waits for it.
        """
        raise NotImplementedError

    async def finish(self, key: str, replies: Replies) -> None:
        """Remember a handled key with the replies it got, for the window."""
        raise NotImplementedError

    async def release(self, key: str) -> None:
        """Forget a claimed key whose handling failed, so that a retry is handled."""
        raise NotImplementedError

    async def close(self) -> None:
        """Give back what the store holds (connections); the default holds nothing."""


STORES: Dict[str, Type[IdempotencyStore]] = {}


def register(cls: Type[IdempotencyStore]) -> Type[IdempotencyStore]:
    STORES[cls.name] = cls
    return cls


@register
class MemoryStore(IdempotencyStore):
    """Keys in this process's memory, each for ``window`` seconds, at most ``max_keys``."""

    name = "memory"

    def __init__(
        self,
        window: float = defaults.IDEMPOTENCY_WINDOW,
        max_keys: int = defaults.IDEMPOTENCY_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        # key -> (expires, replies as JSON text), oldest first; every key gets the same window,
        # so insertion order is expiry order and forgetting the oldest is O(1).
        self._done: OrderedDict[str, tuple] = OrderedDict()
        # Keys being handled, with the future their duplicates wait for.
        self._running: Dict[str, asyncio.Future[None]] = {}

    def __len__(self) -> int:
        return len(self._done) + len(self._running)

    async def claim(self, key: str) -> Optional[Replies]:
        while True:
            running = self._running.get(key)
            if running is not None:
                await asyncio.shield(running)
                continue  # finished or released meanwhile: look again
            done = self._done.get(key)
            if done is not None and done[0] > self.clock():
                return ujson.loads(done[1])
            self._done.pop(key, None)
            self._running[key] = asyncio.get_running_loop().create_future()
            return None

    async def finish(self, key: str, replies: Replies) -> None:
        now = self.clock()
        self._done.pop(key, None)
        self._done[key] = (now + self.window, ujson.dumps(replies))
        while self._done:
            oldest, (expires, _) = next(iter(self._done.items()))
            if expires > now and len(self._done) <= self.max_keys:
                break
            del self._done[oldest]
        self._wake(key)

    async def release(self, key: str) -> None:
        self._wake(key)

    def _wake(self, key: str) -> None:
        running = self._running.pop(key, None)
        if running is not None and not running.done():
            running.set_result(None)


def build_store(name: str, **options: Any) -> IdempotencyStore:
    """The store registered as ``name`` (the schema allows only registered names)."""
    return STORES[name](**options)
