"""Handover: the bot paused for a conversation while a human agent answers, and resumed.

The stage alone (``apply_handover`` in a pipeline with the memory conversation store and a
recording outbox), the rules over Chatwoot's documented payloads, the conversations API's logic
and its refusals, and ``generic-connector conversations`` against a real redis-server.
"""

import asyncio
import copy
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from generic_connector.answers import Rendered
from generic_connector.cli.dryrun import Recorder
from generic_connector.config import check_channel, load_channel
from generic_connector.conversations import PAUSED, MemoryConversations
from generic_connector.errors import HTTPError
from generic_connector.handover import HELD, conversation_problem, operate
from generic_connector.idempotency import Replies
from generic_connector.mapping import Extracted
from generic_connector.metrics import exposition
from generic_connector.pipeline import Assistant, Exchange, Pipeline, make_store
from generic_connector.request import IncomingRequest
from tests.redis_server import RedisServer, fresh, serve

ROOT = Path(__file__).resolve().parents[1]
PAYLOADS = ROOT / "tests" / "payloads" / "chatwoot"
TOKEN = "chatwoot-webhook-token"


class Echo(Assistant):
    def __init__(self) -> None:
        self.handled: List[Extracted] = []

    async def handle(self, message: Extracted) -> Replies:
        self.handled.append(message)
        return [{"recipient_id": message.sender_id, "text": f"re: {message.text}"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def message_created(conversation: int, content: str, message_id: int) -> Dict[str, Any]:
    """The documented API channel callback (tests/payloads/chatwoot), for one conversation."""
    body = json.loads((PAYLOADS / "api_channel_message_created.json").read_text())
    body["conversation"]["id"] = conversation
    return {**body, "content": content, "id": message_id}


# Chatwoot's documented webhook events ("Supported webhook events in Chatwoot",
# https://www.chatwoot.com/docs/product/others/webhook-events): conversation_status_changed and
# conversation_updated carry the Conversation object's attributes beside ``event``
# (conversation_updated also ``changed_attributes``, a list of {attribute: {current_value,
# previous_value}}). The types the page gives are filled in with values; ``assignee_id`` is the
# attribute an assignment changes.
def conversation_event(event: str, conversation: int, status: str, **more: Any) -> Dict[str, Any]:
    return {
        "event": event,
        "additional_attributes": {},
        "can_reply": True,
        "channel": "Channel::Api",
        "id": conversation,
        "inbox_id": 0,
        "contact_inbox": {"id": 3, "contact_id": 5, "inbox_id": 0, "source_id": "s-1"},
        "messages": [],
        "meta": {
            "sender": {"id": 5, "name": "contact-name", "type": "contact"},
            "assignee": {"id": 7, "name": "Agent", "email": "agent@example.com", "type": "user"},
        },
        "status": status,
        "unread_count": 1,
        "agent_last_seen_at": 0,
        "contact_last_seen_at": 0,
        "timestamp": 0,
        "account_id": 1,
        **more,
    }


def assigned(conversation: int, agent: Optional[int]) -> Dict[str, Any]:
    change = [{"assignee_id": {"current_value": agent, "previous_value": 3 if agent else 7}}]
    return conversation_event(
        "conversation_updated", conversation, "open", changed_attributes=change
    )


# Paused while Chatwoot's conversation is open to agents or assigned to one; resumed when it goes
# back to pending (the agent bot's) or is resolved, or its agent is unassigned.
ASSIGNEE = "(changed_attributes[?assignee_id].assignee_id | [0])"
HANDOVER = {
    "pause_when": (
        "event == 'conversation_status_changed' && status == 'open' || "
        f"event == 'conversation_updated' && {ASSIGNEE}.current_value != null"
    ),
    "resume_when": (
        "event == 'conversation_status_changed' && status != 'open' || "
        f"event == 'conversation_updated' && {ASSIGNEE} != null && {ASSIGNEE}.current_value == null"
    ),
    "conversation": "id",
}


def chatwoot(**handover: Any) -> Dict[str, Any]:
    return {
        "mapping": str(ROOT / "mappings" / "chatwoot.yml"),
        "handover": {**HANDOVER, **handover},
    }


class Channel:
    """A pipeline of the channel with the memory conversation store on an injected clock."""

    def __init__(self, entry: Dict[str, Any]) -> None:
        self.config = load_channel(entry)
        self.clock = Clock()
        self.outbox = Recorder()
        self.pipeline = Pipeline(
            self.config, make_store(self.config), self.outbox, clock=self.clock
        )
        self.pipeline.conversations = MemoryConversations(clock=self.clock)
        self.assistant = Echo()

    def post(self, body: Any) -> Tuple[Exchange, Rendered]:
        request = IncomingRequest.from_parts(
            json.dumps(body).encode(), {"Content-Type": "application/json"}, {"token": TOKEN}
        )
        return asyncio.run(self.pipeline.run(request, self.assistant))

    def paused(self) -> Dict[str, Any]:
        return asyncio.run(self.pipeline.conversations.all(PAUSED))


@pytest.fixture(autouse=True)
def chatwoot_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATWOOT_WEBHOOK_TOKEN", TOKEN)
    monkeypatch.setenv("CHATWOOT_ACCOUNT_ID", "42")
    monkeypatch.setenv("CHATWOOT_BOT_TOKEN", "bot-token")


def test_the_documented_status_change_pauses_and_messages_are_acknowledged_not_handed_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = Channel(chatwoot())
    _, answer = channel.post(conversation_event("conversation_status_changed", 12, "open"))
    assert answer.status == 200
    assert channel.paused() == {"12": {"since": 1_000.0, "by": "pause_when"}}
    caplog.set_level(logging.INFO, logger="generic_connector")
    exchange, answer = channel.post(message_created(12, "a secret question", 901))
    assert (answer.status, answer.body) == (200, b"{}")  # the mapping's normal answer
    assert channel.assistant.handled == []
    assert [m.message_id for m in exchange.held] == ["901"]
    assert exchange.ignored == [(0, HELD)]
    held = [r.getMessage() for r in caplog.records if "held" in r.getMessage()]
    assert len(held) == 1 and "901" in held[0] and "12" in held[0] and "chatwoot" in held[0]
    assert "a secret question" not in caplog.text
    assert 'generic_connector_paused_messages_total{channel="chatwoot"}' in exposition().decode()
    # Another conversation is not paused.
    channel.post(message_created(13, "hello", 902))
    assert [m.sender_id for m in channel.assistant.handled] == ["13"]


def test_an_assignment_pauses_and_pending_again_resumes_the_bot() -> None:
    channel = Channel(chatwoot())
    channel.post(assigned(12, agent=7))
    assert list(channel.paused()) == ["12"]
    channel.post(message_created(12, "still there?", 903))
    assert channel.assistant.handled == []
    channel.post(conversation_event("conversation_status_changed", 12, "pending"))
    assert channel.paused() == {}
    exchange, answer = channel.post(message_created(12, "back to the bot", 904))
    assert answer.status == 200
    assert [m.text for m in channel.assistant.handled] == ["back to the bot"]
    assert [r.url for r in channel.outbox.requests] == [
        "https://app.chatwoot.com/api/v1/accounts/42/conversations/12/messages"
    ]
    # Unassigned: resumed too.
    channel.post(assigned(12, agent=7))
    channel.post(assigned(12, agent=None))
    assert channel.paused() == {}


def test_the_timeout_resumes_the_bot_on_its_own() -> None:
    channel = Channel(chatwoot(timeout=600))
    channel.post(conversation_event("conversation_status_changed", 12, "open"))
    assert channel.paused()["12"] == {"since": 1_000.0, "by": "pause_when", "until": 1_600.0}
    channel.clock.now += 599
    channel.post(message_created(12, "early", 905))
    assert channel.assistant.handled == []
    channel.clock.now += 2
    channel.post(message_created(12, "late", 906))
    assert [m.text for m in channel.assistant.handled] == ["late"]


def test_a_held_message_is_relayed_through_the_outbox_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATWOOT_URL", "https://agents.example.com")
    relay = {
        "url": "join('', [env('CHATWOOT_URL'), '/agent-inbox'])",
        "body": "{conversation: recipient, text: message.text, contact: metadata.contact_name,"
        " kind: event.event}",
    }
    channel = Channel(chatwoot(relay=relay))
    channel.post(conversation_event("conversation_status_changed", 12, "open"))
    for _ in range(2):  # the platform sends it again: relayed once
        channel.post(message_created(12, "I need a person", 907))
    assert channel.assistant.handled == []
    [relayed] = channel.outbox.requests
    assert relayed.url == "https://agents.example.com/agent-inbox"
    assert json.loads(relayed.body or b"") == {
        "conversation": "12",
        "text": "I need a person",
        "contact": "contact-name",
        "kind": "message_created",
    }


def test_a_relay_by_template_name_uses_the_outbound_template() -> None:
    channel = Channel(chatwoot(relay="text"))
    channel.post(conversation_event("conversation_status_changed", 12, "open"))
    channel.post(message_created(12, "hello agent", 908))
    [relayed] = channel.outbox.requests
    assert relayed.url.endswith("/conversations/12/messages")
    assert json.loads(relayed.body or b"")["content"] == "hello agent"


def test_the_default_conversation_is_the_mapped_sender() -> None:
    entry = {
        "name": "plain",
        "request": {
            "sender": "user",
            "text": "text",
            "ignore": [{"name": "agent events", "when": "type == 'agent'"}],
        },
        "handover": {"pause_when": "action == 'take'", "resume_when": "action == 'leave'"},
    }
    config = load_channel(entry)
    pipeline = Pipeline(config, None, Recorder())
    assistant = Echo()

    async def send(*events: Dict[str, Any]) -> Rendered:
        body = json.dumps(events[0] if len(events) == 1 else {"events": list(events)})
        _, answer = await pipeline.run(IncomingRequest.from_parts(body.encode()), assistant)
        return answer

    async def scenario() -> List[str]:
        await send({"type": "agent", "action": "take", "user": "u-1"})
        await send({"user": "u-1", "text": "one"})
        await send({"type": "agent", "action": "leave", "user": "u-1"})
        await send({"user": "u-1", "text": "two"})
        return [m.text for m in assistant.handled]

    assert asyncio.run(scenario()) == ["two"]


def test_a_batch_pausing_midway_holds_only_the_later_messages() -> None:
    entry = {
        "name": "batched",
        "request": {
            "events": "events",
            "sender": "user",
            "text": "text",
            "ignore": [{"name": "agent events", "when": "!text"}],
        },
        "handover": {"pause_when": "action == 'take'"},
    }
    config = load_channel(entry)
    pipeline = Pipeline(config, None, Recorder())
    assistant = Echo()
    events = [
        {"user": "u", "text": "first"},
        {"user": "u", "action": "take"},
        {"user": "u", "text": "second"},
        {"user": "v", "text": "other"},
    ]
    body = json.dumps({"events": events}).encode()
    exchange, answer = asyncio.run(pipeline.run(IncomingRequest.from_parts(body), assistant))
    assert answer.status == 200
    assert [m.text for m in assistant.handled] == ["first", "other"]
    assert sorted(exchange.ignored) == [(1, "agent events"), (2, HELD)]


def test_the_api_pauses_lists_and_resumes_and_refuses_bad_input() -> None:
    store = MemoryConversations()

    async def call(action: str, conversation: Optional[str], body: bytes = b"") -> Any:
        return await operate(store, action, conversation, body, "api", 50.0, 30.0)

    async def scenario() -> List[Any]:
        seen = [await call("pause", "c-1"), await call("pause", "c-2", b'{"timeout": 5}')]
        seen.append(await call("list", None))
        seen += [await call("resume", "c-1"), await call("resume", "c-1")]
        for action, conversation, body in (
            ("stop", "c-1", b""),
            ("pause", "x" * 257, b""),
            ("pause", "c\n1", b""),
            ("pause", "c-1", b"not json"),
            ("pause", "c-1", b'{"timeout": -1}'),
            ("pause", "c-1", b'{"timeout": true}'),
            ("pause", "c-1", b'{"wait": 1}'),
        ):
            with pytest.raises(HTTPError) as refused:
                await call(action, conversation, body)
            seen.append(refused.value.status)
        return seen

    seen = asyncio.run(scenario())
    assert seen[:2] == [
        (200, {"conversation": "c-1", "paused": True, "since": 50.0, "by": "api", "until": 80.0}),
        (200, {"conversation": "c-2", "paused": True, "since": 50.0, "by": "api", "until": 55.0}),
    ]
    assert [row["conversation"] for row in seen[2][1]["paused"]] == ["c-1", "c-2"]
    assert seen[3][1]["was_paused"] is True and seen[4][1]["was_paused"] is False
    assert seen[5:] == [400] * 7
    assert conversation_problem("12") is None


class FakeRequest(SimpleNamespace):
    """What ``GenericChannel.conversations`` reads of a Sanic request."""


def api_request(authorization: Optional[str], body: bytes = b"") -> FakeRequest:
    headers = {"authorization": authorization} if authorization else {}
    return FakeRequest(headers=headers, body=body, stream=None, path="/", method="POST")


def test_the_http_api_is_closed_without_the_ops_token_and_for_other_bearers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from generic_connector.channel import GenericChannel

    channel = GenericChannel(load_channel(chatwoot()))
    plain = GenericChannel(load_channel({"name": "plain", "request": {"sender": "u", "text": "t"}}))

    def call(target: GenericChannel, authorization: Optional[str], *args: Any) -> Any:
        answer = asyncio.run(target.conversations(api_request(authorization), *args))
        return answer.status, json.loads(answer.body)

    monkeypatch.delenv("GENERIC_CONNECTOR_OPS_TOKEN", raising=False)
    status, body = call(channel, None, "pause", "12")
    assert status == 403 and "GENERIC_CONNECTOR_OPS_TOKEN" in body["error"]
    monkeypatch.setenv("GENERIC_CONNECTOR_OPS_TOKEN", "ops")
    assert call(channel, "Bearer wrong", "pause", "12")[0] == 401
    assert call(plain, "Bearer ops", "pause", "12")[0] == 404
    assert call(channel, "Bearer ops", "stop", "12")[0] == 400
    status, body = call(channel, "Bearer ops", "pause", "12")
    assert (status, body["channel"], body["paused"], body["by"]) == (200, "chatwoot", True, "api")
    status, body = call(channel, "Bearer ops", "list", None)
    assert [row["conversation"] for row in body["paused"]] == ["12"]


def test_validate_finds_a_relay_without_outbound_or_template() -> None:
    plain = {"name": "plain", "request": {"sender": "u", "text": "t"}}
    found = check_channel({**plain, "handover": {"relay": "text"}}).findings
    assert [(f.code, f.path) for f in found] == [("needs-outbound", "plain.handover.relay")]
    outbound = {"text": {"url": "'https://api.example.com/send'", "body": "message"}}
    for relay, code in (("image", "unknown-template"), ("nope", "unknown-template")):
        found = check_channel({**plain, "outbound": outbound, "handover": {"relay": relay}})
        assert [f.code for f in found.findings] == [code]
    found = check_channel({**plain, "handover": {"timeout": 0, "pausewhen": "a"}}).findings
    assert sorted(f.code for f in found) == ["invalid-value", "unknown-key"]
    good = check_channel({**plain, "outbound": outbound, "handover": {"relay": "text"}})
    assert good.config is not None and good.config.handover is not None


# The command, against a real Redis ----------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from serve()


def command(url: str, *args: str) -> "subprocess.CompletedProcess[str]":
    line = [sys.executable, "-m", "generic_connector", "conversations", *args, "--url", url]
    return subprocess.run(line, capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.mark.redis
def test_the_command_pauses_lists_and_resumes_on_redis_as_the_channel_sees_it(
    redis_server: RedisServer,
) -> None:
    from generic_connector.stores.redis.state import RedisConversations

    url = fresh(redis_server)
    paused = command(url, "pause", "12", "--channel", "chatwoot", "--timeout", "60")
    assert paused.returncode == 0, paused.stderr
    assert "conversation 12 paused until" in paused.stdout
    listed = command(url, "list", "--channel", "chatwoot", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)["paused"]
    assert (row["conversation"], row["by"], row["until"] - row["since"]) == ("12", "cli", 60)

    async def seen_by_the_channel() -> Any:
        store = RedisConversations("chatwoot", url, "generic_connector")
        try:
            return await store.get(PAUSED, "12"), await store.get(PAUSED, "13")
        finally:
            await store.close()

    value, other = asyncio.run(seen_by_the_channel())
    assert value["by"] == "cli" and other is None
    assert (
        command(url, "list", "--channel", "other")
        .stdout.strip()
        .endswith("0 paused conversations of other")
    )
    resumed = command(url, "resume", "12", "--channel", "chatwoot")
    assert (resumed.returncode, resumed.stdout.strip()) == (0, "chatwoot: conversation 12 resumed")
    again = command(url, "resume", "12", "--channel", "chatwoot")
    assert again.returncode == 1 and "was not paused" in again.stdout
    bad = command(url, "pause", "c\x01", "--channel", "chatwoot")
    assert bad.returncode == 2 and "control characters" in bad.stderr
    memory = command("memory", "list", "--channel", "chatwoot")
    assert memory.returncode == 2 and "HTTP API" in memory.stderr
    down = command("redis://127.0.0.1:1/0", "list", "--channel", "chatwoot")
    assert down.returncode == 3


def test_two_channels_keep_their_own_pauses() -> None:
    # The handover section is read per channel: two channels keep their own pauses.
    first, second = Channel(chatwoot()), Channel(copy.deepcopy(chatwoot()))
    first.post(conversation_event("conversation_status_changed", 12, "open"))
    assert list(first.paused()) == ["12"] and second.paused() == {}
