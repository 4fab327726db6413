"""Platform limits through a real ``rasa run``: the demo's 10,000-character greeting on the
``longreply`` channel (tests/conftest.py: max_text 1000, rate 4 per second) reaches the stand-in
API in parts, in order, paced, through a 429 with Retry-After."""

import json
from pathlib import Path
from typing import List

import pytest
import yaml

from tests.platform_api import PlatformAPI, Recorded
from tests.rasa_process import RasaServer

pytestmark = pytest.mark.e2e

JSON = {"Content-Type": "application/json"}
MAX_TEXT = 1000
SPACING = 0.25  # rate: {per_second: 4}
EARLY = 0.05  # a request may reach the stand-in API sooner after the one before than it left
DOMAIN = Path(__file__).resolve().parent.parent / "demo" / "domain.yml"


def the_long_greeting() -> str:
    domain = yaml.safe_load(DOMAIN.read_text(encoding="utf-8"))
    [text] = [
        variation["text"]
        for variation in domain["responses"]["utter_greet"]
        if variation.get("channel") == "longreply"
    ]
    return text


def cut_from(text: str, parts: List[str]) -> bool:
    """Whether ``text`` is ``parts`` in order, each followed by whitespace only (what a cut
    drops: the spaces or line breaks between two parts; none after a word cut hard)."""
    at = 0
    for part in parts:
        if not part or not text.startswith(part, at):
            return False
        at += len(part)
        while at < len(text) and text[at].isspace():
            at += 1
    return at == len(text)


def test_a_long_reply_goes_out_in_paced_parts_through_a_429(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    user = "limits-user-1"
    original = the_long_greeting()
    assert len(original) == 10_000

    def mine(request: Recorded) -> bool:
        return request.path == "/longreply/messages" and request.json.get("to") == user

    # The third part is refused once, with a Retry-After of one second.
    platform_api.plan(
        lambda r: mine(r) and r.json["text"].startswith("Paragraph 03"),
        [(429, {"Retry-After": "1"}, {"ok": False, "error": "ratelimited"})],
    )
    body = json.dumps({"from": user, "text": "hello", "id": "limits-1"}).encode()
    status, _, answer = platforms_rasa.send("/webhooks/longreply/webhook", body, JSON)
    assert (status, json.loads(answer)) == (200, {})

    platform_api.received(lambda r: mine(r) and "buttons" in r.json, 1, timeout=60)
    seen = [r for r in platform_api.requests if mine(r)]
    delivered = [r for r in seen if r.status == 200]
    parts = [r.json["text"] for r in delivered]

    # In parts of at most max_text, in order, cut at whitespace: together the whole text.
    assert len(parts) >= len(original) // MAX_TEXT
    assert all(len(part) <= MAX_TEXT for part in parts)
    assert cut_from(original, parts), [part[:30] for part in parts]
    assert parts[0].startswith("Paragraph 01, sentence 01") and parts[-1].endswith("The end.")
    # The button comes after the whole text: with the last part only.
    assert [r.json.get("buttons") for r in delivered] == [None] * (len(parts) - 1) + [["More"]]

    # The 429 is honoured: the refused part again a second later, then the rest.
    refused = [index for index, r in enumerate(seen) if r.status == 429]
    assert len(refused) == 1
    again = refused[0] + 1
    assert seen[again].json == seen[refused[0]].json
    assert seen[again].at - seen[refused[0]].at >= 1.0 - EARLY
    # Paced: no two requests of the conversation closer than the spacing.
    gaps = [later.at - earlier.at for earlier, later in zip(seen, seen[1:])]
    assert all(gap >= SPACING - EARLY for gap in gaps), gaps
