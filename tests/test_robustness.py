"""Property-based tests: whatever arrives, the channel answers 2xx or a 4xx JSON error.

More than 10,000 generated requests (random JSON, wrong types where strings are expected,
huge and deeply nested bodies, broken form encoding, wrong content types) go through the
channel's own pipeline with a stand-in for Rasa: never a 5xx, never an exception.
"""

import asyncio
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generic_connector.config import check_channel, load_yaml
from generic_connector.idempotency import Replies
from generic_connector.mapping import Extracted
from generic_connector.pipeline import Assistant, Pipeline, make_store
from generic_connector.request import IncomingRequest

ROOT = Path(__file__).resolve().parent.parent
# 1,300 requests per mapping in CI (its Hypothesis profile: 100 examples), 130 in the inner loop:
# the whole suite stays within 15 minutes.
EXAMPLES = 13 * settings().max_examples


def channel(name: str) -> Pipeline:
    """A shipped mapping without its authentication, so requests get past it."""
    document = dict(load_yaml(ROOT / "mappings" / f"{name}.yml"))
    document.pop("auth", None)
    document.pop("outbound", None)
    document.pop("tests", None)
    config, findings, _ = check_channel(document)  # env('...') may be unset: reads give null
    assert config is not None, findings
    return Pipeline(config, make_store(config))


CHANNELS = {name: channel(name) for name in ("rest", "telegram", "twilio", "whatsapp")}
LOOP = asyncio.new_event_loop()
HANDLED: List[Any] = []


class Recording(Assistant):
    """Stands in for Rasa: records the message and answers it."""

    async def handle(self, message: Extracted) -> Replies:
        HANDLED.append(message)
        return [{"recipient_id": message.sender_id, "text": "ok"}]


class Failing(Assistant):
    async def handle(self, message: Extracted) -> Replies:
        raise RuntimeError("the tracker store is gone")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)
# Objects with the fields the mappings read, holding values of any type.
field_names = st.sampled_from(
    ["sender", "message", "text", "metadata", "input_channel", "update_id", "chat", "id",
     "callback_query", "data", "From", "Body", "entry", "changes", "value", "messages", "from"]
)  # fmt: skip
shaped = st.recursive(
    json_values, lambda children: st.dictionaries(field_names, children, max_size=6), max_leaves=40
)
bodies = st.one_of(
    shaped.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.dictionaries(field_names, st.text(), max_size=6).map(
        lambda d: "&".join(f"{k}={v}" for k, v in d.items()).encode("utf-8", "surrogatepass")
    ),
    st.sampled_from([b"%", b"a=%zz&b", b"=&=&", b"\xff\xfe", b"", b"{", b"[" * 100_000]),
    st.integers(1, 5).map(lambda n: b'{"sender": "' + b"x" * (n * 600_000) + b'"}'),
    st.integers(10, 5_000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)
content_types = st.sampled_from(
    ["application/json", "application/x-www-form-urlencoded", "text/plain", "", "text/xml",
     "multipart/form-data; boundary=x", "application/json; charset=utf-8",
     "application/vnd.api+json", "garbage/\u00e9", "application/octet-stream"]
)  # fmt: skip
headers = st.dictionaries(st.sampled_from(["X-Slack-Retry-Num", "X-Tenant"]), st.text(), max_size=2)
methods = st.sampled_from(["POST", "POST", "POST", "GET"])


def answer_of(name: str, request: IncomingRequest) -> Dict[str, Any]:
    _, rendered = LOOP.run_until_complete(CHANNELS[name].run(request, Recording()))
    return {"status": rendered.status, "type": rendered.content_type, "body": rendered.body}


def check(name: str, body: bytes, content_type: str, extra: Dict[str, str], method: str) -> None:
    request = IncomingRequest.from_parts(body, {"Content-Type": content_type, **extra}, {}, method)
    answer = answer_of(name, request)
    assert answer["status"] < 500, answer
    if answer["status"] >= 400:
        assert answer["type"] == "application/json"
        assert isinstance(json.loads(answer["body"])["error"], str)


@pytest.mark.parametrize("name", sorted(CHANNELS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
    derandomize=True,  # the same 5,200 requests every CI run: CI stays reproducible
)
@given(body=bodies, content_type=content_types, extra=headers, method=methods)
def test_any_request_gets_2xx_or_a_4xx_json_error(
    name: str, body: bytes, content_type: str, extra: Dict[str, str], method: str
) -> None:
    check(name, body, content_type, extra, method)


def test_the_generated_requests_also_reach_the_assistant() -> None:
    """The properties above are not only met by refusing everything."""
    before = len(HANDLED)
    check("rest", b'{"sender": "s", "message": "hi"}', "application/json", {}, "POST")
    assert len(HANDLED) == before + 1


def test_an_assistant_failure_is_a_500_json_error_logged_with_the_sender(caplog) -> None:  # noqa: ANN001
    request = IncomingRequest.from_parts(b'{"sender": "s-500", "message": "hi"}')
    _, rendered = LOOP.run_until_complete(CHANNELS["rest"].run(request, Failing()))
    assert rendered.status == 500
    assert json.loads(rendered.body) == {
        "error": "the assistant could not handle the message; retry later"
    }
    assert "the assistant failed to handle the message from sender s-500" in caplog.text
    assert "RuntimeError: the tracker store is gone" in caplog.text
