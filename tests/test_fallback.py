"""Kinds a platform cannot show (``outbound.renders``): buttons as numbered text, images and
attachments as links, and a numbered answer mapped back to the payload offered."""

import asyncio
import json
from typing import Any, Dict, List, Optional

from generic_connector import defaults
from generic_connector.cli.dryrun import Recorder
from generic_connector.config import check_channel, load_channel
from generic_connector.conversations import OFFERED, MemoryConversations
from generic_connector.fallback import as_text, chosen, replies_as_text, unrendered
from generic_connector.idempotency import Replies
from generic_connector.mapping import Extracted
from generic_connector.pipeline import Assistant, Pipeline, make_store, map_numbered_answers
from generic_connector.request import IncomingRequest

MENU = {
    "text": "Pick one:",
    "buttons": [
        {"title": "Say hello", "payload": "/greet"},
        {"title": "Say goodbye", "payload": "/goodbye"},
    ],
}
OFFER = [
    {"n": 1, "title": "Say hello", "payload": "/greet"},
    {"n": 2, "title": "Say goodbye", "payload": "/goodbye"},
]


def test_buttons_become_a_numbered_list_after_the_text() -> None:
    message, offer = as_text(MENU, {"buttons"})
    assert message == {"text": "Pick one:\n1. Say hello\n2. Say goodbye"}
    assert offer == OFFER


def test_the_line_of_a_button_is_configurable() -> None:
    message, _ = as_text(MENU, {"buttons"}, "[{n}] {title}")
    assert message["text"] == "Pick one:\n[1] Say hello\n[2] Say goodbye"


def test_quick_replies_are_numbered_and_a_button_without_payload_maps_back_to_its_title() -> None:
    quick = {"text": "Size?", "quick_replies": [{"title": "S", "payload": "/s"}, {"title": "M"}]}
    message, offer = as_text(quick, {"buttons"})
    assert message == {"text": "Size?\n1. S\n2. M"}
    assert offer == [
        {"n": 1, "title": "S", "payload": "/s"},
        {"n": 2, "title": "M", "payload": "M"},
    ]


def test_an_image_and_an_attachment_become_their_url_after_the_text() -> None:
    image = {"text": "Here it is.", "image": "https://example.com/a.png"}
    assert as_text(image, {"image"}) == ({"text": "Here it is.\nhttps://example.com/a.png"}, None)
    alone = {"image": "https://example.com/a.png"}
    assert as_text(alone, {"image"}) == ({"text": "https://example.com/a.png"}, None)
    attachment = {"attachment": {"type": "file", "payload": {"url": "https://example.com/f.pdf"}}}
    assert as_text(attachment, {"attachment"}) == ({"text": "https://example.com/f.pdf"}, None)


def test_kinds_the_platform_renders_and_kinds_without_a_text_form_are_left_alone() -> None:
    assert as_text(MENU, {"image"}) == (MENU, None)
    custom = {"custom": {"blocks": []}, "elements": [{"title": "A"}]}
    assert as_text(custom, {"buttons", "image", "attachment"}) == (custom, None)
    assert unrendered(None) == frozenset()  # renders not given: nothing falls back
    assert unrendered(["text", "image"]) == {"buttons", "attachment"}


def test_the_offer_of_a_turn_is_its_last_message_with_buttons() -> None:
    other = {"text": "Or:", "buttons": [{"title": "Stop", "payload": "/stop"}]}
    replies, offer = replies_as_text([MENU, {"text": "Or just type."}, other], {"buttons"})
    assert [reply["text"] for reply in replies] == [
        "Pick one:\n1. Say hello\n2. Say goodbye",
        "Or just type.",
        "Or:\n1. Stop",
    ]
    assert offer == [{"n": 1, "title": "Stop", "payload": "/stop"}]


def test_an_answer_maps_back_by_number_or_title_and_anything_else_is_plain_text() -> None:
    assert chosen(OFFER, "2") == "/goodbye"
    assert chosen(OFFER, "  1 \n") == "/greet"
    assert chosen(OFFER, "say GOODBYE") == "/goodbye"
    assert chosen(OFFER, "3") is None  # out of range
    assert chosen(OFFER, "0") is None
    assert chosen(OFFER, "2 please") is None
    assert chosen(OFFER, "") is None
    assert chosen(None, "1") is None


# Through the pipeline: a channel whose platform shows text only.

CHANNEL: Dict[str, Any] = {
    "name": "textonly",
    "request": {"sender": "user", "text": "text"},
    "outbound": {
        "renders": ["text"],
        "text": {
            "url": "'https://api.example.com/send'",
            "body": "{to: recipient, text: message.text}",
        },
    },
}


