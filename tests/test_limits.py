"""Platform limits on their own: texts split at word boundaries, a turn's messages batched, one
conversation's requests spaced (in memory, with a clock of the test's own)."""

import asyncio
import heapq
import itertools
import json
from typing import Any, Dict, List, Optional, Tuple

import pytest

from generic_connector import delivery as delivery_module
from generic_connector.config import check_channel, load_channel
from generic_connector.delivery import Delivery
from generic_connector.limits import (
    Rate,
    batches,
    split_message,
    split_replies,
    split_text,
    text_length,
)
from generic_connector.outbound import Outbound, OutboundRequest, RequestTemplate
from generic_connector.retry import Outcome

# Splitting ------------------------------------------------------------------------------------

# 1,000 words of 9 characters, one space apart, and a full stop: 10,000 characters.
WORDS = [f"w{n:04d}abcd" for n in range(1, 1001)]
LONG = " ".join(WORDS) + "."


def test_a_ten_thousand_character_reply_is_split_in_order_at_word_boundaries() -> None:
    assert len(LONG) == 10_000
    # Word k (from 0) takes characters 10k to 10k+8, the space after it 10k+9: 4,096
    # characters hold 409 words (4,089 characters) and the first 6 of the 410th.
    expected = [
        " ".join(WORDS[0:409]),
        " ".join(WORDS[409:818]),
        " ".join(WORDS[818:1000]) + ".",
    ]
    parts = split_text(LONG, 4096)
    assert parts == expected
    assert [len(p) for p in parts] == [4089, 4089, 1820]


def test_a_part_ends_at_a_line_break_when_one_is_in_the_second_half_of_its_room() -> None:
    # The room of 40 ends in "has "; its last line break (after "Second one") is at 35.
    text = "First paragraph, short.\n\nSecond one\nhas two lines and goes on for a while."
    assert split_text(text, 40) == [
        "First paragraph, short.\n\nSecond one",
        "has two lines and goes on for a while.",
    ]
    # A line break in the first half of the room: the last space (index 28) instead.
    text = "Hi.\nThis line is long enough to be cut at a space somewhere"
    assert split_text(text, 30) == [
        "Hi.\nThis line is long enough",
        "to be cut at a space somewhere",
    ]


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    assert split_text("ab " + "x" * 12 + " cd", 5) == ["ab", "xxxxx", "xxxxx", "xx cd"]


def test_a_cut_does_not_part_a_character_from_its_combining_marks_or_an_emoji() -> None:
    # e + COMBINING ACUTE ACCENT: never the accent alone at the start of a part.
    assert split_text("e\u0301" * 4, 3) == ["e\u0301"] * 4
    # Flags are pairs of regional indicators; outside the BMP each counts 2 (UTF-16).
    assert split_text("🇫🇷🇩🇪🇮🇹", 5) == ["🇫🇷", "🇩🇪", "🇮🇹"]
    assert text_length("😀") == 2
    assert split_text("😀😀😀", 4) == ["😀😀", "😀"]


def test_a_text_within_the_limit_is_unchanged() -> None:
    assert split_text("  hello  ", 9) == ["  hello  "]
    assert split_text("", 1) == [""]
    with pytest.raises(ValueError):
        split_text("x", 0)


def test_buttons_image_and_custom_stay_with_the_last_part() -> None:
    buttons = [{"title": "Yes", "payload": "/yes"}]
    message = {
        "recipient_id": "u1",
        "text": "one two three four",
        "buttons": buttons,
        "image": "https://example.com/a.png",
        "custom": {"x": 1},
    }
    assert split_message(message, 8) == [
        {"recipient_id": "u1", "text": "one two"},
        {"recipient_id": "u1", "text": "three"},
        {**message, "text": "four"},
    ]
    assert split_replies([{"text": "short"}, {"image": "i"}], 8) == [
        {"text": "short"},
        {"image": "i"},
    ]
    assert split_replies([message], None) == [message]


# Turns ----------------------------------------------------------------------------------------


def test_batches() -> None:
    assert list(batches([1, 2, 3, 4, 5, 6, 7], 3)) == [[1, 2, 3], [4, 5, 6], [7]]
    assert list(batches([1, 2], None)) == [[1, 2]]
    assert list(batches([1, 2], 5)) == [[1, 2]]


def test_a_turn_goes_out_in_requests_of_at_most_max_messages_per_request() -> None:
    turn = RequestTemplate(
        "turn",
        url="'https://api.example.com/reply'",
        body="{batch: batch, texts: messages[].text}",
    )
    outbound = Outbound({}, turn=turn, max_messages_per_request=5)
    replies = [{"text": f"m{n}"} for n in range(12)]
    requests, problems = outbound.render_replies(replies, "u1", None)
    assert problems == []
    assert [json.loads(r.body or b"") for r in requests] == [
        {"batch": 0, "texts": ["m0", "m1", "m2", "m3", "m4"]},
        {"batch": 1, "texts": ["m5", "m6", "m7", "m8", "m9"]},
        {"batch": 2, "texts": ["m10", "m11"]},
    ]


# Rates ----------------------------------------------------------------------------------------


def test_the_spacing_keeps_within_both_rates() -> None:
    assert Rate(per_second=4).spacing == 0.25
    assert Rate(per_minute=20).spacing == 3.0
    assert Rate(per_second=1, per_minute=20).spacing == 3.0
    assert Rate(per_second=0.5, per_minute=60).spacing == 2.0
    with pytest.raises(ValueError):
        Rate(per_second=0)


