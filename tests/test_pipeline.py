"""The request pipeline on its own: its stages in order, refusals and failures as JSON."""

import asyncio
import json
import logging
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from generic_connector.answers import Rendered
from generic_connector.cli.dryrun import Recorder
from generic_connector.config import load_channel
from generic_connector.errors import HTTPError
from generic_connector.idempotency import Replies
from generic_connector.mapping import Extracted
from generic_connector.pipeline import Assistant, Exchange, Pipeline, make_store
from generic_connector.request import IncomingRequest, decode_body


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


def test_an_answer_that_fails_after_the_message_was_handled_acknowledges_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A 5xx would make the platform send the message again, and Rasa handle it again.
    channel = {**SIMPLE, "response": {"body": "split(request.text, '')"}}
    with caplog.at_level(logging.INFO, logger="generic_connector"):
        _, answer, _, assistant = run(
            channel, b'{"user": "u-7", "text": "hi"}', {"X-Request-ID": "r-9"}
        )
    assert [m.text for m in assistant.handled] == ["hi"]
    assert answer.status == 200
    assert answer.content_type == "application/json"
    assert json.loads(answer.body) == {"error": "the answer could not be rendered", "handled": True}
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


def test_a_request_that_defer_when_does_not_match_waits_for_the_assistant() -> None:
    config = load_channel({**DEFERRING, "defer": {**DEFERRING["defer"], "when": "kind == 'slow'"}})
    recorder = Recorder()
    pipeline = Pipeline(config, None, recorder)
    assistant = Held()

    async def answered(body: bytes) -> Rendered:
        assistant.go = asyncio.Event()
        running = asyncio.ensure_future(pipeline.run(IncomingRequest.from_parts(body), assistant))
        await asyncio.sleep(0.2)  # four times defer.after
        assistant.go.set()
        return (await running)[1]

    quick = asyncio.run(answered(b'{"user": "u", "text": "click", "token": "t", "kind": "x"}'))
    assert json.loads(quick.body) == {"type": 4, "content": "re: click"}  # waited
    slow = asyncio.run(answered(b'{"user": "u", "text": "cmd", "token": "t", "kind": "slow"}'))
    assert json.loads(slow.body) == {"type": 5}  # deferred


def test_an_assistant_in_time_answers_normally_and_nothing_goes_through_outbound() -> None:
    _, answer, recorder, _ = run(DEFERRING, b'{"user": "u", "text": "quick", "token": "t"}')
    assert json.loads(answer.body) == {"type": 4, "content": "re: quick"}
    assert recorder.requests == []


@pytest.mark.parametrize(
    "body, error",
    [
        # The raw UTF-8 spelling of a surrogate, which the JSON decoders turn into '\ud800'.
        (
            b'{"user": "\xed\xa0\x80", "text": "hi"}',
            "request body is not valid UTF-8 (at byte 10): invalid continuation byte",
        ),
        (
            b'{"user": "u", "text": "\xed\xbf\xbf"}',
            "request body is not valid UTF-8 (at byte 23): invalid continuation byte",
        ),
        (
            b'{"user": "u", "text": "\xff"}',
            "request body is not valid UTF-8 (at byte 23): invalid start byte",
        ),
        # An overlong spelling of "/" (C0 AF).
        (
            b'{"user": "\xc0\xaf", "text": "hi"}',
            "request body is not valid UTF-8 (at byte 10): invalid start byte",
        ),
    ],
)
def test_a_body_that_is_not_utf8_is_refused_whatever_its_spelling(body: bytes, error: str) -> None:
    _, answer, _, assistant = run(SIMPLE, body)
    assert (answer.status, json.loads(answer.body)) == (400, {"error": error})
    assert assistant.handled == []


def test_a_header_that_is_not_unicode_never_reaches_the_assistant() -> None:
    # Sanic keeps header bytes it cannot decode as lone surrogates ('\udced...').
    channel = {"name": "headed", "request": {"sender": "header('X-User')", "text": "text"}}
    header = b"\xed\xa0\x80".decode("utf-8", "surrogateescape")
    _, answer, _, assistant = run(channel, b'{"text": "hi"}', {"X-User": header})
    assert answer.status == 400
    assert json.loads(answer.body) == {"error": "event 0 maps to text that is not valid Unicode"}
    assert assistant.handled == []


