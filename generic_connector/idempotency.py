"""Idempotency: a delivery the channel already handled is acknowledged, not handled again.

A message counts as already handled when a message with the same key (channel, sender,
platform message id, text) was handled within the window. A message whose handling failed is
released, so that the platform's retry is processed. Stores implement ``IdempotencyStore``; each
backend of ``generic_connector.stores`` supplies one. The one here keeps keys in memory.
"""

import asyncio
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

import ujson

from generic_connector import defaults

Replies = List[Dict[str, Any]]


class IdempotencyStore:
    """What the pipeline asks of a de-duplication store."""

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

    async def check(self) -> None:
        """Raise when the store cannot be reached (said at start-up); memory always can."""


class MemoryStore(IdempotencyStore):
    """Keys in this process's memory, each for ``window`` seconds, at most ``max_keys``."""

    def __init__(
        self,
        window: float = defaults.IDEMPOTENCY_WINDOW,
        max_keys: int = defaults.IDEMPOTENCY_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        # key -> (expires, replies as JSON text or None), oldest first; every key gets the same
        # window, so the oldest entry expires first. Expired entries count as absent and make
        # room when max_keys is reached; JSON text rather than lists keeps the garbage
        # collector from walking every stored reply.
        self._done: OrderedDict[str, Tuple[float, Optional[str]]] = OrderedDict()
        # Keys being handled, with the future their duplicates wait for: made only when a
        # duplicate comes, as nearly every key has none (a future per key cost 1.5 µs).
        self._running: Dict[str, Optional[asyncio.Future]] = {}

    def __len__(self) -> int:
        return len(self._done) + len(self._running)

    async def claim(self, key: str) -> Optional[Replies]:
        while key in self._running:
            waiting = self._running[key]
            if waiting is None:
                waiting = self._running[key] = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiting)  # then look again: finished, or released
        done = self._done.get(key)
        if done is not None and done[0] > self.clock():
            return ujson.loads(done[1]) if done[1] else []
        self._running[key] = None
        return None

    async def finish(self, key: str, replies: Replies) -> None:
        self._done.pop(key, None)  # handled again after its window: newest again
        self._done[key] = (self.clock() + self.window, ujson.dumps(replies) if replies else None)
        if len(self._done) > self.max_keys:
            self._done.popitem(last=False)
        self._wake(key)

    async def release(self, key: str) -> None:
        self._wake(key)

    def _wake(self, key: str) -> None:
        running = self._running.pop(key, None)
        if running is not None and not running.done():
            running.set_result(None)
