"""The Rasa channel: request in, mapping, Rasa, response out."""

import itertools
import logging
import os
import re
from typing import Any, Awaitable, Callable, Dict, List, Optional

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from rasa.core.lock_store import LockError
from rasa.shared.exceptions import RasaException
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from generic_connector.config import ChannelConfig, load_channel
from generic_connector.delivery import Delivery
from generic_connector.errors import ConfigError, HTTPError
from generic_connector.idempotency import MemoryStore
from generic_connector.mapping import Extracted, Rendered
from generic_connector.request import IncomingRequest, dumps
from generic_connector.webhook import receive

logger = logging.getLogger(__name__)

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]


class GenericChannelConfigError(RasaException):
    """A generic channel's configuration is invalid; Rasa prints it as one line and exits."""


class GenericOutputChannel(CollectingOutputChannel):
    """Collects the bot's replies under the channel's own name.

    Rasa picks ``channel:`` response variations by the output channel's name, so the
    collector must carry the configured name rather than Rasa's ``collector``.
    """

    def __init__(self, channel_name: str) -> None:
        # All that CollectingOutputChannel.__init__ does (a test holds it to that); one call
        # less on every request.
        self.messages: List[Dict[str, Any]] = []
        self.channel_name = channel_name

    def name(self) -> str:  # type: ignore[override]
        return self.channel_name


class DeliveringOutputChannel(GenericOutputChannel):
    """Also delivers each reply through the platform's API (the mapping's ``outbound``)."""

    def __init__(
        self,
        channel_name: str,
        delivery: Delivery,
        inbound: Optional[Dict[str, Extracted]] = None,
    ) -> None:
        super().__init__(channel_name)
        self.delivery = delivery
        self.inbound = inbound or {}

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        await super().send_response(recipient_id, dict(message))  # Rasa pops keys off it
        outbound = self.delivery.outbound
        requests, problems = outbound.render(message, recipient_id, self.inbound.get(recipient_id))
        for problem in problems:
            logger.error(
                "Channel %s: a reply for conversation %s was not sent: %s",
                self.channel_name, recipient_id, problem,
            )  # fmt: skip
        delivered = self.delivery.schedule(recipient_id, requests)
        if outbound.wait:
            await delivered


