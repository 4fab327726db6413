"""The mapping engine on its own: no Rasa, no server."""

import json
import urllib.parse
from typing import Optional, Tuple

import pytest

from generic_connector.answers import RenderError, ResponseTemplate, to_xml
from generic_connector.expressions import EvaluationError, Expression, ExpressionError
from generic_connector.functions import Scope
from generic_connector.mapping import MappingError, RequestMapping
from generic_connector.request import IncomingRequest, decode_body

NESTED = {
    "update": {
        "from": {"id": 42, "name": "Ann"},
        "message": {"id": 7, "content": {"text": "hello"}},
        "chat": {"type": "private"},
    }
}


def nested_mapping(**extra: str) -> RequestMapping:
    return RequestMapping(
        sender="update.from.id",
        text="update.message.content.text",
        default_input_channel="nested",
        **extra,
    )


def test_nested_fields_are_extracted_and_numbers_become_strings() -> None:
    mapping = nested_mapping(
        metadata="{name: update.from.name, chat: update.chat.type}",
        message_id="update.message.id",
    )
    extracted = mapping.map(NESTED)
    assert extracted.sender_id == "42"
    assert extracted.text == "hello"
    assert extracted.input_channel == "nested"
    assert extracted.metadata == {"name": "Ann", "chat": "private"}
    assert extracted.message_id == "7"


def test_input_channel_expression_falls_back_to_the_channel_name() -> None:
    mapping = nested_mapping(input_channel="update.channel")
    assert mapping.map(NESTED).input_channel == "nested"
    with_channel = {"update": {**NESTED["update"], "channel": "kiosk"}}
    assert mapping.map(with_channel).input_channel == "kiosk"


def test_optional_fields_absent_give_none() -> None:
    extracted = nested_mapping(metadata="update.meta", message_id="update.mid").map(NESTED)
    assert (extracted.metadata, extracted.message_id) == (None, None)


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({}, "sender", "no sender in the request: `update.from.id` found nothing"),
        ({"update": {"from": {"id": ""}}}, "sender", "no sender in the request"),
        ({"update": {"from": {"id": 1}}}, "text", "no text in the request"),
        (
            {"update": {"from": {"id": [1]}}},
            "sender",
            "sender must be a string or a number, but `update.from.id` gave a list",
        ),
        (
            {"update": {"from": {"id": True}}},
            "sender",
            "sender must be a string or a number, but `update.from.id` gave a boolean",
        ),
    ],
)
def test_missing_or_wrong_fields_are_refused_naming_field_and_expression(
    body: dict, field: str, message: str
) -> None:
    with pytest.raises(MappingError) as raised:
        nested_mapping().map(body)
    assert raised.value.field == field
    assert raised.value.message.startswith(message)


def test_metadata_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(MappingError) as raised:
        nested_mapping(metadata="update.from.name").map(NESTED)
    assert (
        raised.value.message == "metadata must be an object, but `update.from.name` gave a string"
    )
    assert (raised.value.field, raised.value.expression) == ("metadata", "update.from.name")


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 10**19 * 5])
def test_ids_beyond_64_bits_are_refused(number: int) -> None:
    body = {"update": {"from": {"id": number}, "message": {"content": {"text": "hi"}}}}
    with pytest.raises(MappingError, match="sender is a number beyond 64 bits"):
        nested_mapping().map(body)


def test_ids_within_64_bits_become_text() -> None:
    body = {"update": {"from": {"id": 2**64 - 1}, "message": {"content": {"text": "hi"}}}}
    assert nested_mapping().map(body).sender_id == "18446744073709551615"


def test_bad_expressions_fail_when_the_mapping_is_built() -> None:
    with pytest.raises(ExpressionError, match=r"ends too early"):
        RequestMapping(sender="a.[", text="b", default_input_channel="x")
    with pytest.raises(ExpressionError, match=r"unknown function nope\(\)"):
        RequestMapping(sender="nope(a)", text="b", default_input_channel="x")


