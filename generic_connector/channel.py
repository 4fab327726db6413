"""The Rasa channel: request in, mapping, Rasa, response out."""

import logging
import re
from typing import Any, Awaitable, Callable, Dict, Optional

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from rasa.shared.exceptions import RasaException
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from generic_connector.config import ChannelConfig, load_channel
from generic_connector.errors import ConfigError, HTTPError
from generic_connector.request import IncomingRequest, decode_body

logger = logging.getLogger(__name__)


class GenericChannelConfigError(RasaException):
    """A generic channel's configuration is invalid; Rasa prints it as one line and exits."""


class GenericOutputChannel(CollectingOutputChannel):
    """Collects the bot's replies under the channel's own name.

    Rasa picks ``channel:`` response variations by the output channel's name, so the
    collector must carry the configured name rather than Rasa's ``collector``.
    """

    def __init__(self, channel_name: str) -> None:
        super().__init__()
        self.channel_name = channel_name

    def name(self) -> str:  # type: ignore[override]
        return self.channel_name


class GenericChannel(InputChannel):
    """One front end, configured in credentials.yml and mapping files instead of Python."""

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> "GenericChannel":
        try:
            return cls(load_channel(credentials, label="generic channel"))
        except ConfigError as error:
            raise GenericChannelConfigError(
                f"invalid generic channel configuration:\n{error}"
            ) from None

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config

    def name(self) -> str:  # type: ignore[override]
        return self.config.name

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        """Routes: ``GET /`` health and ``POST /webhook`` under ``/webhooks/<name>/``."""
        blueprint_name = "generic_connector_" + re.sub(r"\W", "_", self.config.name)
        webhook = Blueprint(blueprint_name, __name__)

        @webhook.route("/", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @webhook.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            try:
                return await self.handle(request, on_new_message)
            except HTTPError as error:
                return response.json(error.body(), status=error.status, headers=error.headers)

        return webhook

    async def handle(
        self, request: Request, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> HTTPResponse:
        """Decode, map, hand the message to Rasa and render the reply."""
        body = decode_body(IncomingRequest(request.body))
        extracted = self.config.request.extract(body)
        _ensure_agent_ready(request)
        collector = GenericOutputChannel(self.config.name)
        message = UserMessage(
            extracted.text,
            collector,
            extracted.sender_id,
            input_channel=extracted.input_channel,
            message_id=extracted.message_id,
            metadata=extracted.metadata,
        )
        try:
            await on_new_message(message)
        except Exception:
            logger.exception(
                "Channel %s: Rasa failed to handle the message from sender %s",
                self.config.name,
                extracted.sender_id,
            )
            raise HTTPError(
                500, "the assistant could not handle the message; retry later"
            ) from None
        rendered = self.config.response.render(collector.messages, body, extracted.sender_id)
        return HTTPResponse(
            rendered.body, status=rendered.status, content_type=rendered.content_type
        )


def _ensure_agent_ready(request: Request) -> None:
    """Refuse while no model is loaded: Rasa would drop the message and answer nothing."""
    agent = getattr(request.app.ctx, "agent", None)
    if agent is not None and not agent.is_ready():
        raise HTTPError(
            503, "the assistant is not ready yet; retry later", headers={"Retry-After": "5"}
        )
