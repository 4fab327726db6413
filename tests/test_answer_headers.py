"""Answer headers as expressions, and requests without a body.

Header values of answer templates (``response``, ``defer.response``, handshakes' answers) are
JMESPath expressions over ``{messages, request, sender}``: a fixed value is a literal, a null
value leaves the header out, and no value from a request can add a header or split the answer.
A request with no body decodes to null, so that a handshake can answer it from its headers
(RingCentral's validation request); a route that carries messages refuses it with 400.
"""

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
import yaml

from generic_connector.answers import Rendered, ResponseTemplate
from generic_connector.cli.dryrun import Recorder, run_case
from generic_connector.cli.validate import validate_file
from generic_connector.config import check_channel, load_channel
from generic_connector.errors import Finding
from generic_connector.pipeline import Exchange, Pipeline, make_store
from generic_connector.request import IncomingRequest, decode_body
from tests.test_pipeline import Echo

MESSAGES = [{"recipient_id": "42", "text": "Hi"}, {"recipient_id": "42", "image": "u.png"}]
# What a CR, an LF or a NUL could do in a header: end it and start another, or cut it short.
HOSTILE = [
    "tok\r\nSet-Cookie: session=stolen",
    "tok\nX-Injected: 1",
    "tok\rX-Injected: 1",
    "tok\x00rest",
    "tok\x1b[2J",
    "tok\x7f",
    "\r\n\r\n<html>",
]


def run(
    channel: Dict[str, Any],
    body: bytes,
    headers: Optional[Dict[str, str]] = None,
) -> Tuple[Exchange, Rendered, Echo]:
    config = load_channel(channel)
    pipeline = Pipeline(config, make_store(config), Recorder())
    assistant = Echo()
    request = IncomingRequest.from_parts(body, headers)
    exchange, answer = asyncio.run(pipeline.run(request, assistant))
    return exchange, answer, assistant


def findings(entry: Dict[str, Any]) -> List[Finding]:
    config, found, _ = check_channel(entry, "label")
    assert config is None
    return found


def answering(headers: Dict[str, str]) -> Dict[str, Any]:
    """A channel whose answers carry ``headers``."""
    return {"name": "x", "request": {"sender": "s", "text": "t"}, "response": {"headers": headers}}


# --- header values are expressions ---------------------------------------------------------


def test_header_values_are_expressions_over_messages_request_and_sender() -> None:
    template = ResponseTemplate(
        body="`{}`",
        headers={
            "X-Count": "to_string(length(messages))",
            "X-Sender": "sender",
            "X-Ref": "request.ref",
            "Cache-Control": "'no-store'",
        },
    )
    rendered = template.render(MESSAGES, {"ref": "r-1"}, "42")
    assert dict(rendered.headers) == {
        "X-Count": "2",
        "X-Sender": "42",
        "X-Ref": "r-1",
        "Cache-Control": "no-store",
    }
    assert rendered.body == b"{}"


def test_a_header_that_gives_null_is_left_out() -> None:
    template = ResponseTemplate(headers={"X-Thread": "request.thread", "X-Fixed": "`null`"})
    assert dict(template.render(MESSAGES, {}, "42").headers) == {}


@pytest.mark.parametrize(
    "expression, sent",
    [
        ("`3`", "3"),
        ("`true`", "true"),
        ("request.n", "7"),
        ("request.obj", '{"a": 1}'),
        ("request.list", '["x", "y"]'),
        ("request.tab", "a\tb"),  # a tab may be in a header value
        ("request.accented", "café"),
    ],
)
def test_a_string_is_sent_as_it_is_and_anything_else_as_json(expression: str, sent: str) -> None:
    request = {"n": 7, "obj": {"a": 1}, "list": ["x", "y"], "tab": "a\tb", "accented": "café"}
    template = ResponseTemplate(body="`{}`", headers={"X-Value": expression})
    assert dict(template.render([], request, None).headers) == {"X-Value": sent}


def test_literal_headers_and_body_make_one_answer_rendered_once() -> None:
    template = ResponseTemplate(body="`{}`", headers={"Cache-Control": "'no-store'"})
    first = template.render(MESSAGES, {"a": 1}, "1")
    assert first is template.render([], {"b": 2}, "2")
    assert dict(first.headers) == {"Cache-Control": "no-store"}
    assert not template.reads_messages
    # A computed header depends on the request: each answer is rendered.
    computed = ResponseTemplate(body="`{}`", headers={"X-Ref": "request.ref"})
    assert computed.reads_messages
    assert computed.render([], {"ref": "a"}, None).headers == {"X-Ref": "a"}
    assert computed.render([], {"ref": "b"}, None).headers == {"X-Ref": "b"}


