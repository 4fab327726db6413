"""Idempotency: a delivery the channel already handled is acknowledged, not handled again.

A message counts as already handled when a message with the same id, sender and text was
handled within the window. A message whose handling failed is forgotten, so that the
platform's retry is processed. The store sits behind a small interface (``begin``/``finish``)
so that a shared store can serve several replicas; the one here keeps keys in memory.
"""

import asyncio
import time
from collections import deque
from typing import Any, Awaitable, Deque, Dict, List, Optional, Tuple

import ujson

Replies = List[Dict[str, Any]]


class MemoryStore:
    """Keys in memory, each for ``window`` seconds, at most ``max_keys`` of them."""

    def __init__(self, window: float = 3600, max_keys: int = 100_000) -> None:
        self.window = window
        self.max_keys = max_keys
        # key -> (expires, replies). Replies are kept as JSON text: many stored dicts would
        # slow every garbage collection.
        self._done: Dict[str, Tuple[float, str]] = {}
        # (expires, key), oldest first: every key gets the same window, so this is expiry
        # order, and forgetting the oldest costs O(1) however many keys there are.
        self._order: Deque[Tuple[float, str]] = deque()
        self._running: Dict[str, Optional[asyncio.Future[bool]]] = {}

    def begin(self, key: str) -> Optional[Awaitable[Optional[Replies]]]:
        """None when the caller must handle the message (and then call ``finish``).

        Otherwise the key was seen before, and the awaitable gives the bot messages it got
        when it was handled — or None when that delivery failed meanwhile, and the caller
        must handle the message after all. New keys, nearly all of them, take no await.
        """
        if key in self._done or key in self._running:
            return self._earlier(key)
        self._running[key] = None  # a future only once a duplicate has to wait
        return None

    async def _earlier(self, key: str) -> Optional[Replies]:
        # A duplicate that arrives while the first delivery is still being handled waits for
        # it: if that one fails, the duplicate handles the message itself.
        while True:
            done = self._done.get(key)
            if done is not None and done[0] > time.monotonic():
                return ujson.loads(done[1])
            if key not in self._running:
                self._running[key] = None
                return None
            waiting = self._running[key]
            if waiting is None:
                waiting = self._running[key] = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiting)

    def finish(self, key: str, replies: Optional[Replies]) -> None:
        """Record the outcome: ``replies`` when handled, None when handling failed."""
        if replies is not None:
            now = time.monotonic()
            expires = now + self.window
            done, order = self._done, self._order
            done[key] = (expires, ujson.dumps(replies) if replies else "[]")
            order.append((expires, key))
            while order and (order[0][0] <= now or len(done) > self.max_keys):
                expires, old = order.popleft()
                record = done.get(old)
                if record is not None and record[0] == expires:  # else recorded again since
                    del done[old]
        running = self._running.pop(key, None)
        if running is not None and not running.done():
            running.set_result(replies is not None)