class Menu(Assistant):
    """Answers "menu" with the menu, anything else with its own text; records what it got."""

    def __init__(self) -> None:
        self.handled: List[str] = []

    async def handle(self, message: Extracted) -> Replies:
        self.handled.append(message.text)
        if message.text == "menu":
            return [dict(MENU)]
        return [{"text": f"re: {message.text}"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Channel:
    """A channel's pipeline with a memory store on an injected clock, and what it sent."""

    def __init__(self, channel: Optional[Dict[str, Any]] = None) -> None:
        config = load_channel(channel or CHANNEL)
        self.recorder = Recorder()
        self.pipeline = Pipeline(config, make_store(config), self.recorder)
        self.clock = Clock()
        self.pipeline.conversations = MemoryConversations(clock=self.clock)
        self.assistant = Menu()

    def send(self, text: str, user: str = "u1") -> None:
        body = json.dumps({"user": user, "text": text}).encode()
        request = IncomingRequest.from_parts(body, {"Content-Type": "application/json"})
        _, answer = asyncio.run(self.pipeline.run(request, self.assistant))
        assert answer.status == 200

    def sent(self) -> List[Any]:
        return [json.loads(request.body or b"null") for request in self.recorder.requests]

    def offer(self, user: str = "u1") -> Any:
        return asyncio.run(self.pipeline.conversations.get(OFFERED, user))


def test_a_numbered_answer_reaches_the_assistant_as_the_payload_and_the_offer_is_forgotten() -> (
    None
):
    channel = Channel()
    channel.send("menu")
    assert channel.sent() == [{"to": "u1", "text": "Pick one:\n1. Say hello\n2. Say goodbye"}]
    assert channel.offer() == OFFER
    channel.send(" 2 ")
    assert channel.assistant.handled == ["menu", "/goodbye"]
    assert channel.offer() is None
    channel.send("2")  # nothing is offered any more: plain text
    assert channel.assistant.handled[-1] == "2"


def test_a_title_maps_back_and_an_out_of_range_number_is_plain_text() -> None:
    channel = Channel()
    channel.send("menu")
    channel.send("3")
    assert channel.assistant.handled[-1] == "3"
    assert channel.offer() == OFFER  # not an answer to the offer: it is kept
    channel.send("Say Hello")
    assert channel.assistant.handled[-1] == "/greet"


def test_offers_are_per_conversation() -> None:
    channel = Channel()
    channel.send("menu", user="u1")
    channel.send("1", user="u2")
    assert channel.assistant.handled == ["menu", "1"]
    assert channel.offer("u1") == OFFER


def test_an_offer_is_forgotten_after_its_ttl() -> None:
    channel = Channel()
    channel.send("menu")
    channel.clock.now += defaults.OFFERED_TTL - 1
    assert channel.offer() == OFFER
    channel.clock.now += 2
    channel.send("1")
    assert channel.assistant.handled[-1] == "1"


def test_a_channel_that_renders_buttons_neither_numbers_them_nor_reads_offers() -> None:
    without = {
        **CHANNEL,
        "outbound": {k: v for k, v in CHANNEL["outbound"].items() if k != "renders"},
    }
    channel = Channel(without)
    assert map_numbered_answers not in channel.pipeline.stages
    channel.send("menu")
    assert channel.sent() == [{"to": "u1", "text": "Pick one:"}]  # as before: the text alone
    assert channel.offer() is None
    buttons = {
        "url": "'https://api.example.com/send'",
        "body": "{to: recipient, buttons: message.buttons[].title}",
    }
    shown = {**CHANNEL["outbound"], "renders": ["text", "buttons"], "buttons": buttons}
    channel = Channel({**CHANNEL, "outbound": shown})
    assert map_numbered_answers not in channel.pipeline.stages
    channel.send("menu")
    assert channel.sent() == [{"to": "u1", "buttons": ["Say hello", "Say goodbye"]}]


def test_an_image_the_platform_cannot_show_is_sent_as_its_link() -> None:
    class Picture(Menu):
        async def handle(self, message: Extracted) -> Replies:
            return [{"text": "Look:", "image": "https://example.com/demo/hello.png"}]

    channel = Channel()
    channel.assistant = Picture()
    channel.send("hi")
    assert channel.sent() == [{"to": "u1", "text": "Look:\nhttps://example.com/demo/hello.png"}]


def findings(outbound: Dict[str, Any]) -> List[str]:
    entry = {**CHANNEL, "outbound": outbound}
    return [f"{f.code} {f.path}: {f.message}" for f in check_channel(entry).findings]


def test_renders_is_validated() -> None:
    text = CHANNEL["outbound"]["text"]
    assert findings({"renders": ["text", "image"], "text": text}) == [
        "renders-without-template textonly.outbound.renders[1]: "
        "image messages are rendered, but there is no outbound.image template"
    ]
    assert [f.split(" ")[0] for f in findings({"renders": ["image"], "text": text})] == [
        "invalid-value"
    ]
    assert [f.split(" ")[0] for f in findings({"renders": ["text", "video"], "text": text})] == [
        "invalid-value"
    ]
    assert findings({"renders": ["text"], "numbered": "{n}) {title}", "text": text}) == []