@pytest.mark.parametrize("value", HOSTILE)
def test_a_value_with_a_control_character_never_reaches_the_answer(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    template = ResponseTemplate(
        body="`{}`", headers={"X-Echo": "request.token", "X-Other": "'kept'"}
    )
    with caplog.at_level(logging.WARNING, logger="generic_connector.answers"):
        rendered = template.render([], {"token": value}, None)
    assert dict(rendered.headers) == {"X-Other": "kept"}
    assert rendered.body == b"{}"
    [record] = caplog.records
    assert "X-Echo" in record.getMessage()
    assert value not in record.getMessage()
    assert "tok" not in record.getMessage()


def test_a_lone_surrogate_never_reaches_the_answer() -> None:
    template = ResponseTemplate(headers={"X-Echo": "request.token"})
    assert template.render([], {"token": "a\ud800b"}, None).headers == {}


@pytest.mark.parametrize("name", ["Bad Name", "X:Y", "X\r\nY", "", "é"])
def test_a_header_name_that_is_no_http_token_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid header name"):
        ResponseTemplate(headers={name: "'v'"})
    [finding] = findings(answering({name: "'v'"}))
    assert (finding.code, finding.message) == ("invalid-header-name", "not a valid header name")
    assert finding.path == f"x.response.headers.{name}"


@pytest.mark.parametrize(
    "name, hint",
    [
        ("Content-Type", "give it as the template's content_type"),
        ("content-length", "remove it"),
        ("Transfer-Encoding", "remove it"),
        ("Connection", "remove it"),
        ("X-Request-ID", "remove it"),
    ],
)
def test_headers_the_server_writes_cannot_be_set(name: str, hint: str) -> None:
    with pytest.raises(ValueError, match="cannot be set by an answer template"):
        ResponseTemplate(headers={name: "'x'"})
    [finding] = findings(answering({name: "'x'"}))
    assert finding.code == "invalid-header-name"
    assert finding.hint == hint


def test_a_literal_value_that_cannot_be_sent_is_a_finding() -> None:
    header = {"X-Bad": '`"a\\r\\nb"`'}  # the JSON literal "a\r\nb": a real CR LF
    with pytest.raises(ValueError, match="control character"):
        ResponseTemplate(headers=header)
    [finding] = findings(answering(header))
    assert (finding.code, finding.path) == ("invalid-value", "x.response.headers.X-Bad")
    assert "control character" in finding.message


# --- values written before header values were expressions ----------------------------------


OLD_MAPPING = """\
name: old
request: {sender: s, text: t}
response:
  body: "`{}`"
  headers:
    Cache-Control: no-store
    X-Content-Type-Options: nosniff
    X-Fine: "'fine'"
handshakes:
  - name: check
    method: GET
    response:
      body: "'ok'"
      content_type: text/plain
      headers: {X-Format: text/xml}
defer:
  after: 1
  response:
    headers: {Retry-Hint: max-age=0}
outbound:
  text: {url: "'https://api.example.com/send'", body: "{text: message.text}"}
"""


def test_an_old_literal_value_is_a_finding_saying_how_to_write_it(tmp_path: Path) -> None:
    path = tmp_path / "old.yml"
    path.write_text(OLD_MAPPING, encoding="utf-8")
    shown = [str(finding) for finding in validate_file(path).findings]
    assert shown == [
        f"{path}:6:5: old.response.headers.Cache-Control: expression does not compile: "
        "Unknown token '-' at column 3 (header values are JMESPath expressions; write a fixed "
        "value as a literal: Cache-Control: \"'no-store'\")",
        f"{path}:7:5: old.response.headers.X-Content-Type-Options: `nosniff` reads 'nosniff', "
        "which the answer's data ({messages, request, sender}) does not have: the header would "
        "never be sent (header values are JMESPath expressions; write a fixed value as a "
        "literal: X-Content-Type-Options: \"'nosniff'\")",
        f"{path}:15:17: old.handshakes[0].response.headers.X-Format: expression does not "
        "compile: Unknown token / at column 5 (header values are JMESPath expressions; write a "
        "fixed value as a literal: X-Format: \"'text/xml'\")",
        f"{path}:19:15: old.defer.response.headers.Retry-Hint: expression does not compile: "
        "Unknown token '-' at column 4 (header values are JMESPath expressions; write a fixed "
        "value as a literal: Retry-Hint: \"'max-age=0'\")",
    ]


@pytest.mark.parametrize("old", ["no-store", 'W/"a\'b"', "max-age=0, private", "a\\b/c"])
def test_the_literal_a_finding_suggests_gives_the_old_value(old: str) -> None:
    # The fix the finding shows, read as YAML reads it, sends the value that was meant.
    [finding] = findings(answering({"X-Value": old}))
    fix = finding.hint.split("write a fixed value as a literal: ", 1)[1]
    fixed = yaml.safe_load(fix)["X-Value"]
    template = ResponseTemplate(body="`{}`", headers={"X-Value": fixed})
    assert template.render([], {}, None).headers == {"X-Value": old}


def test_a_response_list_and_a_deferred_answer_take_header_expressions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEADER_SECRET", "s3")
    config = load_channel(
        {
            "name": "x",
            "request": {"sender": "s", "text": "t"},
            "response": [
                {"when": "request.kind == 'a'", "body": "`{}`", "headers": {"X-Kind": "'a'"}},
                {"body": "`{}`", "headers": {"X-Sender": "sender"}},
            ],
            "defer": {"after": 1, "response": {"headers": {"X-Key": "env('HEADER_SECRET')"}}},
            "outbound": {"text": {"url": "'https://api.example.com/send'", "body": "message"}},
        }
    )
    assert config.response.render([], {"kind": "a"}, "u1", None).headers == {"X-Kind": "a"}
    assert config.response.render([], {"kind": "b"}, "u1", None).headers == {"X-Sender": "u1"}
    assert config.defer is not None
    assert config.defer.response.render([], {}, None).headers == {"X-Key": "s3"}
    # env() in a header is read at start-up, as anywhere else.
    assert "HEADER_SECRET" in config.env_names()


# --- a handshake on a request without a body -----------------------------------------------


VALIDATION = {
    "name": "validated",
    "auth": {"type": "token", "secret_env": "VALIDATED_TOKEN", "header": "Verification-Token"},
    "handshakes": [
        {
            "name": "validation",
            "when": "header('Validation-Token')",
            "response": {
                "body": "''",
                "format": "text",
                "content_type": "application/json",
                "headers": {"Validation-Token": "header('Validation-Token')"},
            },
        }
    ],
    "request": {"sender": "chat", "text": "text"},
    "response": {"body": "`{}`"},
}


@pytest.fixture
def validated(monkeypatch: pytest.MonkeyPatch) -> Dict[str, Any]:
    monkeypatch.setenv("VALIDATED_TOKEN", "verify-me")
    return VALIDATION


def test_a_request_without_a_body_is_answered_by_a_handshake_from_its_headers(
    validated: Dict[str, Any],
) -> None:
    headers = {"Validation-Token": "abc123", "Verification-Token": "verify-me"}
    exchange, answer, assistant = run(validated, b"", headers)
    assert exchange.handshake == "validation"
    assert (answer.status, answer.body, answer.content_type) == (200, b"", "application/json")
    assert dict(answer.headers) == {"Validation-Token": "abc123"}
    assert assistant.handled == []


@pytest.mark.parametrize("sent", [None, "wrong"])
def test_a_handshake_on_post_is_authenticated_as_every_post_is(
    validated: Dict[str, Any], sent: Optional[str]
) -> None:
    headers = {"Validation-Token": "abc123"}
    if sent is not None:
        headers["Verification-Token"] = sent
    exchange, answer, _ = run(validated, b"", headers)
    assert answer.status == 401
    assert json.loads(answer.body) == {"error": "unauthorized"}
    assert "abc123" not in answer.body.decode() and "Validation-Token" not in answer.headers
    assert exchange.handshake is None


@pytest.mark.parametrize("value", HOSTILE)
def test_a_hostile_token_is_not_echoed(validated: Dict[str, Any], value: str) -> None:
    headers = {"Validation-Token": value, "Verification-Token": "verify-me"}
    _, answer, _ = run(validated, b"", headers)
    assert answer.status == 200
    assert dict(answer.headers) == {}
    assert answer.body == b""


def test_a_message_route_refuses_an_empty_body_with_400(validated: Dict[str, Any]) -> None:
    _, answer, assistant = run(validated, b"", {"Verification-Token": "verify-me"})
    assert (answer.status, answer.content_type) == (400, "application/json")
    assert json.loads(answer.body) == {
        "error": "request body is empty; this channel reads messages from a JSON body"
    }
    assert assistant.handled == []


def test_a_message_with_a_body_still_reaches_the_assistant(validated: Dict[str, Any]) -> None:
    body = b'{"chat": "c1", "text": "hello"}'
    headers = {"Verification-Token": "verify-me", "Content-Type": "application/json"}
    _, answer, assistant = run(validated, body, headers)
    assert (answer.status, answer.body) == (200, b"{}")
    assert [(m.sender_id, m.text) for m in assistant.handled] == [("c1", "hello")]


@pytest.mark.parametrize(
    "request_format, expected",
    [("json", "a JSON body"), ("xml", "an XML body"), ("auto", "a JSON, form or XML body")],
)
def test_the_refusal_of_an_empty_body_names_what_the_channel_reads(
    request_format: str, expected: str
) -> None:
    channel = {"name": "x", "request": {"format": request_format, "sender": "s", "text": "t"}}
    _, answer, assistant = run(channel, b"", {"Content-Type": "text/csv"})
    assert answer.status == 400
    assert json.loads(answer.body)["error"] == (
        f"request body is empty; this channel reads messages from {expected}"
    )
    assert assistant.handled == []


def test_a_handshake_condition_on_body_fields_does_not_match_an_empty_body() -> None:
    # Slack's url_verification reads the body: nothing to read, no match, and no message.
    channel = {
        "name": "x",
        "handshakes": [{"name": "challenge", "when": "type == 'url_verification'",
                        "response": {"body": "request.challenge"}}],
        "request": {"sender": "s", "text": "t"},
    }  # fmt: skip
    exchange, answer, _ = run(channel, b"")
    assert exchange.handshake is None
    assert answer.status == 400
    assert "request body is empty" in json.loads(answer.body)["error"]


def test_an_empty_form_is_a_form_without_fields() -> None:
    channel = {"name": "x", "request": {"format": "form", "sender": "From", "text": "Body"}}
    _, answer, _ = run(channel, b"", {"Content-Type": "application/x-www-form-urlencoded"})
    assert answer.status == 422
    assert json.loads(answer.body)["error"] == "no sender in the request: `From` found nothing"


@pytest.mark.parametrize(
    "body_format, content_type, decoded",
    [
        ("json", "", None),
        ("json", "application/json", None),
        ("json", "text/csv", None),  # no body: nothing to be of another type
        ("xml", "", None),
        ("auto", "", None),
        ("auto", "application/xml", None),
        ("auto", "application/x-www-form-urlencoded", {}),
        ("form", "", {}),
    ],
)
def test_an_empty_body_decodes_to_null_but_for_forms(
    body_format: str, content_type: str, decoded: Any
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    request = IncomingRequest.from_parts(b"", headers)
    assert decode_body(request, body_format) == decoded


def test_a_body_of_white_space_is_still_not_json() -> None:
    _, answer, _ = run({"name": "x", "request": {"sender": "s", "text": "t"}}, b" \n")
    assert answer.status == 400
    assert json.loads(answer.body)["error"].startswith("request body is not valid JSON")


# --- test cases compare the answer's headers -----------------------------------------------


def case(expected: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "name": "validation",
        "headers": {"Validation-Token": "abc123", "Verification-Token": "verify-me"},
        "env": {"VALIDATED_TOKEN": "verify-me"},
        "expect": {"status": 200, "headers": expected},
    }


def test_a_test_case_compares_the_answers_headers_by_name_in_any_case() -> None:
    config, found, _ = check_channel(VALIDATION, "label")
    assert config is not None and found == []
    expected = {"validation-token": "abc123", "CONTENT-TYPE": "application/json", "X-No": None}
    assert run_case(config, case(expected), Path(".")) == []
    assert run_case(config, case({"Validation-Token": "other"}), Path(".")) == [
        'headers.Validation-Token: expected "other", got "abc123"'
    ]
    assert run_case(config, case({"Validation-Token": None}), Path(".")) == [
        'headers.Validation-Token: expected null, got "abc123"'
    ]
    refused = {**case({"Validation-Token": "abc123"}), "env": {"VALIDATED_TOKEN": "other"}}
    assert run_case(config, refused, Path(".")) == [
        "status: expected 200, got 401 (401: unauthorized; token does not match)",
        "expected an answer's headers, but the request was refused (401: unauthorized; "
        "token does not match)",
    ]