@pytest.mark.parametrize(
    "source, message, position, token, token_type, expected",
    [
        # The parser meets the end where `[` needs what follows: at len(source), the eof token.
        ("foo.[", "the expression ends too early", 5, "", "eof", ()),
        # A second name after a complete expression: the parser's token, at its start.
        ("a.b c", "Unexpected token: c at column 5", 4, "c", "unquoted_identifier", ()),
        # The lexer's own errors carry its value and no token type.
        ("type = 'text'", "Unknown token '=' at column 6", 5, "=", None, ()),
        ("'hello", "Unclosed ' delimiter at column 1", 0, "'hello", None, ()),
        # What may follow a dot, and the second dot that came instead.
        (
            "data..customer",
            "Expecting: ['quoted_identifier', 'unquoted_identifier', 'lbracket', 'lbrace'], "
            "got: dot at column 6",
            5,
            ".",
            "dot",
            ("quoted_identifier", "unquoted_identifier", "lbracket", "lbrace"),
        ),
    ],
)
def test_a_syntax_error_carries_its_position_and_token(
    source: str,
    message: str,
    position: int,
    token: str,
    token_type: Optional[str],
    expected: Tuple[str, ...],
) -> None:
    with pytest.raises(ExpressionError) as raised:
        Expression(source)
    error = raised.value
    assert str(error) == message
    assert (error.expression, error.position, error.column) == (source, position, position + 1)
    assert (error.token, error.token_type, error.expected) == (token, token_type, expected)
    assert error.syntax


def test_an_expression_refused_after_parsing_has_no_position() -> None:
    with pytest.raises(ExpressionError) as raised:
        Expression("nope(a)")
    assert str(raised.value) == "unknown function nope()"
    assert not raised.value.syntax
    assert (raised.value.position, raised.value.token) == (None, None)


MESSAGES = [{"recipient_id": "42", "text": "Hi"}, {"recipient_id": "42", "image": "u.png"}]


def test_default_response_is_the_rest_channel_list() -> None:
    rendered = ResponseTemplate().render(MESSAGES, {"sender": "42"}, "42")
    assert (rendered.status, rendered.content_type) == (200, "application/json")
    assert json.loads(rendered.body) == MESSAGES


def test_response_template_sees_messages_request_and_sender() -> None:
    template = ResponseTemplate(
        body="{to: sender, texts: messages[?text].text, ref: request.ref}", status=201
    )
    rendered = template.render(MESSAGES, {"ref": "r-1"}, "42")
    assert json.loads(rendered.body) == {"to": "42", "texts": ["Hi"], "ref": "r-1"}
    assert rendered.status == 201


def test_text_response_sends_the_string_itself() -> None:
    template = ResponseTemplate(body='join(`"\\n"`, messages[].text)', content_type="text/plain")
    assert template.render(MESSAGES, {}, "42").body == b"Hi"


def test_form_field_holding_json_is_decoded_inside_a_mapping() -> None:
    # Slack interactivity posts payload=<json> as a form.
    payload = {"user": {"id": "U1"}, "actions": [{"value": "/greet"}]}
    raw = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    request = IncomingRequest.from_parts(raw, {"Content-Type": "application/x-www-form-urlencoded"})
    body = decode_body(request, "form")
    mapping = RequestMapping(
        sender="parse_json(payload).user.id",
        text="parse_json(payload).actions[0].value",
        default_input_channel="slack",
    )
    extracted = mapping.map(body)
    assert (extracted.sender_id, extracted.text) == ("U1", "/greet")


def test_headers_query_and_body_are_reachable_from_an_event() -> None:
    request = IncomingRequest.from_parts(b"{}", {"X-Tenant": "acme"}, {"retry": "2"}, method="POST")
    expression = Expression("{tenant: header('x-tenant'), retry: query('retry'), all: body().a}")
    scope = Scope(request, {"a": 1})
    assert expression.search({}, scope) == {"tenant": "acme", "retry": "2", "all": 1}
    assert expression.search({}) == {"tenant": None, "retry": None, "all": None}


@pytest.mark.parametrize(
    "selected, events",
    [([{"a": 1}, {"a": 2}], [{"a": 1}, {"a": 2}]), ({"a": 1}, [{"a": 1}]), (None, [])],
)
def test_events_list_object_or_nothing(selected: object, events: list) -> None:
    mapping = RequestMapping(sender="a", text="a", default_input_channel="x", events="e")
    assert mapping.select_events({"e": selected}) == events


