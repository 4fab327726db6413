"""One Sanic server with a stand-in agent, serving side by side:

- ``POST /bare``: a bare Sanic route answering what the assistant would;
- ``POST /bare/telegram``: the same for a Telegram update (what its size costs by itself);
- ``POST /hand/telegram``: a Telegram webhook written by hand doing the Telegram mapping's
  work (token check, fields, metadata, update ids remembered);
- ``POST /webhooks/rest/webhook``: Rasa's hand-written ``RestInput``;
- ``POST /webhooks/restlike/webhook``: the generic channel with ``mappings/rest.yml``;
- ``POST /webhooks/telegram/webhook``: the generic channel with ``mappings/telegram.yml``
  (secret-token check on, its outbound section removed: no Bot API call), and
  ``/webhooks/telegram_once_off/webhook`` the same without remembering update ids;
- with ``BENCH_API_URL`` (the stand-in platform API, ``bench/standin_api.py``) set, the peer
  routes of ``bench/peers.py``: Rasa's own Telegram, Slack, Twilio, Facebook, Mattermost and
  Rocket.Chat connectors under ``/rasa/<name>/webhook`` and the generic channels with the
  shipped mappings under ``/webhooks/peer_<platform>/webhook``, replying to the stand-in;
- with ``BENCH_REDIS_URL`` set too, ``store_channels()``: ``telegram.yml`` in memory, on
  Redis and acknowledged early, under ``/webhooks/store_<kind>/webhook``.

The agent answers every message with one text, as a trained bot would, without NLU cost.
Usage: ``python bench/server.py PORT [CHANNELS]`` (CHANNELS: how many generic REST channels).
"""

import asyncio
import copy
import gc
import hmac
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TELEGRAM_BOT_TOKEN", "123456:bench")
os.environ.setdefault("TELEGRAM_SECRET_TOKEN", "bench-secret-token")

import ujson  # noqa: E402
from rasa.core.channels.channel import CollectingOutputChannel, UserMessage, register  # noqa: E402
from rasa.core.channels.rest import RestInput  # noqa: E402
from sanic import Sanic, response  # noqa: E402
from sanic.request import Request  # noqa: E402

from generic_connector.channel import GenericChannel  # noqa: E402
from generic_connector.config import load_channel, load_yaml  # noqa: E402

REPLY = "Hello! I am the generic connector demo."


# Channels whose messages the stand-in agent takes this long over (an agent with slow actions).
SLOW_CHANNELS = {"store_early": 2.0}


class StandInAgent:
    """What ``app.ctx.agent`` offers the channels, answering one text per message."""

    def is_ready(self) -> bool:
        return True

    async def handle_message(self, message: UserMessage) -> List[Dict[str, Any]]:
        slow = SLOW_CHANNELS.get(message.output_channel.name())
        if slow:
            await asyncio.sleep(slow)
        await message.output_channel.send_response(message.sender_id, {"text": REPLY})
        return []


def telegram_channel(remember_updates: bool = True) -> GenericChannel:
    # Synchronous answer only: the benchmark measures the webhook, not the Bot API.
    document = dict(load_yaml(ROOT / "mappings" / "telegram.yml"))
    document.pop("outbound")
    if not remember_updates:
        document.update(name="telegram_once_off", idempotency={"window": 0})
    return GenericChannel(load_channel(document))


def store_channels(api_url: str) -> List[GenericChannel]:
    """``telegram.yml`` delivering to the stand-in Bot API three ways: in memory
    (``store_memory``), with the Redis store and outbox (``store_redis``, at
    ``BENCH_REDIS_URL``) and acknowledged early (``store_early``, its agent taking 2 s).
    Each sends to a path of its own at the stand-in, which counts them apart."""
    channels = []
    for name, extra in (
        ("store_memory", {}),
        ("store_redis", {"store": {"type": "redis", "url_env": "BENCH_REDIS_URL"}}),
        ("store_early", {"store": {"type": "redis", "url_env": "BENCH_REDIS_URL"}}),
    ):
        document = copy.deepcopy(dict(load_yaml(ROOT / "mappings" / "telegram.yml")))
        document.update(name=name, **extra)
        if name == "store_early":
            document["request"]["ack"] = "early"
        token = os.environ["TELEGRAM_BOT_TOKEN"]
        document["outbound"]["defaults"]["url"] = f"'{api_url}/{name}/bot{token}/sendMessage'"
        channels.append(GenericChannel(load_channel(document)))
    return channels


