"""Receipts (``request.receipts``): delivery, read and failed events counted per channel in
/metrics, acknowledged, and given to Rasa only with ``request.receipts_intent``."""

import asyncio
import json
from typing import Any, Dict, List, Optional

import pytest

from generic_connector.cli.dryrun import case_request, environment
from generic_connector.config import check_channel, load_yaml, rebuild_auth
from generic_connector.idempotency import Replies
from generic_connector.mapping import Extracted
from generic_connector.metrics import exposition
from generic_connector.pipeline import Assistant, Exchange, Pipeline
from generic_connector.request import IncomingRequest
from tests.rasa_process import ROOT


def series(channel: str) -> Dict[str, float]:
    """The exposition's samples of one channel, by series name and labels."""
    found = {}
    for line in exposition().decode().splitlines():
        if line and not line.startswith("#") and f'channel="{channel}"' in line:
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


def receipts(channel: str) -> Dict[str, float]:
    prefix = f'generic_connector_receipts_total{{channel="{channel}",receipt="'
    return {
        name[len(prefix) : -2]: count
        for name, count in series(channel).items()
        if name.startswith(prefix)
    }


class Recording(Assistant):
    def __init__(self) -> None:
        self.handled: List[Extracted] = []

    async def handle(self, message: Extracted) -> Replies:
        self.handled.append(message)
        return []


def channel(name: str, intent: Optional[str] = None) -> Dict[str, Any]:
    request: Dict[str, Any] = {
        "events": "events",
        "receipts": [
            {"name": "delivered", "when": "status == 'delivered'", "sender": "recipient"},
            {"name": "read", "when": "status == 'read'", "sender": "recipient"},
        ],
        "ignore": [{"name": "a status", "when": "status"}],
        "sender": "from",
        "text": "text",
    }
    if intent is not None:
        request["receipts_intent"] = intent
    return {"name": name, "request": request}


EVENTS = [
    {"status": "delivered", "recipient": "u1", "id": "m1"},
    {"from": "u1", "text": "hi"},
    {"status": "read", "recipient": "u1", "id": "m1"},
    {"status": "read", "recipient": "u2", "id": "m2"},
    {"status": "deleted", "recipient": "u2", "id": "m3"},  # no receipt: the ignore rule
]


def run(document: Dict[str, Any]) -> "tuple[Pipeline, Exchange, Recording]":
    """One request of ``EVENTS``; the pipeline is returned so that its counts stay in /metrics
    (channels' counts are held weakly) until the test has read them."""
    checked = check_channel(document)
    assert checked.config is not None, checked.findings
    pipeline = Pipeline(checked.config)
    assistant = Recording()
    body = json.dumps({"events": EVENTS}).encode()
    request = IncomingRequest.from_parts(body, {"Content-Type": "application/json"})
    exchange, answer = asyncio.run(pipeline.run(request, assistant))
    assert answer.status == 200
    return pipeline, exchange, assistant


def test_receipts_are_counted_by_name_and_not_given_to_rasa_by_default() -> None:
    pipeline, exchange, assistant = run(channel("receipts-counted"))
    assert [message.text for message in assistant.handled] == ["hi"]
    assert exchange.ignored == [
        (0, "receipt: delivered"),
        (2, "receipt: read"),
        (3, "receipt: read"),
        (4, "a status"),
    ]
    assert receipts("receipts-counted") == {"delivered": 1, "read": 2}
    found = series("receipts-counted")
    assert (
        found['generic_connector_events_ignored_total{channel="receipts-counted",rule="a status"}']
        == 1
    )
    assert not any("receipt: " in name for name in found)  # counted once: as receipts


def test_receipts_are_given_to_rasa_as_the_configured_intent_with_their_metadata() -> None:
    pipeline, exchange, assistant = run(channel("receipts-passed", intent="/receipt"))
    assert [(m.sender_id, m.text) for m in assistant.handled] == [
        ("u1", "/receipt"),
        ("u1", "hi"),
        ("u1", "/receipt"),
        ("u2", "/receipt"),
    ]
    assert assistant.handled[2].metadata == {"receipt": "read", "event": EVENTS[2]}
    assert assistant.handled[2].message_id is None
    assert exchange.ignored == [(4, "a status")]
    assert receipts("receipts-passed") == {"delivered": 1, "read": 2}


def test_a_channel_without_receipts_counts_none() -> None:
    document = channel("receipts-none")
    del document["request"]["receipts"]
    pipeline, exchange, _ = run(document)
    assert [rule for _, rule in exchange.ignored] == ["a status"] * 4
    assert receipts("receipts-none") == {}


def test_receipt_rules_are_validated() -> None:
    document = channel("receipts-invalid")
    document["request"]["receipts"].append({"name": "has space", "when": "status"})
    document["request"]["receipts"].append({"name": "no_when"})
    codes = [(f.code, f.path) for f in check_channel(document).findings]
    assert codes == [
        ("invalid-value", "receipts-invalid.request.receipts[2].name"),
        ("missing-key", "receipts-invalid.request.receipts[3].when"),
    ]


# The ready mappings' documented receipts: counted, acknowledged, not given to Rasa.
READY = [
    ("whatsapp", "a sent status is acknowledged, not sent to Rasa", "sent"),
    ("whatsapp", "a failed status is acknowledged, not sent to Rasa", "failed"),
    ("bandwidth", "a message-delivered status callback is acknowledged", "delivered"),
    ("google-rbm", "a DELIVERED user event is acknowledged, nothing reaches Rasa", "delivered"),
]


def ready_case(name: str, title: str) -> Dict[str, Any]:
    cases = load_yaml(ROOT / "mappings" / f"{name}.yml")["tests"]
    return next(case for case in cases if case["name"].startswith(title[:30]))


@pytest.mark.parametrize("name, title, receipt", READY)
def test_the_ready_mappings_documented_receipts_are_counted(
    name: str, title: str, receipt: str
) -> None:
    case = ready_case(name, title)
    checked = check_channel({"mapping": f"mappings/{name}.yml"}, base_dir=ROOT)
    assert checked.config is not None, checked.findings
    before = receipts(name).get(receipt, 0)
    assistant = Recording()
    with environment(case.get("env", {})):
        config = rebuild_auth(checked.config)
        request = case_request(case, ROOT / "mappings", config)
        pipeline = Pipeline(config)
        exchange, answer = asyncio.run(pipeline.run(request, assistant, case.get("time")))
    assert answer.status == 200
    assert assistant.handled == []
    assert [rule for _, rule in exchange.ignored] == [f"receipt: {receipt}"]
    assert receipts(name)[receipt] == before + 1
