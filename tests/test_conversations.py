"""Conversations, not only users: what keys Rasa's tracker, the ids in metadata, and where
replies go, also those Rasa sends on its own."""

import asyncio
import json
from typing import Any, Dict, List

import pytest

from generic_connector.cli.dryrun import Recorder
from generic_connector.config import check_channel, load_channel
from generic_connector.conversations import REPLY_TO, MemoryConversations
from generic_connector.mapping import RequestMapping
from generic_connector.pipeline import Pipeline, deliver, make_store
from generic_connector.request import IncomingRequest
from tests.test_pipeline import Echo

# A Slack channel message, and a reply in a thread (https://api.slack.com/events/message).
CHANNEL_MESSAGE = {"user": "U1", "channel": "C1", "ts": "100.1", "text": "hi"}
IN_THREAD = {"user": "U2", "channel": "C1", "ts": "100.5", "thread_ts": "100.1", "text": "me too"}
DIRECT = {"user": "U1", "channel": "D9", "ts": "200.1", "text": "hi", "channel_type": "im"}


def mapping(policy: str) -> RequestMapping:
    return RequestMapping(
        sender="user",
        text="text",
        default_input_channel="x",
        conversation="channel",
        thread="thread_ts || ts",
        sender_id=policy,
    )


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("user", ["U1", "U2"]),
        ("conversation", ["C1", "C1"]),
        ("thread", ["C1:100.1", "C1:100.1"]),  # the reply is in the first message's thread
    ],
)
def test_the_policy_says_what_keys_the_tracker(policy: str, expected: List[str]) -> None:
    found = [mapping(policy).map(event) for event in (CHANNEL_MESSAGE, IN_THREAD)]
    assert [m.sender_id for m in found] == expected
    assert found[1].metadata == {"user_id": "U2", "conversation_id": "C1", "thread_id": "100.1"}
    assert found[1].reply_to == {"user": "U2", "conversation": "C1", "thread": "100.1"}


def test_without_a_thread_or_conversation_the_next_id_keys_it() -> None:
    thread = RequestMapping(
        sender="user", text="text", default_input_channel="x", conversation="channel",
        thread="thread_ts", sender_id="thread",
    )  # fmt: skip
    assert thread.map(CHANNEL_MESSAGE).sender_id == "C1"
    alone = RequestMapping(
        sender="user", text="text", default_input_channel="x", conversation="room",
        sender_id="conversation",
    )  # fmt: skip
    assert alone.map(CHANNEL_MESSAGE).sender_id == "U1"


def test_the_mappings_own_metadata_keys_win() -> None:
    own = RequestMapping(
        sender="user", text="text", default_input_channel="x", conversation="channel",
        metadata="{user_id: 'mine', ts: ts}",
    )  # fmt: skip
    assert own.map(CHANNEL_MESSAGE).metadata == {
        "user_id": "mine", "conversation_id": "C1", "thread_id": None, "ts": "100.1",
    }  # fmt: skip


THREADED: Dict[str, Any] = {
    "name": "threaded",
    "request": {
        "sender": "user",
        "text": "text",
        "conversation": "channel",
        "thread": "thread_ts || ts",
        "sender_id": "thread",
    },
    "response": {"body": "`{}`"},
    "outbound": {
        "text": {
            "url": "'https://chat.example/post'",
            "body": "{channel: reply_to.conversation, thread_ts: reply_to.thread, "
            "text: message.text}",
        }
    },
}


def test_replies_and_messages_rasa_sends_on_its_own_go_to_the_thread() -> None:
    config = load_channel(THREADED)
    recorder = Recorder()
    pipeline = Pipeline(config, make_store(config), recorder)
    pipeline.conversations = MemoryConversations()

    async def scenario() -> Any:
        request = IncomingRequest.from_parts(json.dumps(IN_THREAD).encode())
        await pipeline.run(request, Echo())
        # Later, Rasa sends on its own (a reminder) to the tracker's sender_id.
        await deliver(pipeline, "C1:100.1", [{"text": "reminder"}], None)
        return await pipeline.conversations.get(REPLY_TO, "C1:100.1")

    remembered = asyncio.run(scenario())
    assert remembered == {"user": "U2", "conversation": "C1", "thread": "100.1"}
    assert [json.loads(r.body) for r in recorder.requests] == [
        {"channel": "C1", "thread_ts": "100.1", "text": "re: me too"},
        {"channel": "C1", "thread_ts": "100.1", "text": "reminder"},
    ]


