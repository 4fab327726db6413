"""Replies through the platforms' APIs: templates rendered on their own (message kinds, body
formats, defaults, per-turn requests, the validator's URL rule), then a real ``rasa run``
calling a real local API server."""

import copy
import json
import re
import time
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qsl

import pytest
import yaml

from generic_connector.config import SCHEMA, _outbound_problems, check_channel
from generic_connector.functions import Scope
from generic_connector.mapping import Extracted
from generic_connector.outbound import (
    BODY_FORMATS,
    OUTBOUND_KINDS,
    Outbound,
    OutboundRequest,
    body_format_schema,
    template_schemas,
)
from generic_connector.request import IncomingRequest
from tests.conftest import API_TOKENS
from tests.platform_api import PlatformAPI, json_field
from tests.rasa_process import ROOT, RasaServer
from tests.signing import signature_headers

# Templates rendered on their own ------------------------------------------------------------

API = "'https://api.example.com/send'"
EVERY_KIND = {
    "defaults": {"url": API, "headers": {"Authorization": "'Bearer t0k3n'"}},
    "text": {"body": "{to: recipient, text: message.text}"},
    "buttons": {
        "body": "{to: recipient, text: message.text, "
        "choices: (message.buttons || message.quick_replies)[].payload}"
    },
    "custom": {"body": "merge({to: recipient}, message.custom)"},
    "image": {
        "url": "'https://api.example.com/photo'",
        "body": "{to: recipient, photo: message.image}",
    },
    "attachment": {"body": "{to: recipient, file: message.attachment}"},
    "elements": {"body": "{to: recipient, cards: message.elements[].title}"},
}
EVERYTHING = {
    "text": "Pick one",
    "buttons": [{"title": "A", "payload": "/a"}, {"title": "B", "payload": "/b"}],
    "custom": {"sticker": "s1"},
    "image": "https://img.example.com/x.png",
    "attachment": "https://files.example.com/x.pdf",
    "elements": [{"title": "Card 1"}, {"title": "Card 2"}],
}


def source(event: Any = None, metadata: Optional[Dict[str, Any]] = None) -> Extracted:
    return Extracted("u1", "hi", "test", metadata, "m1", event)


def sent(requests: List[OutboundRequest]) -> List[tuple]:
    return [(r.kind, r.method, r.url, json.loads(r.body)) for r in requests]


def test_registries_name_every_kind_and_body_format() -> None:
    assert list(OUTBOUND_KINDS) == ["text", "buttons", "custom", "image", "attachment", "elements"]
    assert list(BODY_FORMATS) == ["json", "form"]


def test_every_part_of_a_message_is_a_request_in_rasas_order() -> None:
    outbound = Outbound.from_config(EVERY_KIND)
    requests, problems = outbound.render_replies([EVERYTHING, {"text": "Bye"}], "u1", source())
    assert problems == []
    send, photo = "https://api.example.com/send", "https://api.example.com/photo"
    assert sent(requests) == [
        ("buttons", "POST", send, {"to": "u1", "text": "Pick one", "choices": ["/a", "/b"]}),
        ("custom", "POST", send, {"to": "u1", "sticker": "s1"}),
        ("image", "POST", photo, {"to": "u1", "photo": "https://img.example.com/x.png"}),
        ("attachment", "POST", send, {"to": "u1", "file": "https://files.example.com/x.pdf"}),
        ("elements", "POST", send, {"to": "u1", "cards": ["Card 1", "Card 2"]}),
        ("text", "POST", send, {"to": "u1", "text": "Bye"}),
    ]
    assert {r.headers["Authorization"] for r in requests} == {"Bearer t0k3n"}
    assert {r.headers["Content-Type"] for r in requests} == {"application/json"}


def test_quick_replies_use_the_buttons_template_or_else_the_text_one() -> None:
    message = {"text": "Size?", "quick_replies": [{"title": "S", "payload": "/s"}]}
    requests, _ = Outbound.from_config(EVERY_KIND).render_replies([message], "u1", None)
    assert sent(requests) == [
        (
            "buttons",
            "POST",
            "https://api.example.com/send",
            {"to": "u1", "text": "Size?", "choices": ["/s"]},
        )
    ]
    only_text = {key: EVERY_KIND[key] for key in ("defaults", "text")}
    requests, problems = Outbound.from_config(only_text).render_replies([message], "u1", None)
    assert (sent(requests), problems) == (
        [("text", "POST", "https://api.example.com/send", {"to": "u1", "text": "Size?"})],
        [],
    )


