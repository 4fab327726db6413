"""Idempotency: a delivery the channel already handled is acknowledged, not handled again.

A message counts as already handled when a message with the same id, sender and text was
handled within the window. A message whose handling failed is forgotten, so that the
platform's retry is processed. The store sits behind a small interface (``begin``/``finish``)
so that a shared store can serve several replicas; the one here keeps keys in memory.
"""

import asyncio
import time
from collections import deque
from typing import Any, Awaitable, Deque, Dict, List, Optional, Union

import ujson

Replies = List[Dict[str, Any]]


class MemoryStore:
    """Keys in memory, each for ``window`` seconds, at most ``max_keys`` of them."""

    def __init__(self, window: float = 3600, max_keys: int = 100_000) -> None:
        self.window = window
        self.max_keys = max_keys
        # key -> when it expires, or None while its first delivery is being handled.
        self._expires: Dict[str, Optional[float]] = {}
        # key -> the replies, as JSON text, of keys that got any: many stored dicts would slow
        # every garbage collection.
        self._replies: Dict[str, str] = {}
        # expires, key, expires, key, ... oldest first: every key gets the same window, so
        # this is expiry order, and forgetting the oldest costs O(1) however many keys there
        # are. Flat rather than (expires, key) pairs: a tuple less per message.
        self._order: Deque[Union[float, str]] = deque()
        # Futures of first deliveries that duplicates are waiting for.
        self._waiting: Dict[str, asyncio.Future[bool]] = {}

    def __len__(self) -> int:
        return len(self._expires)

    def begin(self, key: str) -> Optional[Awaitable[Optional[Replies]]]:
        """None when the caller must handle the message (and then call ``finish``).

        Otherwise the key was seen before, and the awaitable gives the bot messages it got
        when it was handled — or None when that delivery failed or expired meanwhile, and
        the caller must handle the message after all. New keys take no await.
        """
        if key in self._expires:
            return self._earlier(key)
        self._expires[key] = None
        return None

    async def _earlier(self, key: str) -> Optional[Replies]:
        # A duplicate that arrives while the first delivery is still being handled waits for
        # it: if that one fails, the duplicate handles the message itself.
        while True:
            expires = self._expires.get(key, 0.0)  # 0.0: forgotten after a failure
            if expires is None:
                waiting = self._waiting.get(key)
                if waiting is None:
                    waiting = self._waiting[key] = asyncio.get_running_loop().create_future()
                await asyncio.shield(waiting)
            elif expires > time.monotonic():
                return ujson.loads(self._replies.get(key, "[]"))
            else:
                self._expires[key] = None
                self._replies.pop(key, None)
                return None

    def finish(self, key: str, replies: Optional[Replies]) -> None:
        """Record the outcome: ``replies`` when handled, None when handling failed."""
        expires_of = self._expires
        if replies is None:
            expires_of.pop(key, None)
        else:
            now = time.monotonic()
            expires = expires_of[key] = now + self.window
            if replies:
                self._replies[key] = ujson.dumps(replies)
            order = self._order
            order.append(expires)
            order.append(key)
            while order and (order[0] <= now or len(expires_of) > self.max_keys):
                old_expires, old = order.popleft(), order.popleft()
                if expires_of.get(old) == old_expires:  # else handled again since
                    del expires_of[old]
                    self._replies.pop(old, None)
        waiting = self._waiting.pop(key, None) if self._waiting else None
        if waiting is not None and not waiting.done():
            waiting.set_result(replies is not None)