def test_a_conversation_id_that_is_no_string_or_number_is_refused() -> None:
    config = load_channel(THREADED)
    pipeline = Pipeline(config, make_store(config), Recorder())
    body = json.dumps({**CHANNEL_MESSAGE, "channel": {"id": "C1"}}).encode()
    _, answer = asyncio.run(pipeline.run(IncomingRequest.from_parts(body), Echo()))
    assert answer.status == 422
    assert json.loads(answer.body) == {
        "error": "conversation must be a string or a number, but `channel` gave an object",
        "field": "conversation",
        "expression": "channel",
    }


def test_an_unknown_policy_is_a_finding() -> None:
    _, findings, _ = check_channel({**THREADED, "request": {**THREADED["request"],
                                                           "sender_id": "room"}})  # fmt: skip
    assert [(f.code, f.path) for f in findings] == [("invalid-value", "threaded.request.sender_id")]


# Presence: a typing indicator while the assistant works ------------------------------------------


def presence_channel(api_url: str) -> Dict[str, Any]:
    return {
        "name": "typing",
        "request": {"sender": "from", "text": "text", "conversation": "chat"},
        "response": {"body": "`{}`"},
        "outbound": {
            "allow_hosts": [api_url.split("//")[1]],
            "presence": {
                "url": f"'{api_url}/sendChatAction'",
                "body": "{chat_id: reply_to.conversation, action: 'typing'}",
            },
            "text": {
                "url": f"'{api_url}/sendMessage'",
                "body": "{chat_id: recipient, text: message.text}",
            },
        },
    }


class Thinking(Echo):
    """An assistant that takes a moment, as Rasa does."""

    async def handle(self, message: Any) -> Any:
        await asyncio.sleep(0.2)
        return await super().handle(message)


def run_through_channel_parts(config: Any, body: Dict[str, Any]) -> Any:
    from generic_connector import stores

    parts = stores.build(config)
    pipeline = Pipeline(config, parts.store, parts.outbox)
    pipeline.presence = parts.presence

    async def once() -> Any:
        try:
            request = IncomingRequest.from_parts(json.dumps(body).encode())
            return (await pipeline.run(request, Thinking()))[1]
        finally:
            assert parts.presence is not None and parts.outbox is not None
            await parts.presence.close()
            await parts.outbox.close()

    return asyncio.run(once())


@pytest.fixture()
def api() -> Any:
    from tests.platform_api import PlatformAPI

    server = PlatformAPI()
    yield server
    server.close()


def test_a_typing_request_goes_out_before_the_reply(api: Any) -> None:
    config = load_channel(presence_channel(api.url))
    answer = run_through_channel_parts(config, {"from": "u-1", "chat": "g-5", "text": "hi"})
    assert answer.status == 200
    assert [(r.path, r.json) for r in api.requests] == [
        ("/sendChatAction", {"chat_id": "g-5", "action": "typing"}),
        ("/sendMessage", {"chat_id": "u-1", "text": "re: hi"}),
    ]


def test_a_failing_presence_request_neither_fails_nor_holds_up_the_reply(api: Any) -> None:
    api.plan(lambda r: r.path == "/sendChatAction", [(500, {}, {"ok": False})], delay=5.0)
    config = load_channel(presence_channel(api.url))
    answer = run_through_channel_parts(config, {"from": "u-1", "chat": "g-5", "text": "hi"})
    assert answer.status == 200
    replies = [r for r in api.requests if r.path == "/sendMessage"]
    typing = [r for r in api.requests if r.path == "/sendChatAction"]
    assert len(replies) == 1 and len(typing) == 1  # sent once: not retried
    assert replies[0].at < typing[0].at + 5.0  # the reply did not wait for the slow answer
