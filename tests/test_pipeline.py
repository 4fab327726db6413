"""The request pipeline on its own: its stages in order, refusals and failures as JSON."""

import asyncio
import json
import logging
from typing import Any, Dict, List, Optional, Tuple

import pytest

from generic_connector.answers import Rendered
from generic_connector.config import load_channel
from generic_connector.dryrun import Recorder
from generic_connector.idempotency import Replies
from generic_connector.mapping import Extracted
from generic_connector.pipeline import Assistant, Exchange, Pipeline, make_store
from generic_connector.request import IncomingRequest


class Echo(Assistant):
    """Answers each message with its own text, and records what it was given."""

    def __init__(self, ready: bool = True) -> None:
        self.handled: List[Extracted] = []
        self._ready = ready

    def ready(self) -> bool:
        return self._ready

    async def handle(self, message: Extracted) -> Replies:
        self.handled.append(message)
        return [{"recipient_id": message.sender_id, "text": f"re: {message.text}"}]


def run(
    channel: Dict[str, Any],
    body: bytes,
    headers: Optional[Dict[str, str]] = None,
    assistant: Optional[Assistant] = None,
) -> Tuple[Exchange, Rendered, Recorder, Assistant]:
    config = load_channel(channel)
    recorder = Recorder()
    pipeline = Pipeline(config, make_store(config), recorder)
    assistant = assistant or Echo()
    request = IncomingRequest.from_parts(
        body, {"Content-Type": "application/json", **(headers or {})}
    )
    exchange, answer = asyncio.run(pipeline.run(request, assistant))
    return exchange, answer, recorder, assistant


SIMPLE = {"name": "simple", "request": {"sender": "user", "text": "text", "message_id": "id"}}


def test_a_message_goes_through_and_the_answer_is_the_replies() -> None:
    _, answer, _, assistant = run(SIMPLE, b'{"user": "u1", "text": "hi", "id": "m1"}')
    assert answer.status == 200
    assert json.loads(answer.body) == [{"recipient_id": "u1", "text": "re: hi"}]
    assert [m.text for m in assistant.handled] == ["hi"]


def test_the_request_id_is_taken_from_the_caller_or_made_up() -> None:
    given, _, _, _ = run(SIMPLE, b'{"user": "u", "text": "t"}', {"X-Request-ID": "req-42"})
    assert given.request_id == "req-42"
    made, _, _, _ = run(SIMPLE, b'{"user": "u", "text": "t"}', {"X-Request-ID": "bad\nid"})
    assert len(made.request_id) == 32 and made.request_id != "bad\nid"


def test_a_body_over_the_limit_is_refused_before_auth_reads_it() -> None:
    channel = {
        **SIMPLE,
        "limits": {"max_body": 10},
        "auth": {"type": "token", "header": "X-Token", "secret_env": "HOME"},
    }
    _, answer, _, assistant = run(channel, b'{"user": "u", "text": "a long text"}')
    assert answer.status == 413  # not 401: the size is checked first
    assert json.loads(answer.body) == {"error": "request body is larger than 10 bytes"}
    assert assistant.handled == []


def test_more_events_than_the_limit_are_refused_and_none_handled() -> None:
    channel = {
        "name": "batch",
        "limits": {"max_events": 3},
        "request": {"events": "items", "sender": "u", "text": "t"},
    }
    body = json.dumps({"items": [{"u": "a", "t": str(n)} for n in range(4)]}).encode()
    _, answer, _, assistant = run(channel, body)
    assert answer.status == 413
    assert json.loads(answer.body) == {"error": "the request holds 4 events; this channel takes 3"}
    assert assistant.handled == []


@pytest.mark.parametrize(
    "body, error",
    [
        (
            b'{"user": "\\ud800", "text": "hi"}',
            "request body holds text that is not valid Unicode (a lone surrogate)",
        ),
        (
            b'{"user": "u", "text": "\\udfff"}',
            "request body holds text that is not valid Unicode (a lone surrogate)",
        ),
        (
            b'{"user": ' + b"7" * 100_000 + b', "text": "hi"}',
            "request body is not valid JSON: an integer has more than 20 digits",
        ),
    ],
)
def test_text_that_is_not_unicode_and_huge_integers_are_refused(body: bytes, error: str) -> None:
    _, answer, _, assistant = run(SIMPLE, body)
    assert answer.status == 400
    assert json.loads(answer.body) == {"error": error}
    assert assistant.handled == []


def test_a_surrogate_pair_is_a_valid_character() -> None:
    _, answer, _, assistant = run(SIMPLE, b'{"user": "u", "text": "\\ud83d\\ude00"}')
    assert answer.status == 200
    assert assistant.handled[0].text == "\U0001f600"


def test_a_failure_inside_a_stage_is_a_json_500_logged_once_with_its_context(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = {**SIMPLE, "response": {"body": "split(request.text, '')"}}
    with caplog.at_level(logging.INFO, logger="generic_connector"):
        _, answer, _, _ = run(channel, b'{"user": "u-7", "text": "hi"}', {"X-Request-ID": "r-9"})
    assert answer.status == 500
    assert answer.content_type == "application/json"
    assert json.loads(answer.body) == {"error": "the answer could not be rendered"}
    records = [r for r in caplog.records if "could not be rendered" in r.getMessage()]
    assert len(records) == 1
    assert "Channel simple: request r-9" in records[0].getMessage()
    assert "empty separator" in records[0].getMessage()


def test_refusals_are_logged_once_at_info_with_status_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="generic_connector"):
        run(SIMPLE, b'{"text": "hi"}', {"X-Request-ID": "r-1"})
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert lines == [
        "Channel simple: request r-1 refused with 422: no sender in the request: "
        "`user` found nothing"
    ]