@pytest.mark.parametrize(
    "given, kept",
    [
        ("req-42", True),
        ("0f8fad5b-d9cb-469f-a165-70867728950e", True),
        ("bad\nid", False),
        ("\x1b[31mred", False),
        ("spaced id", False),
        ("x" * 129, False),
    ],
)
def test_a_callers_request_id_is_kept_only_in_a_safe_alphabet(given: str, kept: bool) -> None:
    exchange, _, _, _ = run(SIMPLE, b'{"user": "u", "text": "t"}', {"X-Request-ID": given})
    assert (exchange.request_id == given) is kept


# Byte strings, and the raw (CESU-style) UTF-8 spellings of every UTF-16 surrogate.
RAW_SURROGATES = st.integers(0xD800, 0xDFFF).map(
    lambda code: chr(code).encode("utf-8", "surrogatepass")
)


@settings(max_examples=5 * settings().max_examples, deadline=None)  # 500 in CI
@given(st.binary(max_size=64), st.one_of(st.binary(max_size=8), RAW_SURROGATES))
def test_every_body_decodes_to_valid_unicode_or_is_refused(prefix: bytes, raw: bytes) -> None:
    # Raw bytes inside a JSON string, and alone: the decoder refuses them (400) or gives a
    # body whose every string can be written as UTF-8 again (as a tracker store must).
    for body in (b'{"user": "' + raw + prefix + b'", "text": "t"}', prefix + raw):
        request = IncomingRequest.from_parts(body, {"Content-Type": "application/json"})
        try:
            decoded = decode_body(request)
        except HTTPError as error:
            assert error.status == 400
            continue
        json.dumps(decoded, ensure_ascii=False).encode("utf-8")  # raises on a lone surrogate


class Poisoned(Echo):
    """Raises for one sender's messages, as Rasa does for a message it cannot handle."""

    async def handle(self, message: Extracted) -> Replies:
        if message.sender_id == "poison":
            raise RuntimeError("cannot be handled")
        return await super().handle(message)


BATCH = {
    "name": "batch",
    "request": {"events": "items", "sender": "u", "text": "t", "message_id": "id"},
    "response": {"body": '`{"ok": true}`'},
}


def test_a_poison_event_fails_alone_and_the_retry_hands_over_only_it() -> None:
    config = load_channel(BATCH)
    pipeline = Pipeline(config, make_store(config))
    assistant = Poisoned()
    items = [
        {"u": "ann", "t": "hi", "id": "1"},
        {"u": "poison", "t": "boom", "id": "2"},
        {"u": "bob", "t": "hello", "id": "3"},
    ]
    body = json.dumps({"items": items}).encode()

    async def scenario() -> List[Tuple[int, Any]]:
        answers = [await pipeline.run(IncomingRequest.from_parts(body), assistant) for _ in "12"]
        return [(answer.status, json.loads(answer.body)) for _, answer in answers]

    failed = {"error": "1 of 3 messages could not be handled; retry later", "failed_events": [1]}
    # Both neighbours handled once: the platform's retry of the batch is answered from the
    # store for them, and only the poison event is handed over again.
    assert asyncio.run(scenario()) == [(500, failed), (500, failed)]
    assert [(m.sender_id, m.text) for m in assistant.handled] == [("ann", "hi"), ("bob", "hello")]


def test_a_long_batch_lets_other_requests_run_before_it_is_done() -> None:
    config = load_channel({**BATCH, "request": {"events": "items", "sender": "u", "text": "t"}})
    pipeline = Pipeline(config)
    order: List[str] = []

    class Recording(Echo):
        async def handle(self, message: Extracted) -> Replies:
            order.append(message.text)
            return []

    async def other() -> None:
        order.append("other")

    items = [{"u": "ann", "t": str(n)} for n in range(100)]
    body = json.dumps({"items": items}).encode()

    async def scenario() -> None:
        await asyncio.gather(pipeline.run(IncomingRequest.from_parts(body), Recording()), other())

    asyncio.run(scenario())
    assert 0 < order.index("other") < 100  # not after the whole batch
