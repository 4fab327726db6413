"""The inbox on Redis: messages stored before they are handled (``request.ack: early``, and
``defer`` on a shared store).

The webhook stores the user messages of an inbound request with ``put`` and is answered once
they are stored; the queue's worker in every replica (``queue.py``: per-conversation order,
leases, attempts, retries, dead letters) hands them to the handler, the pipeline's
``handle_stored``, one conversation's after the other. De-duplication is the pipeline's: a
message handled before (the platform's retry of a webhook whose 2xx was lost, a copy in the same
batch) is answered from the channel's de-duplication store and not handed to Rasa again.

A handler that raises is retried after the backoff; after ``max_attempts`` the message goes to
the dead-letter stream (``kind: inbound``, the error's type and message). A handler that raises
``RetryLater`` (the assistant is not ready) is retried after the delay it gives without spending
an attempt. Log lines name the channel, the conversation, the entry and the error's type, never
the user's text.

Messages stored by earlier versions (a stream at the inbox's key) are moved into the queue when
an inbox starts.
"""

import json
import re
from typing import Any, Awaitable, Callable, Dict, List, Optional

import redis.asyncio as aioredis

from generic_connector.errors import RetryLater
from generic_connector.logtext import get_logger
from generic_connector.retry import Backoff, Outcome
from generic_connector.stores.redis.client import (
    DEFAULT_PREFIX,
    UNREACHABLE,
    StoreUnavailable,
    redis_location,
)
from generic_connector.stores.redis.queue import KEPT, Entry, OnQueue

logger = get_logger(__name__)

Handler = Callable[[Dict[str, Any]], Awaitable[None]]


# KEYS the old stream, ready, pending; ARGV the queue's base, how many. Moves the oldest
# messages of an inbox stream (the layout before the queue) into the queue, in order; deletes
# the stream and its order lists' leftovers once empty. How many were moved.
MIGRATE = """
if redis.call('TYPE', KEYS[1]).ok ~= 'stream' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local found = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[2])
for _, item in ipairs(found) do
  local f = {}
  for i = 1, #item[2], 2 do f[item[2][i]] = item[2][i + 1] end
  local id = string.rep('0', 32 - #item[1]) .. item[1]
  redis.call('RPUSH', ARGV[1] .. ':queue:' .. f['sender'], id .. ' ' .. f['data'])
  redis.call('SADD', KEYS[3], id)
  redis.call('ZADD', KEYS[2], 'NX', now, f['sender'])
  redis.call('DEL', KEYS[1] .. ':order:' .. f['sender'])
  redis.call('XDEL', KEYS[1], item[1])
end
if redis.call('XLEN', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
return #found
"""


_URL_SECRETS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s@]*@|(?P<query>\?[^\s'\"]*)", re.I)


def problem_of(error: BaseException) -> str:
    """The error's type and message (URL credentials and query strings hidden), shortened."""
    text = _URL_SECRETS.sub(
        lambda m: m.group("scheme") + "[hidden]@" if m.group("scheme") else "?[hidden]",
        str(error).strip(),
    )
    if len(text) > KEPT:
        text = text[: KEPT - 1] + "…"
    name = type(error).__name__
    return f"{name}: {text}" if text else name


class RedisInbox(OnQueue):
    """A channel's stored messages in Redis, handed to ``handler`` by a worker in every
    replica: at least once, in order per conversation."""

    what, storing, items, undone = "inbox", "storing inbound messages", "message(s)", "not handled"

    def __init__(
        self,
        channel: str,
        url: str,
        prefix: str = DEFAULT_PREFIX,
        *,
        pool: Optional[aioredis.ConnectionPool] = None,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        **tuning: Any,
    ) -> None:
        """``max_attempts``: handler calls before a message goes to the dead-letter stream;
        ``backoff`` and ``max_backoff``: the delay after a failed attempt (doubling, with
        jitter); ``tuning``: the queue's (``queue.Queue``). ``pool``: a connection pool of
        the inbox's own instead of the process's shared one for ``url``."""
        super().__init__(
            channel, url, prefix, pool, max_attempts, Backoff(backoff, max_backoff), tuning
        )
        self._handler: Optional[Handler] = None

    async def start(self, handler: Handler) -> None:
        """Check that Redis answers (StoreUnavailable, naming host and port, when not), move
        messages an earlier version stored, and start this process's worker."""
        self._handler = handler
        queue = self.queue
        try:
            moved = 0
            while True:
                keys = [queue.base, f"{queue.base}:ready", f"{queue.base}:pending"]
                batch = await self.redis.run(MIGRATE, 3, *keys, queue.base, 500)
                moved += int(batch)
                if batch < 500:
                    break
            waiting = await queue.waiting()
        except UNREACHABLE as error:
            raise StoreUnavailable(self.url, error, "starting the inbox") from None
        logger.info(
            "Channel %s: inbox on Redis at %s; %d conversation(s) with messages waiting%s",
            self.channel, redis_location(self.url), waiting,
            f" ({moved} moved from an earlier version's inbox)" if moved else "",
        )  # fmt: skip
        queue.start()

    async def put(self, entries: List[Dict[str, Any]]) -> None:
        """Store the entries (each a user message as a JSON-serialisable dict with at least
        ``sender``) after their conversations' earlier ones, all or none; StoreUnavailable when
        Redis cannot be reached (then nothing is stored)."""
        if not entries:
            return
        for entry in entries:
            if "sender" not in entry:
                raise ValueError("an inbox entry needs a sender")
        await self.queue.put(
            [(str(entry["sender"]), json.dumps(entry, ensure_ascii=False)) for entry in entries]
        )

    async def process(self, entry: Entry) -> Outcome:
        assert self._handler is not None  # the queue starts in ``start``
        try:
            message = json.loads(entry.payload)
        except ValueError as error:
            return Outcome(False, problem=problem_of(error))
        try:
            await self._handler(message)
        except RetryLater as later:
            return Outcome(False, retry=True, delay=later.delay, counted=False, problem=str(later))
        except Exception as error:
            return Outcome(False, retry=True, problem=problem_of(error))
        return Outcome(True)

    def dead_letter(self, entry: Entry) -> Dict[str, str]:
        try:
            message = json.loads(entry.payload)
            shown: Any = {k: v for k, v in message.items() if k != "event"}
        except (ValueError, AttributeError):
            shown = None
        return {"kind": "inbound", "shown": json.dumps(shown, ensure_ascii=False)}

    async def close(self) -> None:
        """Stop, let handlers under way finish within ``grace`` seconds (the rest are stopped
        and not counted), and hand the conversations back to the other replicas at once."""
        await self.queue.close()
        await self.redis.close()