class GenericChannel(InputChannel):
    """One front end, configured in credentials.yml and mapping files instead of Python."""

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> "GenericChannel":
        # Rasa sets the level chosen with --debug, --verbose or LOG_LEVEL on its own loggers only.
        logging.getLogger("generic_connector").setLevel(
            logging.getLogger("rasa").getEffectiveLevel()
        )
        try:
            return cls(load_channel(credentials, label="generic channel"))
        except ConfigError as error:
            raise GenericChannelConfigError(
                f"invalid generic channel configuration:\n{error}"
            ) from None

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config
        self.delivery = Delivery(config.name, config.outbound) if config.outbound else None
        remember = config.request.message_id is not None and config.idempotency_window > 0
        self.handled = (
            MemoryStore(config.idempotency_window, config.idempotency_max_keys)
            if remember
            else None
        )

    def name(self) -> str:  # type: ignore[override]
        return self.config.name

    def get_output_channel(self) -> Optional[GenericOutputChannel]:
        """For messages Rasa sends on its own (trigger_intent, reminders): the platform's API."""
        if self.delivery is None:
            return None
        return DeliveringOutputChannel(self.config.name, self.delivery)

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """``GET /`` health, ``POST /webhook`` and the routes the handshakes declare."""
        blueprint_name = "generic_connector_" + re.sub(r"\W", "_", self.config.name)
        webhook = Blueprint(blueprint_name, __name__)

        @webhook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.listener("after_server_stop")
        async def close_delivery(*_: Any) -> None:
            if self.delivery is not None:
                await self.delivery.close()

        def receiver(path: str) -> Callable[[Request], Awaitable[HTTPResponse]]:
            async def receive_request(request: Request) -> HTTPResponse:
                incoming = IncomingRequest(
                    request.body, request.headers, None, request.method, path, source=request
                )
                agent = getattr(request.app.ctx, "agent", None)
                answer = await self.process(incoming, on_new_message, agent)
                return HTTPResponse(
                    answer.body,
                    status=answer.status,
                    headers=answer.headers,
                    content_type=answer.content_type,
                )

            return receive_request

        paths: Dict[str, List[str]] = {}
        for method, path in self.config.routes():
            paths.setdefault(path, []).append(method)
        for index, (path, methods) in enumerate(paths.items()):
            webhook.add_route(receiver(path), path, methods=methods, name=f"receive_{index}")
        return webhook

    async def process(
        self, incoming: IncomingRequest, on_new_message: OnNewMessage, agent: Any = None
    ) -> Rendered:
        """Map the request, hand each message to Rasa in order, render the answer.

        Every refusal and failure becomes a JSON error answer here, in one place.
        """
        try:
            received = receive(self.config, incoming)
            if received.answer is not None:
                return received.answer
            if received.messages and agent is not None and not agent.is_ready():
                # Rasa would drop the message and answer nothing.
                raise HTTPError(
                    503, "the assistant is not ready yet; retry later", {"Retry-After": "5"}
                )
            if self.delivery is None:
                collector = GenericOutputChannel(self.config.name)
            else:
                inbound = {message.sender_id: message for message in received.messages}
                collector = DeliveringOutputChannel(self.config.name, self.delivery, inbound)
            for extracted in received.messages:
                await self._deliver(extracted, collector, on_new_message)
            return received.answer_with(self.config, collector.messages)
        except HTTPError as error:
            body = dumps(error.body()).encode("utf-8")
            return Rendered(body, "application/json", error.status, error.headers)

    async def _deliver(
        self, extracted: Extracted, collector: GenericOutputChannel, on_new_message: OnNewMessage
    ) -> None:
        """Hand a message to Rasa, unless the same delivery was already handled."""
        key = None
        if self.handled is not None and extracted.message_id is not None:
            # The channel's name too: a shared store serves several channels.
            key = "\x1f".join(
                (self.config.name, extracted.sender_id, extracted.message_id, extracted.text)
            )
            seen = self.handled.begin(key)
            earlier = None if seen is None else await seen
            if earlier is not None:
                logger.info(
                    "Channel %s: message %s from sender %s was already handled; "
                    "not handled again",
                    self.config.name, extracted.message_id, extracted.sender_id,
                )  # fmt: skip
                collector.messages.extend(earlier)
                return
        first = len(collector.messages)
        message = UserMessage(
            extracted.text,
            collector,
            extracted.sender_id,
            input_channel=extracted.input_channel,
            message_id=extracted.message_id or f"{_ID_PREFIX}{next(_ID_COUNTER):016x}",
            metadata=extracted.metadata,
        )
        try:
            await on_new_message(message)
        except LockError:
            self._forget(key)
            logger.exception(
                "Channel %s: could not lock the conversation of sender %s "
                "(busy, or lock store down)",
                self.config.name, extracted.sender_id,
            )  # fmt: skip
            raise HTTPError(
                503, "the conversation is busy; retry later", {"Retry-After": "2"}
            ) from None
        except Exception:
            self._forget(key)
            logger.exception(
                "Channel %s: Rasa failed to handle the message from sender %s",
                self.config.name,
                extracted.sender_id,
            )
            raise HTTPError(
                500, "the assistant could not handle the message; retry later"
            ) from None
        except BaseException:  # cancelled: the platform will retry
            self._forget(key)
            raise
        if key is not None:
            # A duplicate gets the same answer: the replies are kept when the answer shows them.
            replies = collector.messages[first:] if self.config.response.reads_messages else []
            self.handled.finish(key, replies)

    def _forget(self, key: Optional[str]) -> None:
        """A failed delivery is not remembered, so that the platform's retry is handled."""
        if key is not None:
            self.handled.finish(key, None)


# Without a platform id Rasa would make up a uuid4 per message; a random prefix per process
# and a counter are as unique (32 hex digits too) at a tenth of the cost.
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count()