def test_a_part_without_a_template_is_reported_never_dropped_silently() -> None:
    section = {key: EVERY_KIND[key] for key in ("defaults", "text", "image")}
    message = {"text": "Look", "image": "https://img/x.png", "elements": [{"title": "C"}]}
    requests, problems = Outbound.from_config(section).render_replies([message], "u1", source())
    assert [r.kind for r in requests] == ["text", "image"]
    assert problems == [
        "elements messages: the mapping has no outbound template for them; not sent"
    ]


@pytest.mark.parametrize(
    "section, error",
    [
        ({"text": {"url": API}, "carousel": {"url": API}}, "unknown outbound key 'carousel'"),
        ({"text": {"url": API, "content_type": "xml"}}, "unknown outbound content_type 'xml'"),
        (
            {"text": {"url": API, "headers": {"Bad Name": "'x'"}}},
            "'Bad Name' is not a valid header",
        ),
        ({"text": {"url": API}, "turn": {"url": API}}, "outbound.turn replaces"),
    ],
    ids=["unknown kind", "unknown body format", "bad header name", "turn and kinds"],
)
def test_an_unknown_name_is_a_configuration_error(section: Dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Outbound.from_config(section)


def test_form_body_format() -> None:
    section = {
        "text": {
            "url": API,
            "content_type": "form",
            "body": "{To: recipient, Body: message.text, MediaUrl: `null`, Count: `2`}",
        }
    }
    [request], _ = Outbound.from_config(section).render_replies([{"text": "a&b é"}], "+1 555", None)
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.body == b"To=%2B1+555&Body=a%26b+%C3%A9&Count=2"
    assert parse_qsl(request.body.decode()) == [("To", "+1 555"), ("Body", "a&b é"), ("Count", "2")]


def test_defaults_are_deep_merged_into_each_kind() -> None:
    section = {
        "defaults": {
            "url": API,
            "method": "PUT",
            "headers": {"Authorization": "'Bearer t0k3n'", "X-Tenant": "'default'"},
        },
        "text": {
            "headers": {"X-Tenant": "'texts'", "X-Kind": "'text'"},
            "body": "{t: message.text}",
        },
        "image": {"method": "POST", "body": "{i: message.image}"},
    }
    requests, _ = Outbound.from_config(section).render_replies(
        [{"text": "hi", "image": "https://img/x.png"}], "u1", None
    )
    assert [(r.kind, r.method, r.headers) for r in requests] == [
        (
            "text",
            "PUT",
            {
                "Authorization": "Bearer t0k3n",
                "X-Tenant": "texts",
                "X-Kind": "text",
                "Content-Type": "application/json",
            },
        ),
        (
            "image",
            "POST",
            {
                "Authorization": "Bearer t0k3n",
                "X-Tenant": "default",
                "Content-Type": "application/json",
            },
        ),
    ]


def test_a_header_value_with_a_line_break_is_refused_naming_the_header() -> None:
    section = {
        "text": {
            "url": API,
            "headers": {"X-Thread": "metadata.thread"},
            "body": "{text: message.text}",
        }
    }
    data = source(metadata={"thread": "t1\r\nX-Injected: yes"})
    requests, problems = Outbound.from_config(section).render_replies([{"text": "hi"}], "u1", data)
    assert requests == []
    assert problems == [
        "a text message: outbound.text.headers.X-Thread gave a value with a line break "
        "(CR or LF); not sent"
    ]
    assert "Injected" not in problems[0]


def test_templates_read_the_scope_the_caller_gives() -> None:
    section = {
        "text": {
            "url": "join('', ['https://api.example.com/bot', env('BOT_TOKEN'), '/send'])",
            "headers": {"X-Request-ID": "header('X-Request-ID')"},
            "body": "{text: message.text}",
        }
    }
    incoming = IncomingRequest.from_parts(b"{}", {"X-Request-ID": "req-7"})
    scope = Scope(incoming, {}, {"BOT_TOKEN": "42:abc"})
    [request], _ = Outbound.from_config(section).render_replies([{"text": "hi"}], "u1", None, scope)
    assert request.url == "https://api.example.com/bot42:abc/send"
    assert request.headers["X-Request-ID"] == "req-7"


def test_a_request_shows_neither_url_nor_headers_in_its_repr() -> None:
    request = OutboundRequest("text", "POST", "https://x/bot123:secret", {"A": "Bearer s3"}, b"")
    assert "secret" not in repr(request) and "s3" not in repr(request)


LINE = {
    "defaults": {"headers": {"Authorization": "join(' ', ['Bearer', env('LINE_TOKEN')])"}},
    "turn": {
        "url": "'https://api.line.me/v2/bot/message/reply'",
        "body": "{replyToken: event.replyToken, messages: messages[:5].{type: 'text', text: text}}",
    },
}


def test_a_turn_template_makes_one_request_for_all_the_replies() -> None:
    replies = [{"text": f"Reply {n}"} for n in range(1, 7)]
    event = {"type": "message", "replyToken": "nHuyWiB7yP5Zw52FIkcQobQuGDXCTA"}
    scope = Scope(environ={"LINE_TOKEN": "line-token"})
    requests, problems = Outbound.from_config(LINE).render_replies(
        replies, "U4af4980629", source(event), scope
    )
    assert problems == []
    [request] = requests
    assert (request.kind, request.method, request.url) == (
        "turn",
        "POST",
        "https://api.line.me/v2/bot/message/reply",
    )
    assert request.headers == {
        "Authorization": "Bearer line-token",
        "Content-Type": "application/json",
    }
    assert json.loads(request.body) == {
        "replyToken": "nHuyWiB7yP5Zw52FIkcQobQuGDXCTA",
        "messages": [
            {"type": "text", "text": "Reply 1"},
            {"type": "text", "text": "Reply 2"},
            {"type": "text", "text": "Reply 3"},
            {"type": "text", "text": "Reply 4"},
            {"type": "text", "text": "Reply 5"},
        ],
    }
    assert request.subject == "the replies of a turn"


def test_a_turn_without_replies_sends_nothing_and_a_failing_turn_is_reported() -> None:
    outbound = Outbound.from_config(LINE)
    assert outbound.render_replies([], "U1", source({"replyToken": "r"})) == ([], [])
    broken = Outbound.from_config(
        {"turn": {"url": "event.missing", "body": "messages"}, "allow_hosts": ["x"]}
    )
    requests, problems = broken.render_replies([{"text": "hi"}], "U1", None)
    assert requests == []
    assert problems == [
        "the replies of a turn: outbound.turn.url gave null, not an http(s) URL; not sent"
    ]


PATH_FROM_DATA = {
    "text": {
        "url": "join('', ['https://api.example.com/chats/', recipient, '/messages'])",
        "body": "{text: message.text}",
    }
}


@pytest.mark.parametrize(
    "recipient",
    ["../../admin", "..", "%2e%2e/%2E%2E/admin", "%252e%252e", "..\\admin", "."],
)
def test_request_data_in_the_path_cannot_walk_out_of_it(recipient: str) -> None:
    outbound = Outbound.from_config(PATH_FROM_DATA)
    requests, problems = outbound.render_replies([{"text": "hi"}], recipient, None)
    assert requests == []
    assert problems == [
        "a text message: outbound.text.url gave a path with a '.' or '..' segment; not sent"
    ]


def test_dots_that_are_no_path_segment_are_sent() -> None:
    outbound = Outbound.from_config(PATH_FROM_DATA)
    [request], problems = outbound.render_replies([{"text": "hi"}], "u..1.x", None)
    assert (request.url, problems) == ("https://api.example.com/chats/u..1.x/messages", [])


@pytest.mark.parametrize(
    "url, reason",
    [
        (
            "https://api.example.com\uff20evil.example/x",
            "an invalid URL (a malformed host or port)",
        ),
        (
            "https://\uff41pi.example.com/x",
            "a host that is not plain ASCII (write IDN hosts in punycode)",
        ),
    ],
    ids=["fullwidth @", "fullwidth letter"],
)
def test_hosts_that_nfkc_or_idna_would_rewrite_are_not_sent(url: str, reason: str) -> None:
    section = {
        "allow_hosts": ["api.example.com"],
        "text": {"url": "metadata.url", "body": "{text: message.text}"},
    }
    data = source(metadata={"url": url})
    requests, problems = Outbound.from_config(section).render_replies([{"text": "hi"}], "u1", data)
    assert (requests, problems) == (
        [],
        [f"a text message: outbound.text.url gave {reason}; not sent"],
    )


ALLOW_LIST = ["api.telegram.org", "127.0.0.1:8080", "[::1]:9000", "::2", "Hooks.Slack.com"]


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://api.telegram.org/bot1/sendMessage", True),
        ("https://api.telegram.org:443/bot1/sendMessage", True),
        ("http://api.telegram.org/bot1/sendMessage", True),  # http's own default port
        ("https://api.telegram.org:8443/bot1/sendMessage", False),
        ("http://api.telegram.org:443/bot1/sendMessage", False),
        ("http://127.0.0.1:8080/send", True),
        ("http://127.0.0.1/send", False),
        ("http://127.0.0.1:8081/send", False),
        ("http://[::1]:9000/send", True),
        ("http://[::1]/send", False),
        ("http://[::2]/send", True),
        ("https://hooks.slack.com/actions/1", True),
        ("https://hooks.slack.com.evil.example/actions/1", False),
    ],
)
def test_allow_hosts_entries_allow_one_port(url: str, allowed: bool) -> None:
    outbound = Outbound.from_config({"allow_hosts": ALLOW_LIST, "text": {"url": "event.url"}})
    assert outbound.allows(OutboundRequest("text", "POST", url, {}, None)) is allowed