def hand_written_telegram(on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Callable:
    """A Telegram webhook written by hand doing the work of ``mappings/telegram.yml``.

    The secret-token check, the same ignore rule, fields and metadata, and update ids
    remembered for an hour, at most 100,000, the oldest forgotten first: what these cost
    without a generic channel around them.
    """
    secret = os.environ["TELEGRAM_SECRET_TOKEN"].encode()
    remembered: OrderedDict[str, float] = OrderedDict()

    async def receive(request: Request) -> response.HTTPResponse:
        sent = request.headers.get("x-telegram-bot-api-secret-token") or ""
        if not hmac.compare_digest(sent.encode(), secret):
            return response.json({"error": "unauthorized"}, status=401)
        update = ujson.loads(request.body)
        message = update.get("message") or {}
        query = update.get("callback_query") or {}
        text = message.get("text") or query.get("data")
        if not text:
            return response.json({})
        user = message.get("from") or query.get("from") or {}
        chat = message.get("chat") or (query.get("message") or {}).get("chat") or {}
        sender = str(chat.get("id") or user.get("id"))
        update_id = str(update["update_id"])
        key = "\x1f".join(("telegram", sender, update_id, text))
        if remembered.get(key, 0.0) > time.monotonic():
            return response.json({})
        metadata = {
            "update_id": update["update_id"],
            "chat_type": chat.get("type") if message else None,
            "callback_query_id": query.get("id"),
            "user": {name: user.get(name) for name in ("id", "username", "first_name")},
        }
        collector = CollectingOutputChannel()
        await on_new_message(
            UserMessage(text, collector, sender, input_channel="telegram",
                        message_id=update_id, metadata=metadata)
        )  # fmt: skip
        remembered[key] = time.monotonic() + 3600
        if len(remembered) > 100_000:
            remembered.popitem(last=False)
        return response.json({})

    return receive


def app(channels: int = 1, api_url: str = "") -> Sanic:
    server = Sanic("generic_connector_bench", configure_logging=False)
    server.ctx.agent = StandInAgent()

    @server.post("/bare")
    async def bare(request: Request) -> response.HTTPResponse:
        body = request.json
        return response.json([{"recipient_id": body["sender"], "text": REPLY}])

    @server.post("/bare/telegram")
    async def bare_telegram(request: Request) -> response.HTTPResponse:
        # What a Telegram update costs Sanic and the JSON decoder: a longer body, one header.
        update = request.json
        return response.json({} if update else None)

    async def on_new_message(message: UserMessage) -> None:
        await server.ctx.agent.handle_message(message)

    server.add_route(hand_written_telegram(on_new_message), "/hand/telegram", methods=["POST"])

    inputs = [RestInput(), telegram_channel(), telegram_channel(remember_updates=False)]
    for index in range(channels):
        name = "restlike" if index == 0 else f"restlike{index}"
        inputs.append(GenericChannel(load_channel({"mapping": "mappings/rest.yml", "name": name})))
    register(inputs, server, route="/webhooks/")
    if api_url:
        import peers

        peers.register_peers(server, api_url, on_new_message)
    if api_url and os.environ.get("BENCH_REDIS_URL"):
        register(store_channels(api_url), server, route="/webhooks/")

    @server.listener("after_server_start")
    async def freeze_start_up_objects(*_: Any) -> None:
        # The first full collection walks every object Rasa's imports made and stalls the
        # server for tens of milliseconds: whichever route is measured then gets it as p99.
        gc.collect()
        gc.freeze()

    return server


if __name__ == "__main__":
    os.chdir(ROOT)
    port = int(sys.argv[1])
    channels = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    api_url = os.environ.get("BENCH_API_URL", "")
    if api_url:
        import peers

        peers.set_environment(api_url)
    app(channels, api_url).run(host="127.0.0.1", port=port, access_log=False, workers=1)
