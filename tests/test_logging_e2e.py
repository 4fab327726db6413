"""Structured log lines from a real ``rasa run``: the project's lines as JSON objects through
``--logging-config-file`` and ``generic_connector.logtext.JSONFormatter``, with their fields."""

import json
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests.rasa_process import ROOT, RasaServer, request

pytestmark = pytest.mark.e2e

# The configuration docs/operations.md shows: the project's lines, as JSON, on standard output.
LOGGING = """\
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

OPS_TOKEN = "ops-token-never-logged-7f3a"


@pytest.fixture(scope="module")
def json_rasa(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RasaServer]:
    folder = tmp_path_factory.mktemp("json_logging")
    (folder / "logging.yml").write_text(LOGGING)
    server = RasaServer(
        model,
        ROOT / "credentials.yml",
        folder / "rasa.log",
        env={"GENERIC_CONNECTOR_OPS_TOKEN": OPS_TOKEN},
        extra_args=["--logging-config-file", str(folder / "logging.yml")],
    )
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def json_lines(server: RasaServer) -> List[Dict[str, Any]]:
    """The log's JSON objects (Rasa's own lines stay text); each must parse."""
    return [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]


def wait_for(server: RasaServer, event: str, **fields: Any) -> Dict[str, Any]:
    """The one JSON line of ``event`` with these fields, once it is written."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        matches = [
            line
            for line in json_lines(server)
            if line.get("event") == event and all(line.get(k) == v for k, v in fields.items())
        ]
        if matches:
            assert len(matches) == 1, matches
            return matches[0]
        time.sleep(0.2)
    raise AssertionError(f"no such log line in:\n{server.log_text()[-3000:]}")


def test_the_channels_log_structured_fields_in_json(json_rasa: RasaServer) -> None:
    # One line per generic channel when Rasa starts serving it, with its URLs.
    serving = wait_for(json_rasa, "channel.serving", channel="myio")
    assert serving["level"] == "INFO"
    assert serving["logger"] == "generic_connector.channel"
    assert serving["routes"] == ["POST /webhooks/myio/webhook"]
    assert serving["health"] == "/webhooks/myio/"
    assert (serving["store"], serving["outbound"]) == ("memory", False)
    assert serving["message"] == (
        "Channel myio: serving /webhooks/myio/webhook (POST), /webhooks/myio/ (GET health); "
        "store memory, outbound off"
    )
    assert wait_for(json_rasa, "channel.serving", channel="shop")

    # An answered request: one line with its fields, the request id the caller gave.
    status, headers, _ = json_rasa.send(
        "/webhooks/myio/webhook?token=query-secret",
        b'{"sender": "log-user", "message": "Hi there!"}',
        {"Content-Type": "application/json", "X-Request-ID": "log-e2e-1"},
    )
    assert (status, headers["X-Request-ID"]) == (200, "log-e2e-1")
    line = wait_for(json_rasa, "request", request_id="log-e2e-1")
    assert {k: line[k] for k in ("channel", "method", "path", "status", "level")} == {
        "channel": "myio",
        "method": "POST",
        "path": "/webhooks/myio/webhook",  # without the query string
        "status": 200,
        "level": "INFO",
    }
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["message"].startswith("Channel myio: POST /webhooks/myio/webhook answered 200 in ")

    # A refusal without an id of the caller's: the id made for it is the answer's and the log's.
    status, headers, _ = json_rasa.send(
        "/webhooks/myio/webhook", b'{"message": "no sender"}', {"Content-Type": "application/json"}
    )
    assert status == 422
    given = headers["X-Request-ID"]
    refused = wait_for(json_rasa, "request.refused", request_id=given)
    assert (refused["channel"], refused["status"]) == ("myio", 422)
    assert refused["reason"].startswith("no sender in the request")
    answered = wait_for(json_rasa, "request", request_id=given)
    assert answered["status"] == 422

    # Every answer of the channel carries X-Request-ID: readiness, metrics, 401, 404 and 405.
    bearer = {"Authorization": f"Bearer {OPS_TOKEN}"}
    for path, method, sent, expected in [
        ("/webhooks/myio/", "GET", {}, 200),
        ("/webhooks/myio/metrics", "GET", bearer, 200),
        ("/webhooks/myio/metrics", "GET", {}, 401),
        ("/webhooks/myio/nothing-here", "GET", {}, 404),
        ("/webhooks/myio/webhook", "GET", {}, 405),
        ("/webhooks/myio/conversations/paused", "GET", {}, 401),
    ]:
        status, headers, _ = request(json_rasa.url + path, None, sent, method)
        assert status == expected, path
        assert headers.get("X-Request-ID"), (path, headers)
        if expected >= 400:  # probes answered 2xx are logged at DEBUG only
            given = headers["X-Request-ID"]
            line = wait_for(json_rasa, "request", request_id=given)
            assert (line["path"], line["status"], line["channel"]) == (path, expected, "myio")

    log = json_rasa.log_text()
    assert OPS_TOKEN not in log and "query-secret" not in log