@pytest.mark.parametrize(
    "outbound, found",
    [
        ({"max_text": 0}, "max_text"),
        ({"max_messages_per_request": 0}, "max_messages_per_request"),
        ({"rate": {"per_second": 0}}, "per_second"),
        ({"rate": {"per_hour": 3}}, "per_hour"),
        ({"rate": {}}, "rate"),
    ],
)
def test_wrong_limits_are_findings(outbound: Dict[str, Any], found: str) -> None:
    document = {
        "name": "limited",
        "request": {"sender": "user", "text": "text"},
        "outbound": {"text": {"url": "'https://api.example.com'"}, **outbound},
    }
    checked = check_channel(document)
    assert checked.config is None and checked.findings, outbound
    assert any(found in f"{f.path} {f.message}" for f in checked.findings), checked.findings


def test_the_limits_load() -> None:
    config = load_channel(
        {
            "name": "limited",
            "request": {"sender": "user", "text": "text"},
            "outbound": {
                "text": {"url": "'https://api.example.com'"},
                "max_text": 4096,
                "rate": {"per_second": 1, "per_minute": 20},
            },
        }
    )
    assert config.outbound is not None
    assert (config.outbound.max_text, config.outbound.spacing) == (4096, 3.0)


# Pacing in memory, with the test's clock -------------------------------------------------------


class Clock:
    """Virtual time: sleepers wake in the order of their wake-up times, the clock jumping to
    each one's once every task has run as far as it can."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: List[float] = []
        self._sleepers: List[Tuple[float, int, asyncio.Future[None]]] = []
        self._count = itertools.count()
        self._advancing: Optional[asyncio.Task[None]] = None

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._count), woken))
        if self._advancing is None or self._advancing.done():
            self._advancing = asyncio.ensure_future(self._advance())
        await woken

    async def _advance(self) -> None:
        while self._sleepers:
            for _ in range(50):  # every other task runs until it sleeps or ends
                await asyncio.sleep(0)
            when, _, woken = heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            woken.set_result(None)


def paced(
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
    answers: Optional[Dict[Tuple[str, str], List[Outcome]]] = None,
    **rate: float,
) -> Tuple[Delivery, List[Tuple[float, str, str]]]:
    """A Delivery with ``rate``, whose attempts are recorded (time, conversation, text) and
    answered from ``answers`` (by conversation and text; then done)."""
    sent: List[Tuple[float, str, str]] = []
    planned = answers or {}

    async def attempt(session: Any, request: OutboundRequest, *_: Any) -> Any:
        body = json.loads(request.body or b"")
        sent.append((clock.now, body["to"], body["text"]))
        queue = planned.get((body["to"], body["text"]), [])
        return (queue.pop(0) if queue else Outcome(True, status=200)), request

    monkeypatch.setattr(delivery_module, "attempt_chain", attempt)
    template = RequestTemplate("text", url="'http://unused'")
    outbound = Outbound({"text": template}, retries=2, backoff=0.01, rate=rate)
    return Delivery("paced", outbound, clock=clock, sleep=clock.sleep), sent


def request(conversation: str, text: str) -> OutboundRequest:
    body = json.dumps({"to": conversation, "text": text}).encode()
    return OutboundRequest("text", "POST", "http://unused/send", {}, body)


def deliver(delivery: Delivery, batches: List[Tuple[str, List[str]]]) -> None:
    async def main() -> None:
        tasks = [
            delivery.schedule(conversation, [request(conversation, t) for t in texts])
            for conversation, texts in batches
        ]
        await asyncio.gather(*tasks)
        await delivery.close()

    asyncio.run(main())


def test_one_conversations_requests_are_spaced(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    delivery, sent = paced(monkeypatch, clock, per_second=2)
    deliver(delivery, [("c1", ["a", "b"]), ("c1", ["c"])])
    assert [(t - 1000.0, text) for t, _, text in sent] == [(0.0, "a"), (0.5, "b"), (1.0, "c")]


def test_two_conversations_do_not_hold_each_other_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    delivery, sent = paced(monkeypatch, clock, per_minute=30)  # one every 2 s
    deliver(delivery, [("c1", ["a1", "a2"]), ("c2", ["b1", "b2"])])
    first = {conversation: t for t, conversation, _ in reversed(sent)}
    assert first == {"c1": 1000.0, "c2": 1000.0}  # both at once
    for conversation in ("c1", "c2"):
        times = [t for t, c, _ in sent if c == conversation]
        assert times[1] - times[0] >= 2.0


def test_a_retry_after_delays_its_conversation_only_and_counts_as_spacing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    busy = Outcome(False, retry=True, delay=5.0, status=429, problem="HTTP 429")
    delivery, sent = paced(monkeypatch, clock, {("c1", "a2"): [busy]}, per_second=1)
    deliver(delivery, [("c1", ["a1", "a2", "a3"]), ("c2", ["b1", "b2"])])
    c1 = [(t - 1000.0, text) for t, c, text in sent if c == "c1"]
    c2 = [(t - 1000.0, text) for t, c, text in sent if c == "c2"]
    # a2 at 1 s is answered 429 Retry-After 5: again at 6 s; a3 one second later.
    assert c1 == [(0.0, "a1"), (1.0, "a2"), (6.0, "a2"), (7.0, "a3")]
    assert c2 == [(0.0, "b1"), (1.0, "b2")]


def test_without_a_rate_nothing_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    delivery, sent = paced(monkeypatch, clock)
    deliver(delivery, [("c1", ["a", "b", "c"])])
    assert clock.slept == [] and len(sent) == 3
