"""The mapping engine on its own: no Rasa, no server."""

import json

import pytest

from generic_connector.errors import HTTPError
from generic_connector.mapping import ExpressionError, RequestMapping, ResponseTemplate

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
    extracted = mapping.extract(NESTED)
    assert extracted.sender_id == "42"
    assert extracted.text == "hello"
    assert extracted.input_channel == "nested"
    assert extracted.metadata == {"name": "Ann", "chat": "private"}
    assert extracted.message_id == "7"


def test_input_channel_expression_falls_back_to_the_channel_name() -> None:
    mapping = nested_mapping(input_channel="update.channel")
    assert mapping.extract(NESTED).input_channel == "nested"
    with_channel = {"update": {**NESTED["update"], "channel": "kiosk"}}
    assert mapping.extract(with_channel).input_channel == "kiosk"


def test_optional_fields_absent_give_none() -> None:
    extracted = nested_mapping(metadata="update.meta", message_id="update.mid").extract(NESTED)
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
def test_missing_or_wrong_fields_are_422_naming_field_and_expression(
    body: dict, field: str, message: str
) -> None:
    with pytest.raises(HTTPError) as raised:
        nested_mapping().extract(body)
    assert raised.value.status == 422
    assert raised.value.body()["field"] == field
    assert raised.value.body()["error"].startswith(message)


def test_metadata_that_is_not_an_object_is_422() -> None:
    with pytest.raises(HTTPError) as raised:
        nested_mapping(metadata="update.from.name").extract(NESTED)
    assert raised.value.status == 422
    assert raised.value.body() == {
        "error": "metadata must be an object, but `update.from.name` gave a string",
        "field": "metadata",
        "expression": "update.from.name",
    }


def test_bad_expressions_fail_when_the_mapping_is_built() -> None:
    with pytest.raises(ExpressionError, match=r"ends too early"):
        RequestMapping(sender="a.[", text="b", default_input_channel="x")
    with pytest.raises(ExpressionError, match=r"unknown function nope\(\)"):
        RequestMapping(sender="nope(a)", text="b", default_input_channel="x")


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
