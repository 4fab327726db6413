"""Operating a real ``rasa run``: readiness, metrics, request ids and refusals in the log."""

import json
from typing import Dict

import pytest

from tests.conftest import OPS_TOKEN
from tests.rasa_process import RasaServer, request

pytestmark = pytest.mark.e2e

BEARER = {"Authorization": f"Bearer {OPS_TOKEN}"}


def scrape(rasa: RasaServer) -> Dict[str, float]:
    """The Prometheus series of ``/webhooks/restlike/metrics``, by name and labels."""
    status, headers, body = request(rasa.url + "/webhooks/restlike/metrics", headers=BEARER)
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    series = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            series[name] = float(value)
    return series


def test_metrics_count_answers_ignored_events_and_assistant_time(rasa: RasaServer) -> None:
    before = scrape(rasa)
    for number in range(3):
        rasa.post("/webhooks/restlike/webhook", {"sender": f"m-{number}", "message": "hi"})
    rasa.post("/webhooks/restlike/webhook", {"message": "no sender"})
    after = scrape(rasa)
    ok = 'generic_connector_requests_total{channel="restlike",status="200"}'
    refused = 'generic_connector_requests_total{channel="restlike",status="422"}'
    handled = 'generic_connector_assistant_seconds_count{channel="restlike"}'
    assert after[ok] - before.get(ok, 0) == 3
    assert after[refused] - before.get(refused, 0) == 1
    assert after[handled] - before.get(handled, 0) == 3
    # Every channel of the process is in the same registry.
    assert any(name.startswith('generic_connector_requests_total{channel="') for name in after)


def test_metrics_are_for_the_operators_token_only(rasa: RasaServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": OPS_TOKEN}):
        status, answer_headers, body = request(
            rasa.url + "/webhooks/restlike/metrics", None, headers
        )
        assert (status, json.loads(body)) == (401, {"error": "unauthorized"})
        assert answer_headers["WWW-Authenticate"] == "Bearer"


def test_readiness_is_ok_when_the_model_is_loaded(rasa: RasaServer) -> None:
    assert rasa.get_json("/webhooks/restlike/") == {"status": "ok"}


def test_a_channel_whose_store_is_down_is_not_ready_and_answers_503(rasa: RasaServer) -> None:
    # What is wrong, for the operator's token only, and without the store's host and port.
    status, _, body = request(rasa.url + "/webhooks/storeless/", headers=BEARER)
    assert (status, json.loads(body)) == (
        503,
        {"status": "unavailable", "problems": ["the shared store cannot be reached"]},
    )
    status, _, body = request(rasa.url + "/webhooks/storeless/")
    assert (status, json.loads(body)) == (503, {"status": "unavailable"})
    status, headers, body = rasa.post(
        "/webhooks/storeless/webhook", {"sender": "s", "message": "hi", "id": "1"}
    )
    assert status == 503
    assert headers["Retry-After"] == "5"
    assert json.loads(body) == {"error": "the channel's store is unavailable; retry later"}
    assert "Channel storeless: Redis at 127.0.0.1:" in rasa.log_text()  # said at start-up too


def test_refusals_are_logged_once_with_the_request_id_given(rasa: RasaServer) -> None:
    status, headers, _ = rasa.send(
        "/webhooks/restlike/webhook",
        b'{"message": "no sender"}',
        {"Content-Type": "application/json", "X-Request-ID": "ops-refused-1"},
    )
    assert status == 422
    assert headers["X-Request-ID"] == "ops-refused-1"
    lines = [line for line in rasa.log_text().splitlines() if "ops-refused-1" in line]
    assert len(lines) == 1
    assert "Channel restlike: request ops-refused-1 refused with 422: no sender" in lines[0]