@pytest.mark.parametrize("entry", ["host:https", "host/path", "user@host", "[::1"])
def test_an_allow_hosts_entry_that_is_no_host_or_port_is_refused(entry: str) -> None:
    with pytest.raises(
        ValueError, match=f"allow_hosts: '{re.escape(entry)}' is not a host or host:port"
    ):
        Outbound.from_config({"allow_hosts": [entry], "text": {"url": "event.url"}})


def test_the_schema_has_every_registered_kind_turn_and_body_format() -> None:
    outbound = SCHEMA["properties"]["outbound"]["properties"]
    for name, fragment in template_schemas().items():
        assert outbound.get(name) == fragment, name
    content_type = SCHEMA["definitions"]["outbound_request"]["properties"]["content_type"]
    assert content_type == body_format_schema()


# The validator: whose data may choose the host -------------------------------------------------


def validated(outbound: Dict[str, Any]) -> List[str]:
    entry = {"name": "m", "request": {"sender": "user", "text": "text"}, "outbound": outbound}
    return [f"{f.path}: {f.message}" for f in check_channel(entry).findings]


@pytest.mark.parametrize(
    "url",
    [
        "'https://api.example.com/send'",
        "join('', [env_or('TELEGRAM_API_URL', 'https://api.telegram.org'), '/bot', "
        "env('TELEGRAM_BOT_TOKEN'), '/sendMessage'])",
        "join('', ['https://graph.facebook.com/v18.0/', recipient, '/messages'])",
        "join('', [env('API_BASE'), '/chats/', metadata.chat, '/messages?thread=', event.thread])",
        "join('/', ['https://api.example.com', recipient, 'send'])",
        "join('', ['https://api.example.com/reply?to=', header('X-Reply-To')])",
    ],
    ids=["literal", "env base and path", "literal host, recipient in the path",
         "env base, data in path and query", "join with a separator", "header() in the query"],
)  # fmt: skip
def test_a_url_whose_scheme_and_host_are_fixed_needs_no_allow_list(url: str) -> None:
    assert validated({"text": {"url": url, "body": "{text: message.text}"}}) == []


