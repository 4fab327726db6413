"""Presence: ``outbound.presence``, a request sent when a user message reaches the channel —
a typing indicator (Telegram's sendChatAction, Messenger's typing_on), a read receipt
(WhatsApp's ``status: read``) — while the assistant works on the answer.

Best effort by design: one attempt, in the background, with a short time-out; it is neither
stored nor retried (an indicator sent late is wrong), and it never delays or fails the reply. A
failure is logged without URL or headers, as outbound failures are.
"""

import asyncio
from typing import TYPE_CHECKING, Any, Dict, Optional, Set

import aiohttp

from generic_connector import defaults
from generic_connector.delivery import attempt, client_session, describe
from generic_connector.errors import RenderError
from generic_connector.expressions import EvaluationError
from generic_connector.functions import Scope
from generic_connector.logtext import get_logger
from generic_connector.outbound import Outbound, RequestTemplate

if TYPE_CHECKING:
    from generic_connector.mapping import Extracted
    from generic_connector.tokens import TokenProvider

logger = get_logger(__name__)


class Presence:
    """Sends a channel's presence request for each user message, in the background."""

    def __init__(
        self,
        channel: str,
        outbound: Outbound,
        template: RequestTemplate,
        tokens: Optional["TokenProvider"] = None,
        timeout: float = defaults.PRESENCE_TIMEOUT,
    ) -> None:
        self.channel = channel
        self.outbound = outbound
        self.template = template
        self.tokens = tokens
        self.timeout = timeout
        self._session: Optional[aiohttp.ClientSession] = None
        self._tasks: Set[asyncio.Task[None]] = set()

    def announce(self, message: "Extracted", scope: Optional[Scope] = None) -> None:
        """Start sending the presence request for ``message``; returns at once."""
        context: Dict[str, Any] = {
            "message": {"text": message.text, "sender": message.sender_id},
            "recipient": message.sender_id,
            "event": message.event,
            "metadata": message.metadata,
            "reply_to": message.reply_to,
        }
        try:
            request = self.template.render(context, scope)
        except (RenderError, EvaluationError) as error:
            logger.warning(
                "Channel %s: no presence request for conversation %s: %s",
                self.channel, message.sender_id, error,
            )  # fmt: skip
            return
        if not self.outbound.allows(request):
            logger.warning(
                "Channel %s: presence request to host %r not sent: not in outbound.allow_hosts",
                self.channel, request.host,
            )  # fmt: skip
            return
        task = asyncio.ensure_future(self._send(message.sender_id, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, conversation: str, request: Any) -> None:
        if self._session is None or self._session.closed:
            self._session = client_session(self.timeout)
        try:
            if self.tokens is None:
                outcome = await attempt(self._session, request)
            else:
                outcome, _ = await self.tokens.attempt(self._session, request)
        except Exception as error:  # best effort: nothing may escape into the event loop
            logger.info(
                "Channel %s: presence request for conversation %s failed: %s",
                self.channel, conversation, describe(error),
            )  # fmt: skip
            return
        if not outcome.done:
            logger.info(
                "Channel %s: presence request for conversation %s not accepted: %s",
                self.channel, conversation, outcome.problem or f"HTTP {outcome.status}",
            )  # fmt: skip

    async def close(self) -> None:
        """Let requests under way finish (within the time-out), then close the session."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.timeout)
        if self._session is not None:
            await self._session.close()
