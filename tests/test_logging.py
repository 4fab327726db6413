"""Structured log lines: ``logtext.JSONFormatter`` and the fields of the project's lines."""

import asyncio
import io
import json
import logging
import logging.config
import sys
from typing import Any, Dict, Iterator, List

import pytest
import yaml

from generic_connector.config import load_channel
from generic_connector.logtext import JSONFormatter, get_logger
from generic_connector.pipeline import Assistant, Pipeline
from generic_connector.request import IncomingRequest

SECRET = "hmac-secret-never-logged-0042"


def formatted(record: logging.LogRecord) -> Dict[str, Any]:
    line = JSONFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


def record(msg: str, *args: Any, **extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("generic_connector.pipeline", logging.INFO, "x.py", 1, msg, args, None)
    made.__dict__.update(extra)
    return made


def test_a_line_is_one_json_object_with_the_message_and_the_fields() -> None:
    line = formatted(
        record(
            "Channel %s: request %s refused with %d: %s",
            "shop", "r-1", 401, "unauthorized",
            event="request.refused", channel="shop", request_id="r-1", status=401,
            reason="unauthorized",
        )
    )  # fmt: skip
    assert line.pop("time").endswith("Z")
    assert line == {
        "level": "INFO",
        "logger": "generic_connector.pipeline",
        "message": "Channel shop: request r-1 refused with 401: unauthorized",
        "event": "request.refused",
        "channel": "shop",
        "request_id": "r-1",
        "status": 401,
        "reason": "unauthorized",
    }


def test_control_characters_are_escaped_in_the_message_and_the_fields() -> None:
    hostile = "mallory\r\n2026-12-07 ERROR forged\x1b[2J\u202e\x9b"
    text = JSONFormatter().format(
        record("Channel %s: sender %s", "shop", hostile, sender=hostile, nested={"k": [hostile]})
    )
    assert not any(char in text for char in "\r\n\x1b\u202e\x9b")
    line = json.loads(text)
    escaped = "mallory\\r\\n2026-12-07 ERROR forged\\x1b[2J\\u202e\\x9b"
    assert line["message"] == f"Channel shop: sender {escaped}"
    assert line["sender"] == escaped and line["nested"] == {"k": [escaped]}


def test_a_project_line_names_its_channel_even_without_fields() -> None:
    assert formatted(record("Channel %s: the store is reachable", "tg"))["channel"] == "tg"
    other = logging.LogRecord("rasa.core", logging.INFO, "x.py", 1, "Channel %s", ("x",), None)
    assert "channel" not in formatted(other)


def test_an_exception_keeps_its_lines_and_a_field_cannot_replace_the_own_keys() -> None:
    try:
        raise RuntimeError("down\x1b[31m")
    except RuntimeError:
        made = logging.LogRecord(
            "generic_connector",
            logging.ERROR,
            "x.py",
            1,
            "failed",
            (),
            sys.exc_info(),
        )
    made.__dict__.update(level="forged", logger="forged")
    line = formatted(made)
    assert (line["level"], line["logger"]) == ("ERROR", "generic_connector")
    assert line["exception"].startswith("Traceback (most recent call last):\n")
    assert line["exception"].endswith("RuntimeError: down\\x1b[31m")


def test_a_rasa_structlog_event_rendered_as_json_becomes_fields() -> None:
    event = json.dumps({"event": "story.reader.warning", "level": "warning", "line": 3})
    made = logging.LogRecord("rasa.shared", logging.WARNING, "x.py", 1, event, (), None)
    line = formatted(made)
    assert line["message"] == line["event"] == "story.reader.warning"
    assert (line["line"], line["level"]) == (3, "WARNING")
    assert made.getMessage() == event  # other handlers still see the record unchanged


# The configuration docs/operations.md shows, as ``rasa run --logging-config-file`` applies it.
DICT_CONFIG = """\
version: 1
disable_existing_loggers: false
formatters:
  json:
    (): generic_connector.logtext.JSONFormatter
handlers:
  json:
    class: logging.StreamHandler
    stream: ext://sys.stdout
    formatter: json
loggers:
  generic_connector:
    handlers: [json]
    propagate: false
"""


@pytest.fixture()
def json_log() -> Iterator[io.StringIO]:
    """The project's log lines through the documented dictConfig, into a buffer."""
    logger = logging.getLogger("generic_connector")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    logging.config.dictConfig(yaml.safe_load(DICT_CONFIG))
    buffer = io.StringIO()
    [handler] = logger.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    logger.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


def lines(buffer: io.StringIO) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


SIGNED = {
    "name": "signed",
    "request": {"sender": "user", "text": "text"},
    "auth": {"type": "hmac", "header": "X-Signature", "secret_env": "SIGNED_SECRET"},
}


def test_the_documented_config_writes_the_pipelines_fields_and_never_a_secret(
    json_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGNED_SECRET", SECRET)
    config = load_channel(SIGNED)
    request = IncomingRequest.from_parts(
        b'{"user": "u", "text": "hi"}',
        {"X-Signature": SECRET, "X-Request-ID": "log-1", "Authorization": f"Bearer {SECRET}"},
    )
    _, answer = asyncio.run(Pipeline(config).run(request, Assistant()))
    assert answer.status == 401
    [line] = lines(json_log)
    assert {k: line[k] for k in ("event", "channel", "request_id", "status")} == {
        "event": "request.refused",
        "channel": "signed",
        "request_id": "log-1",
        "status": 401,
    }
    assert line["reason"]
    assert SECRET not in json_log.getvalue()


def test_a_request_id_given_by_the_channel_is_the_one_logged(json_log: io.StringIO) -> None:
    config = load_channel({"name": "plain", "request": {"sender": "user", "text": "text"}})
    request = IncomingRequest.from_parts(b'{"text": "no sender"}', {"X-Request-ID": "ignored"})
    exchange, answer = asyncio.run(Pipeline(config).run(request, Assistant(), known_id="ch-7"))
    assert (exchange.request_id, answer.status) == ("ch-7", 422)
    [line] = lines(json_log)
    assert (line["request_id"], line["event"]) == ("ch-7", "request.refused")


def test_get_logger_lines_keep_their_text_for_a_text_formatter(json_log: io.StringIO) -> None:
    get_logger("generic_connector.test").info("Channel %s: plain", "c", extra={"request_id": "r"})
    [line] = lines(json_log)
    assert (line["message"], line["request_id"], line["channel"]) == ("Channel c: plain", "r", "c")