@pytest.mark.parametrize(
    "url",
    [
        "event.response_url",
        "metadata.callback",
        "recipient",
        "join('', ['https://', recipient, '.example.com/send'])",
        "join('', ['https://api.example.com', recipient, '/send'])",  # ".evil.com" or "@evil.com"
        "join('', [env('API_BASE'), event.path])",  # no path of its own after the base
        "join('', [header('X-Callback'), '/send'])",
        "query('callback')",
        "body().callback",
        "event.response_url || 'https://api.example.com/send'",
    ],
)
def test_a_url_whose_host_comes_from_request_data_needs_an_allow_list(url: str) -> None:
    template = {"url": url, "body": "{text: message.text}"}
    assert validated({"text": template}) == [
        "m.outbound.text.url: the URL is built from request data"
    ]
    assert validated({"allow_hosts": ["hooks.example.com"], "text": template}) == []


def test_the_validator_checks_turn_defaults_and_names() -> None:
    base = "join('', [event.base, '/reply'])"
    assert _outbound_problems({"defaults": {"url": base}, "turn": {"body": "messages"}}) == [
        (
            "url-from-request",
            ["outbound", "defaults", "url"],
            "the URL is built from request data",
            "list the hosts it may call in outbound.allow_hosts",
        )
    ]
    assert _outbound_problems({"turn": {"body": "messages"}}) == [
        (
            "missing-url",
            ["outbound", "turn"],
            "no url for the turn's request",
            "give it here or in outbound.defaults",
        )
    ]
    both = _outbound_problems({"turn": {"url": API}, "text": {"url": API}})
    assert [(p.code, p.path, p.message) for p in both] == [
        (
            "unused-template",
            ["outbound", "text"],
            "outbound.turn sends all the replies of a turn, so this is never used",
        )
    ]
    odd = _outbound_problems(
        {"text": {"url": API, "content_type": "xml", "headers": {"Bad Name": "'x'"}}}
    )
    assert [(p.code, p.path, p.message) for p in odd] == [
        ("unknown-body-format", ["outbound", "text", "content_type"], "unknown body format 'xml'"),
        (
            "invalid-header-name",
            ["outbound", "text", "headers", "Bad Name"],
            "not a valid header name",
        ),
    ]


