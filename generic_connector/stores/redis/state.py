"""Conversation state on Redis (``conversations.ConversationStore``): one key per value,
``<prefix>:conv:<channel>:<kind>:<conversation>``, holding JSON, expiring with its ttl."""

import json
from typing import Any, Dict, Optional

from generic_connector.conversations import ConversationStore
from generic_connector.stores.redis.client import UNREACHABLE, RedisClient, StoreUnavailable

SCAN_COUNT = 500  # keys per SCAN step when listing


class RedisConversations(ConversationStore):
    def __init__(self, channel: str, url: str, prefix: str) -> None:
        self.channel = channel
        self.redis = RedisClient(url)
        self.base = f"{prefix}:conv:{channel}"

    def key(self, kind: str, conversation: str) -> str:
        return f"{self.base}:{kind}:{conversation}"

    async def get(self, kind: str, conversation: str) -> Optional[Any]:
        raw = await self._run("GET", self.key(kind, conversation))
        return json.loads(raw) if raw is not None else None

    async def put(
        self, kind: str, conversation: str, value: Any, ttl: Optional[float] = None
    ) -> None:
        command = ["SET", self.key(kind, conversation), json.dumps(value, ensure_ascii=False)]
        if ttl is not None:
            command += ["PX", str(max(1, int(ttl * 1000)))]
        await self._run(*command)

    async def delete(self, kind: str, conversation: str) -> bool:
        return bool(await self._run("DEL", self.key(kind, conversation)))

    async def all(self, kind: str) -> Dict[str, Any]:
        start = f"{self.base}:{kind}:"
        pattern = _glob_escaped(start) + "*"
        found: Dict[str, Any] = {}
        cursor: Any = 0
        while True:
            cursor, keys = await self._run("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
            for key in keys:
                name = key.decode("utf-8") if isinstance(key, bytes) else key
                value = await self.get(kind, name[len(start) :])
                if value is not None:
                    found[name[len(start) :]] = value
            if int(cursor) == 0:
                return found

    async def _run(self, *command: Any) -> Any:
        try:
            return await self.redis.execute(*command)
        except UNREACHABLE as error:
            raise StoreUnavailable(self.redis.url, error, "conversation state") from None

    async def close(self) -> None:
        await self.redis.close()


def _glob_escaped(text: str) -> str:
    """``text`` with the characters SCAN MATCH reads as a pattern escaped."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)
