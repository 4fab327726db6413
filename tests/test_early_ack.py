"""Early acknowledgement through a real ``rasa run``, a real redis-server and an action server
that takes 5 s: the webhook is answered at once, every message handled once, replies sent."""

import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from tests.platform_api import PlatformAPI
from tests.rasa_process import RasaServer, request, user_events
from tests.redis_server import RedisServer, serve

pytestmark = pytest.mark.e2e

ACTION_SECONDS = 5.0
MESSAGES = 20

CREDENTIALS = """
generic_connector.channels.early:
  name: early
  request:
    ack: early
    sender: user
    text: text
    message_id: id
  store: {type: redis, url_env: REDIS_URL, visibility_timeout: 10}
  response: {body: "`{\\"ok\\": true}`"}
  outbound:
    allow_hosts: [127.0.0.1]
    text:
      url: join('', [env('REPLY_URL'), '/send'])
      body: "{to: recipient, text: message.text}"
"""


class SlowActions:
    """A stand-in action server: ``action_take_time`` answers after ACTION_SECONDS."""

    def __init__(self) -> None:
        self.calls = 0
        actions = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                actions.calls += 1
                time.sleep(ACTION_SECONDS)  # the slow custom action itself
                body = json.dumps({"events": [], "responses": [{"text": "Thanks for waiting."}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from serve()


@pytest.fixture(scope="module")
def early_rasa(
    model: Path, tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("early")
    actions, api = SlowActions(), PlatformAPI()
    local = f"allow_hosts: ['127.0.0.1:{api.port}']"  # port-exact
    (folder / "credentials.yml").write_text(CREDENTIALS.replace("allow_hosts: [127.0.0.1]", local))
    (folder / "endpoints.yml").write_text(f"action_endpoint:\n  url: {actions.url}\n")
    env = {"REDIS_URL": redis_server.url, "REPLY_URL": api.url}
    server = RasaServer(
        model, folder / "credentials.yml", folder / "early.log", folder / "endpoints.yml", env
    )
    yield server.wait_ready(), actions, api
    server.stop()
    actions.close()
    api.close()


def post(server: RasaServer, number: int) -> float:
    """Seconds until the webhook of message ``number`` was answered 200."""
    body = json.dumps({"user": f"early-{number}", "text": "/take_time", "id": f"m-{number}"})
    started = time.monotonic()
    status, _, answer = request(
        server.url + "/webhooks/early/webhook", body.encode(), {"Content-Type": "application/json"}
    )
    assert (status, json.loads(answer)) == (200, {"ok": True})
    return time.monotonic() - started


def test_webhooks_are_answered_at_once_and_every_message_handled_once(early_rasa: Any) -> None:
    server, actions, api = early_rasa
    post(server, 1000)  # warm-up: the first request loads what the rest reuse
    with ThreadPoolExecutor(4) as pool:
        latencies: List[float] = sorted(pool.map(lambda n: post(server, n), range(MESSAGES)))
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    print(
        f"\nearly ack, action server {ACTION_SECONDS:g} s: webhook p50 "
        f"{statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    # Not a timing target (those are for benchmarks): the answer did not wait for the action.
    assert p99 < ACTION_SECONDS / 5
    # Duplicates of ten of them, acknowledged too, are not handled again.
    for number in range(10):
        post(server, number)
    sent = api.received(lambda r: r.path == "/send", MESSAGES + 1, timeout=120)
    assert sorted(r.json["to"] for r in sent) == sorted(
        [f"early-{n}" for n in range(MESSAGES)] + ["early-1000"]
    )
    assert {r.json["text"] for r in sent} == {"Thanks for waiting."}
    for number in range(MESSAGES):
        events = user_events(server.tracker(f"early-{number}"))
        assert [e["message_id"] for e in events] == [f"m-{number}"]
    assert actions.calls == MESSAGES + 1