def test_an_assistant_that_is_not_ready_answers_503_and_handles_nothing() -> None:
    _, answer, _, assistant = run(SIMPLE, b'{"user": "u", "text": "hi"}', assistant=Echo(False))
    assert answer.status == 503
    assert answer.headers["Retry-After"] == "5"
    assert assistant.handled == []


REPLYING = {
    "name": "replying",
    "request": {
        "events": "events",
        "sender": "from",
        "text": "text",
        "message_id": "id",
        "metadata": "{thread: thread}",
    },
    "response": {"body": "`{}`"},
    "outbound": {
        "wait": True,
        "text": {
            "url": "'https://api.example.com/send'",
            "body": "{to: recipient, text: message.text, thread: metadata.thread}",
        },
    },
}


def test_replies_are_matched_to_the_message_they_answer_not_to_its_sender() -> None:
    body = {
        "events": [
            {"from": "ann", "text": "one", "id": "1", "thread": "t-1"},
            {"from": "ann", "text": "two", "id": "2", "thread": "t-2"},
        ]
    }
    _, answer, recorder, _ = run(REPLYING, json.dumps(body).encode())
    assert answer.status == 200
    assert [json.loads(r.body) for r in recorder.requests] == [
        {"to": "ann", "text": "re: one", "thread": "t-1"},
        {"to": "ann", "text": "re: two", "thread": "t-2"},
    ]


def test_a_duplicate_is_answered_but_its_replies_are_not_sent_again() -> None:
    config = load_channel(REPLYING)
    recorder = Recorder()
    pipeline = Pipeline(config, make_store(config), recorder)
    assistant = Echo()
    body = json.dumps({"events": [{"from": "bo", "text": "hi", "id": "9", "thread": "t"}]})

    async def twice() -> List[int]:
        statuses = []
        for _ in range(2):
            _, answer = await pipeline.run(IncomingRequest.from_parts(body.encode()), assistant)
            statuses.append(answer.status)
        return statuses

    assert asyncio.run(twice()) == [200, 200]
    assert len(assistant.handled) == 1
    assert len(recorder.requests) == 1


CHOOSING = {
    "name": "choosing",
    "request": {"sender": "user", "text": "text || 'started'", "ignore": []},
    "response": [
        {"when": "request.event == 'conversation_started'", "body": "{welcome: 'Hello!'}"},
        {"body": "`{}`", "status": 202},
    ],
}


def test_the_first_answer_whose_when_matches_answers() -> None:
    _, started, _, _ = run(CHOOSING, b'{"user": "u", "event": "conversation_started"}')
    assert (started.status, json.loads(started.body)) == (200, {"welcome": "Hello!"})
    _, message, _, _ = run(CHOOSING, b'{"user": "u", "event": "message", "text": "hi"}')
    assert (message.status, json.loads(message.body)) == (202, {})


class Held(Echo):
    """Answers only when the test lets it."""

    go: asyncio.Event  # made in the test's event loop

    async def handle(self, message: Extracted) -> Replies:
        await self.go.wait()
        return await super().handle(message)


DEFERRING = {
    "name": "deferring",
    "request": {"sender": "user", "text": "text", "metadata": "{token: token}"},
    "response": {"body": "{type: `4`, content: messages[0].text}"},
    "defer": {"after": 0.05, "response": {"body": "{type: `5`}"}},
    "outbound": {
        "turn": {
            "url": "join('', ['https://discord.example/webhooks/', metadata.token])",
            "body": "{content: messages[0].text}",
        },
        "allow_hosts": ["discord.example"],
    },
}


def test_a_slow_assistant_gets_the_deferred_answer_and_its_replies_go_through_outbound() -> None:
    config = load_channel(DEFERRING)
    recorder = Recorder()
    pipeline = Pipeline(config, None, recorder)
    assistant = Held()
    body = b'{"user": "u", "text": "slow", "token": "t-1"}'

    async def scenario() -> Tuple[Rendered, List[Any]]:
        assistant.go = asyncio.Event()
        _, answer = await pipeline.run(IncomingRequest.from_parts(body), assistant)
        before = list(recorder.requests)  # answered while the assistant still works
        assistant.go.set()
        for _ in range(100):  # until the late delivery ran
            await asyncio.sleep(0)
            if recorder.requests:
                break
        return answer, before

    answer, before = asyncio.run(scenario())
    assert json.loads(answer.body) == {"type": 5}
    assert before == []
    [late] = recorder.requests
    assert late.url == "https://discord.example/webhooks/t-1"
    assert json.loads(late.body) == {"content": "re: slow"}


def test_an_assistant_in_time_answers_normally_and_nothing_goes_through_outbound() -> None:
    _, answer, recorder, _ = run(DEFERRING, b'{"user": "u", "text": "quick", "token": "t"}')
    assert json.loads(answer.body) == {"type": 4, "content": "re: quick"}
    assert recorder.requests == []