def test_every_shipped_mapping_passes_the_outbound_checks() -> None:
    checked = 0
    for path in sorted((ROOT / "mappings").glob("*.yml")):
        section = yaml.safe_load(path.read_text()).get("outbound")
        if section is not None:
            assert _outbound_problems(section) == [], path.name
            Outbound.from_config(section)
            checked += 1
    assert checked >= 4


# A real rasa run ------------------------------------------------------------------------------


def post_signed(rasa: RasaServer, platform: str, body: Dict[str, Any]) -> tuple:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **signature_headers(platform, raw)}
    return rasa.send(f"/webhooks/{platform}/webhook", raw, headers)


TOKEN = API_TOKENS["TELEGRAM_BOT_TOKEN"]
SEND_MESSAGE = f"/telegram/bot{TOKEN}/sendMessage"
GREETING = "Hello! I am the generic connector demo."
MENU = ["Here is what I can do.", "Pick one:", "Or just type a message."]


def payload(platform: str, name: str) -> Dict[str, Any]:
    return json.loads((ROOT / "tests/payloads" / platform / name).read_text())


def telegram_update(chat_id: int, text: str) -> Dict[str, Any]:
    """The documented text message update, from another chat."""
    update = copy.deepcopy(payload("telegram", "message.json"))
    update["message"]["chat"]["id"] = update["message"]["from"]["id"] = chat_id
    update["message"]["text"] = text
    return update


def to_chat(chat_id: int):  # noqa: ANN201
    return lambda r: r.path == SEND_MESSAGE and r.json["chat_id"] == str(chat_id)


def delivered(requests: list) -> list:
    return [r.json["text"] for r in requests if r.status == 200]


