"""What a webhook request becomes, before and after Rasa, free of Sanic and Rasa.

``receive`` decodes a request and either answers it directly (a handshake) or lists the
user messages for Rasa and the events it ignores; ``Received.answer_with`` renders the answer
from the bot's messages. The channel runs Rasa between the two; the dry run puts sample replies
there.
"""

import logging
from typing import Any, Dict, List, Optional, Tuple

from generic_connector.auth import AuthFailed
from generic_connector.config import ChannelConfig
from generic_connector.errors import HTTPError
from generic_connector.functions import bind, unbind
from generic_connector.mapping import Extracted, IgnoreRule, Rendered
from generic_connector.request import IncomingRequest, decode_body

logger = logging.getLogger(__name__)


class Received:
    """A request taken apart: a direct answer, or messages for Rasa."""

    __slots__ = ("request", "body", "answer", "messages", "ignored")

    def __init__(self, request: IncomingRequest, body: Any, answer: Optional[Rendered] = None):
        self.request = request
        self.body = body
        self.answer = answer
        self.messages: List[Extracted] = []
        self.ignored: List[Tuple[int, str]] = []

    def answer_with(self, config: ChannelConfig, bot_messages: List[Dict[str, Any]]) -> Rendered:
        """The answer for a handled request, from the bot's messages (in delivery order)."""
        sender = self.messages[0].sender_id if self.messages else None
        return config.response.render(bot_messages, self.body, sender, self.request)


def receive(
    config: ChannelConfig, request: IncomingRequest, now: Optional[float] = None
) -> Received:
    """Decode, answer a handshake, or select events, drop ignored ones and map the rest.

    Every event is mapped before any reaches Rasa, so a request that is refused (4xx) has
    delivered nothing. ``now`` replaces the clock for signature time windows (test cases).
    """
    mapping = config.request
    post = request.method == "POST"
    auth = config.auth if post else None
    try:
        if auth is not None and not auth.needs_body:
            auth.check(request, None, now)
        body = {}
        if post:
            body = decode_body(request, mapping.format, mapping.events is not None, config.max_body)
        if auth is not None and auth.needs_body:
            auth.check(request, body, now)
    except AuthFailed as reason:
        logger.warning("Channel %s: request refused: %s", config.name, reason)
        headers = {"WWW-Authenticate": "Basic"} if auth.type == "basic" else None
        raise HTTPError(401, "unauthorized", headers=headers) from None
    binding = bind(request, body) if config.binds_request else None
    try:
        for handshake in config.handshakes:
            if handshake.matches(request.method, request.path, body):
                logger.debug("Channel %s: handshake %r", config.name, handshake.name)
                return Received(request, body, answer=handshake.answer(body))
        if request.path != "/webhook" or not post:
            raise HTTPError(
                400, f"no handshake of this channel matches {request.method} {request.path}"
            )
        received = Received(request, body)
        events = [body] if mapping.events is None else mapping.select_events(body)
        for index, event in enumerate(events):
            mapped = mapping.map(event)
            if type(mapped) is IgnoreRule:
                rule = mapped.name
                logger.info("Channel %s: event %d ignored by rule %r", config.name, index, rule)
                received.ignored.append((index, rule))
            else:
                received.messages.append(mapped)
        return received
    finally:
        if binding is not None:
            unbind(binding)