def test_events_that_are_not_a_list_or_object_are_refused() -> None:
    mapping = RequestMapping(sender="a", text="a", default_input_channel="x", events="e")
    with pytest.raises(MappingError) as raised:
        mapping.select_events({"e": "text"})
    assert raised.value.message == "`e` must select a list of events, got a string"


def test_ignore_rules_first_match_wins() -> None:
    mapping = RequestMapping(
        sender="a",
        text="text",
        default_input_channel="x",
        ignore=[{"name": "echo", "when": "is_echo"}, {"name": "no text", "when": "!text"}],
    )
    assert mapping.map({"is_echo": True, "text": "hi"}).name == "echo"
    assert mapping.map({"text": ""}).name == "no text"  # no sender either: rules come first
    assert mapping.map({"is_echo": True, "a": "me", "text": "hi"}, ignore_rules=False).text == "hi"
    event = {"a": "me", "text": "hi"}
    assert mapping.map(event) == ("me", "hi", "x", None, None, event, None, None, None)


def test_xml_is_escaped_and_nulls_leave_nothing() -> None:
    xml = to_xml({"Response": {"Message": [{"Body": 'a < b & "c"', "Media": None}], "@v": "1&2"}})
    assert xml == (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<Response v="1&amp;2"><Message><Body>a &lt; b &amp; "c"</Body></Message></Response>'
    )


def test_xml_response_template() -> None:
    template = ResponseTemplate(
        body="{Response: {Message: messages[].{Body: text}}}", content_type="application/xml"
    )
    rendered = template.render([{"text": "<hi>"}], {}, "s")
    assert rendered.body.endswith(
        b"<Response><Message><Body>&lt;hi&gt;</Body></Message></Response>"
    )


@pytest.mark.parametrize(
    "source, message",
    [
        ("header('a', 'b')", "header() takes 1 argument, got 2"),
        ("lower(`1`)", "lower() argument 1 must be string, got number"),
        ("env(name)", "env() takes the variable's name as a literal: env('NAME')"),
        ("regex_replace(a, '[', '')", "regex_replace() pattern is not a valid regex"),
        ("nope(a)", "unknown function nope()"),
        ("!message.text", "`!` negates only the name right after it"),
        ("items[?!a.done]", "`!` negates only the name right after it"),
    ],
)
def test_misused_functions_are_rejected_when_compiled(source: str, message: str) -> None:
    with pytest.raises(ExpressionError) as raised:
        Expression(source)
    assert str(raised.value).startswith(message)


def test_runtime_type_error_names_the_expression() -> None:
    with pytest.raises(EvaluationError) as raised:
        Expression("lower(a)").search({"a": 1})
    assert raised.value.expression == "lower(a)"
    assert str(raised.value).startswith("`lower(a)` failed on this request: ")


def test_a_function_failing_on_data_is_an_evaluation_error() -> None:
    with pytest.raises(EvaluationError, match="empty separator"):
        Expression("split(a, '')").search({"a": "x"})


def test_an_xml_element_name_from_data_that_is_not_valid_xml_is_a_render_error() -> None:
    template = ResponseTemplate(body="{Response: {Message: request.m}}", content_type="text/xml")
    with pytest.raises(RenderError, match="'a b' is not a valid XML element name"):
        template.render([], {"m": {"a b": "x"}}, "s")


@pytest.mark.parametrize(
    "content_type, format, expected",
    [
        ("application/json", None, b'{"t":"Hi"}'),
        ("application/vnd.api+json", None, b'{"t":"Hi"}'),
        ("text/plain", None, b'{"t":"Hi"}'),
        ("text/plain", "xml", b'<?xml version="1.0" encoding="UTF-8"?><t>Hi</t>'),
        ("application/xml", None, b'<?xml version="1.0" encoding="UTF-8"?><t>Hi</t>'),
    ],
)
def test_answer_formats_by_content_type_or_by_name(
    content_type: str, format: object, expected: bytes
) -> None:
    template = ResponseTemplate(
        body="{t: messages[0].text}", content_type=content_type, format=format
    )
    assert template.render([{"text": "Hi"}], {}, "s").body == expected