@pytest.mark.e2e
def test_telegram_update_is_answered_through_send_message(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    status, _, body = post_signed(platforms_rasa, "telegram", telegram_update(501, "hi"))
    assert (status, json.loads(body)) == (200, {})
    [call] = platform_api.received(to_chat(501), 1)
    assert call.method == "POST"
    assert call.headers["Content-Type"] == "application/json"
    assert call.json == {"chat_id": "501", "text": GREETING}


@pytest.mark.e2e
def test_telegram_buttons_become_an_inline_keyboard_in_order(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    post_signed(platforms_rasa, "telegram", telegram_update(502, "menu"))
    calls = platform_api.received(to_chat(502), 3)
    assert delivered(calls) == MENU
    assert calls[1].json["reply_markup"] == {
        "inline_keyboard": [
            [{"text": "Say hello", "callback_data": "/greet"}],
            [{"text": "Say goodbye", "callback_data": "/goodbye"}],
        ]
    }


def slack_button(title: str, value: str) -> Dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": title}, "value": value}


@pytest.mark.e2e
def test_slack_event_is_answered_with_chat_post_message(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    event = copy.deepcopy(payload("slack", "message.json"))
    event["event"].update({"user": "U0OUTBOUND", "text": "menu", "channel": "C0OUTBOUND"})
    event["event_id"] = "Ev0OUTBOUND"
    status, _, _ = post_signed(platforms_rasa, "slack", event)
    assert status == 200
    calls = platform_api.received(json_field("channel", "C0OUTBOUND"), 3)
    assert [c.path for c in calls] == ["/slack/chat.postMessage"] * 3
    assert {c.headers["Authorization"] for c in calls} == {"Bearer xoxb-slack-test-token"}
    assert delivered(calls) == MENU
    assert calls[1].json["blocks"] == [
        {"type": "section", "text": {"type": "mrkdwn", "text": "Pick one:"}},
        {
            "type": "actions",
            "elements": [
                slack_button("Say hello", "/greet"),
                slack_button("Say goodbye", "/goodbye"),
            ],
        },
    ]
    # A channel message is answered in a thread under it (mappings/slack.yml, sender_id: thread).
    assert {c.json["thread_ts"] for c in calls} == {event["event"]["ts"]}


@pytest.mark.e2e
def test_whatsapp_and_messenger_reply_through_their_send_apis(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    whatsapp = payload("whatsapp", "text_message.json")
    whatsapp["entry"][0]["changes"][0]["value"]["messages"][0].update(
        {"from": "16505559999", "id": "wamid.outbound", "text": {"body": "hello"}}
    )
    post_signed(platforms_rasa, "whatsapp", whatsapp)
    [call] = platform_api.received(json_field("to", "16505559999"), 1)
    [read] = platform_api.received(json_field("message_id", "wamid.outbound"), 1)
    assert read.json == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": "wamid.outbound",
    }
    assert call.path == "/whatsapp/106540352242922/messages"
    assert call.headers["Authorization"] == "Bearer whatsapp-test-token"
    assert call.json == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "16505559999",
        "type": "text",
        "text": {"body": GREETING},
    }

    messenger = {
        "object": "page",
        "entry": [{"id": "<PAGE_ID>", "time": 1458692752478, "messaging": [
            {"sender": {"id": "PSID-OUT"}, "recipient": {"id": "<PAGE_ID>"},
             "timestamp": 1458692752478, "message": {"mid": "mid.out", "text": "menu"}}]}],
    }  # fmt: skip
    post_signed(platforms_rasa, "messenger", messenger)
    calls = platform_api.received(
        lambda r: r.json["recipient"]["id"] == "PSID-OUT" and "message" in r.json, 3
    )
    # "Typing…" first, while the assistant works (outbound.presence).
    [typing] = platform_api.received(
        lambda r: r.json["recipient"]["id"] == "PSID-OUT" and "sender_action" in r.json, 1
    )
    # Sent in the background as the message arrives: it races the first reply to the API
    # (the order is shown with a slower assistant in tests/test_conversations.py).
    assert typing.json == {"recipient": {"id": "PSID-OUT"}, "sender_action": "typing_on"}
    assert [c.path for c in calls] == [
        "/messenger/me/messages?access_token=messenger-test-token"
    ] * 3
    assert [c.json["message"]["text"] for c in calls] == MENU
    assert calls[1].json["message"]["quick_replies"] == [
        {"content_type": "text", "title": "Say hello", "payload": "/greet"},
        {"content_type": "text", "title": "Say goodbye", "payload": "/goodbye"},
    ]


@pytest.mark.e2e
def test_429_with_retry_after_then_200_delivers_once(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    platform_api.plan(to_chat(503), [(429, {"Retry-After": "1"}, {"ok": False})])
    post_signed(platforms_rasa, "telegram", telegram_update(503, "hi"))
    calls = platform_api.received(lambda r: to_chat(503)(r) and r.status == 200, 1)
    calls = platform_api.received(to_chat(503), 2)
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].at - calls[0].at >= 0.9  # Retry-After honoured
    assert delivered(calls) == [GREETING]


@pytest.mark.e2e
def test_persistent_500_gives_up_after_the_retries_with_a_log_line(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    platform_api.plan(to_chat(504), [(500, {}, {"ok": False, "description": "boom"})] * 10)
    status, _, _ = post_signed(platforms_rasa, "telegram", telegram_update(504, "hi"))
    assert status == 200  # the webhook does not wait for delivery (outbound.wait is false)
    line = (
        "Channel telegram: could not deliver a text message for conversation 504 after "
        '4 attempt(s); the platform answered HTTP 500: {"ok": false, "description": "boom"}'
    )
    deadline = time.monotonic() + 30
    while line not in platforms_rasa.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert line in platforms_rasa.log_text()
    assert [c.status for c in platform_api.received(to_chat(504), 4)] == [500] * 4
    assert TOKEN not in platforms_rasa.log_text()  # the token is in the URL: never logged


@pytest.mark.e2e
def test_order_of_a_three_message_reply_survives_retries(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    platform_api.plan(
        to_chat(505), [(429, {"Retry-After": "1"}, {"ok": False}), (503, {}, {"ok": False})]
    )
    post_signed(platforms_rasa, "telegram", telegram_update(505, "menu"))
    calls = platform_api.received(lambda r: to_chat(505)(r) and r.status == 200, 3)
    assert delivered(calls) == MENU
    assert [c.status for c in platform_api.requests if to_chat(505)(c)][:3] == [429, 503, 200]


@pytest.mark.e2e
def test_a_slow_conversation_does_not_hold_up_another(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    platform_api.plan(to_chat(506), [(500, {}, {})] * 3)  # ~3.5 s of backoff for chat 506
    post_signed(platforms_rasa, "telegram", telegram_update(506, "hi"))
    started = time.monotonic()
    post_signed(platforms_rasa, "telegram", telegram_update(507, "hi"))
    [other] = platform_api.received(to_chat(507), 1)
    assert other.at - started < 2.0
    assert delivered(platform_api.received(lambda r: to_chat(506)(r) and r.status == 200, 1))


@pytest.mark.e2e
def test_trigger_intent_delivers_through_the_platform_api(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    status, _, body = platforms_rasa.post(
        "/conversations/508/trigger_intent?output_channel=telegram", {"name": "greet"}
    )
    assert status == 200, body
    [call] = platform_api.received(to_chat(508), 1)
    assert call.json == {"chat_id": "508", "text": GREETING}


@pytest.mark.e2e
def test_reply_url_outside_the_allow_list_is_not_called(
    platforms_rasa: RasaServer, platform_api: PlatformAPI
) -> None:
    allowed = f"http://127.0.0.1:{platform_api.port}/hook/allowed"
    refused = f"http://localhost:{platform_api.port}/hook/refused"
    for url in (allowed, refused):
        status, _, _ = platforms_rasa.post(
            "/webhooks/hook/webhook", {"user": "hook-user", "text": "hi", "response_url": url}
        )
        assert status == 200
    hook_calls = platform_api.received(lambda r: r.path.startswith("/hook/"), 1)
    assert [c.path for c in hook_calls] == ["/hook/allowed"]
    assert (
        "Channel hook: refused to send a text message for conversation hook-user to host "
        f"'localhost' on port {platform_api.port}, which is not in outbound.allow_hosts"
    ) in platforms_rasa.log_text()
