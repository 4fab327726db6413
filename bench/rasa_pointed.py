"""BENCHMARK ONLY: Rasa 3.6's connectors pointed at the stand-in platform API.

Not for production use. Each class here sets the one URL that Rasa's connector, or the client
library it uses, fixes to the real platform, on the same client, and changes nothing else;
``FixedTelegramInput`` also carries the smallest fix that lets ``TelegramInput`` answer at all.
Mattermost and Rocket.Chat need nothing here: their connectors take the server's URL in their
configuration.
"""

import asyncio
from typing import Any, Dict, Optional, Type, TypeVar

from aiogram.bot.api import TelegramAPIServer
from aiogram.utils.exceptions import TelegramAPIError
from fbmessenger import MessengerClient
from rasa.core.channels import facebook
from rasa.core.channels.slack import SlackBot, SlackInput
from rasa.core.channels.telegram import TelegramInput, TelegramOutput
from rasa.core.channels.twilio import TwilioInput, TwilioOutput
from rasa.shared.exceptions import RasaException


class ShippedTelegramInput(TelegramInput):
    """BENCHMARK ONLY. ``TelegramInput`` as shipped; the Bot API server is the stand-in.

    ``get_output_channel`` is Rasa's, line for line, but for ``channel.server``. As shipped it
    runs ``set_webhook`` in ``asyncio.run``'s temporary event loop when the channel is
    registered: aiogram's aiohttp session is created in that loop, which is closed when the
    server's loop later uses the session, so every update answers 500
    (``RuntimeError: Event loop is closed``).
    """

    api_url = ""  # set after from_credentials

    def _bot(self) -> TelegramOutput:
        channel = TelegramOutput(self.access_token)
        channel.server = TelegramAPIServer.from_base(self.api_url)  # the stand-in
        return channel

    def get_output_channel(self) -> TelegramOutput:
        channel = self._bot()
        try:
            asyncio.run(channel.set_webhook(url=self.webhook_url))
        except TelegramAPIError as error:
            raise RasaException("Failed to set channel webhook: " + str(error)) from error
        return channel


class FixedTelegramInput(ShippedTelegramInput):
    """BENCHMARK ONLY. The smallest fix: the session ``set_webhook`` opened is closed before
    its temporary loop ends, so aiogram opens a new one in the server's loop. The rest is
    Rasa's: a ``getMe`` call per update (``verify`` is compared with the bot's username),
    ``sendMessage`` per reply, awaited before the webhook is answered."""

    def get_output_channel(self) -> TelegramOutput:
        channel = self._bot()

        async def set_webhook() -> None:
            try:
                await channel.set_webhook(url=self.webhook_url)
            finally:
                await channel.session.close()  # the fix

        try:
            asyncio.run(set_webhook())
        except TelegramAPIError as error:
            raise RasaException("Failed to set channel webhook: " + str(error)) from error
        return channel


class PointedSlackInput(SlackInput):
    """BENCHMARK ONLY. ``SlackInput``; its ``SlackBot``'s ``AsyncWebClient`` posts to the
    stand-in (``base_url``). Rasa makes a new ``SlackBot``, and so a new client, per message."""

    api_url = ""  # set after from_credentials

    def get_output_channel(
        self, channel: Optional[str] = None, thread_id: Optional[str] = None
    ) -> SlackBot:
        bot = super().get_output_channel(channel, thread_id)
        bot.client.base_url = self.api_url
        return bot


class PointedTwilioOutput(TwilioOutput):
    """BENCHMARK ONLY. twilio's ``Client`` sending to the stand-in instead of
    https://api.twilio.com (``get_hostname`` is where the client settles the host)."""

    api_url = ""

    def get_hostname(self, uri: str) -> str:
        return super().get_hostname(uri).replace("https://api.twilio.com", self.api_url, 1)


class PointedTwilioInput(TwilioInput):
    """BENCHMARK ONLY. ``TwilioInput`` whose output channel is ``PointedTwilioOutput``."""

    api_url = ""  # set after from_credentials

    def get_output_channel(self) -> TwilioOutput:
        channel = PointedTwilioOutput(self.account_sid, self.auth_token, self.twilio_number)
        channel.api_url = self.api_url
        return channel


class PointedMessengerClient(MessengerClient):
    """BENCHMARK ONLY. fbmessenger's client with its Graph API URL at the stand-in."""

    graph_base = ""

    def __init__(self, page_access_token: str, **kwargs: Any) -> None:
        super().__init__(page_access_token, **kwargs)
        self.graph_url = self.graph_base


def point_messenger_client(url: str) -> None:
    """BENCHMARK ONLY. ``FacebookInput`` builds a ``Messenger`` and with it a
    ``MessengerClient`` per webhook inside its blueprint, where no subclass reaches: in this
    process, ``rasa.core.channels.facebook`` is given ``PointedMessengerClient`` instead."""
    PointedMessengerClient.graph_base = url
    facebook.MessengerClient = PointedMessengerClient  # type: ignore[misc]


Channel = TypeVar("Channel")


def configured(cls: Type[Channel], credentials: Dict[str, Any], api_url: str = "") -> Channel:
    """The connector as ``credentials.yml`` configures it (``from_credentials``); for the
    classes above, with the stand-in's URL."""
    channel = cls.from_credentials(credentials)  # type: ignore[attr-defined]
    if api_url:
        channel.api_url = api_url
    return channel
