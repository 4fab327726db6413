"""Routes beyond POST /webhook, path parameters, and request bodies in XML or by Content-Type:
the pipeline as the dry run drives it (the server's own 404/405 and routes are in
tests/test_protocols.py, through a real ``rasa run``)."""

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from generic_connector import routes
from generic_connector.cli.dryrun import case_request, simulate
from generic_connector.config import check_channel, load_channel

TRANSACTIONS: Dict[str, Any] = {
    "name": "txn",
    "routes": [
        {"method": "PUT", "path": "/transactions/{txn_id}"},
        {"method": "GET", "path": "/sms"},
    ],
    "request": {
        "format": "auto",
        "sender": "sender || query('From')",
        "text": "text || query('Body')",
        "metadata": "{txn: path('txn_id'), method: method()}",
    },
}


def run(case: Dict[str, Any], document: Dict[str, Any] = TRANSACTIONS) -> Dict[str, Any]:
    config = load_channel(document)
    return simulate(config, case_request(case, Path("."), config))


def test_a_template_matches_concrete_paths_and_names_its_parameters() -> None:
    table = [("PUT", "/transactions/{txn_id}"), ("POST", "/rooms/{room}/events/{event}")]
    assert routes.match(table, "PUT", "/transactions/t-1") == (
        "/transactions/{txn_id}",
        {"txn_id": "t-1"},
    )
    assert routes.match(table, "POST", "/rooms/r1/events/e.2") == (
        "/rooms/{room}/events/{event}",
        {"room": "r1", "event": "e.2"},
    )
    assert routes.match(table, "PUT", "/transactions/a/b") is None  # one segment each
    assert routes.match(table, "POST", "/transactions/t-1") is None  # not its method
    assert (
        routes.sanic_path("/rooms/{room}/events/{event}") == "/rooms/<room:str>/events/<event:str>"
    )


def test_a_put_route_carries_messages_with_its_path_parameter() -> None:
    case = {"method": "PUT", "path": "/transactions/t-42", "body": {"sender": "u1", "text": "hi"}}
    result = run(case)
    assert result["status"] == 200
    [message] = result["messages"]
    assert (message["sender"], message["text"]) == ("u1", "hi")
    assert message["metadata"] == {"txn": "t-42", "method": "PUT"}


def test_a_get_route_carries_messages_from_the_query() -> None:
    result = run({"method": "GET", "path": "/sms", "query": {"From": "+15550001", "Body": "hi"}})
    [message] = result["messages"]
    assert (message["sender"], message["text"]) == ("+15550001", "hi")
    assert message["metadata"] == {"txn": None, "method": "GET"}


def test_post_webhook_still_carries_messages() -> None:
    [message] = run({"body": {"sender": "u2", "text": "yo"}})["messages"]
    assert message["metadata"] == {"txn": None, "method": "POST"}


def test_a_path_no_route_serves_is_refused() -> None:
    result = run({"method": "PUT", "path": "/elsewhere", "body": {"sender": "u", "text": "t"}})
    assert result["status"] == 400
    assert result["error"]["error"] == "no handshake of this channel matches PUT /elsewhere"


XML_CHANNEL: Dict[str, Any] = {
    "name": "xmlchat",
    "request": {
        "format": "xml",
        "sender": "xml.FromUserName",
        "text": "xml.Content",
        "message_id": "xml.MsgId",
        "metadata": "{type: xml.MsgType, agent: xml.AgentID, tag: xml.Tag}",
    },
    "response": {"format": "xml", "body": "{xml: {Content: messages[0].text}}"},
}
XML_BODY = (
    "<xml><ToUserName><![CDATA[toUser]]></ToUserName>"
    "<FromUserName><![CDATA[fromUser]]></FromUserName><CreateTime>1348831860</CreateTime>"
    "<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[this is a test]]></Content>"
    '<MsgId>1234567890123456</MsgId><AgentID>1</AgentID><Tag k="v">a</Tag></xml>'
)


def test_an_xml_body_is_read_with_the_xml_answers_convention() -> None:
    case = {"body": XML_BODY, "headers": {"Content-Type": "text/xml"}}
    result = run(case, XML_CHANNEL)
    [message] = result["messages"]
    assert (message["sender"], message["text"], message["message_id"]) == (
        "fromUser",
        "this is a test",
        "1234567890123456",
    )
    assert message["metadata"] == {"type": "text", "agent": "1", "tag": {"@k": "v", "#text": "a"}}


@pytest.mark.parametrize(
    "body, problem",
    [
        (
            '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml>&a;</xml>',
            "document type declarations (and so entities) are not accepted",
        ),
        ("<xml><a></xml>", "not well-formed XML (line 1, column 10): mismatched tag"),
        ("<a>" * 101 + "</a>" * 101, "the document nests deeper than 100 levels"),
    ],
)
def test_hostile_or_broken_xml_is_refused_with_a_reason(body: str, problem: str) -> None:
    result = run({"body": body, "headers": {"Content-Type": "application/xml"}}, XML_CHANNEL)
    assert result["status"] == 400
    assert result["error"]["error"] == f"request body is refused: {problem}"


def test_auto_reads_each_body_by_its_content_type() -> None:
    document = {**TRANSACTIONS, "request": {**TRANSACTIONS["request"]}}
    as_json = {"body": {"sender": "a", "text": "json"}}
    as_form = {
        "body": "sender=b&text=form",
        "headers": {"Content-Type": "application/x-www-form-urlencoded"},
    }
    as_xml = {
        "body": "<m><sender>c</sender><text>xml</text></m>",
        "headers": {"Content-Type": "text/xml"},
    }
    document["request"]["sender"] = "sender || m.sender"
    document["request"]["text"] = "text || m.text"
    texts = [run(case, document)["messages"][0]["text"] for case in (as_json, as_form, as_xml)]
    assert texts == ["json", "form", "xml"]
    refused = run({"body": "hi", "headers": {"Content-Type": "text/csv"}}, document)
    assert refused["status"] == 415
    assert refused["error"]["error"] == (
        "this channel takes JSON, form or XML bodies, got Content-Type text/csv"
    )


@pytest.mark.parametrize(
    "route, path",
    [
        ({"method": "PUT", "path": "/a b"}, "c.routes[0].path"),
        ({"method": "PUT", "path": "/metrics"}, "c.routes[0].path"),
        ({"method": "TRACE", "path": "/t"}, "c.routes[0].method"),
        ({"method": "PUT", "path": "/t/{1x}"}, "c.routes[0].path"),
    ],
)
def test_a_route_that_cannot_be_served_is_a_located_finding(
    route: Dict[str, Any], path: str
) -> None:
    document = {"name": "c", "request": {"sender": "s", "text": "t"}, "routes": [route]}
    config, findings, _ = check_channel(json.loads(json.dumps(document)), "c")
    assert config is None
    assert [f.path for f in findings] == [path]


def test_a_wildcard_in_allow_hosts_is_a_finding_not_a_silent_mismatch() -> None:
    document = {
        "name": "c",
        "request": {"sender": "s", "text": "t"},
        "outbound": {
            "allow_hosts": ["*.example.com"],
            "text": {"url": "'https://api.example.com/send'", "body": "{text: message.text}"},
        },
    }
    config, findings, _ = check_channel(document, "c")
    assert config is None
    [finding] = findings
    assert (finding.code, finding.path) == ("invalid-host", "c.outbound.allow_hosts[0]")
    assert finding.message == "'*.example.com' is a pattern; name each host in full (no wildcards)"
