"""What an attack on a real ``rasa run`` found, held by tests: a poison event in a batch, Redis
down when the server starts, a user's repeated texts under early acknowledgement.

The server's lock store is Rasa's in-memory one, except that a conversation whose sender starts
with ``poison`` cannot be locked (``tests/poison_store.py``): Rasa raises on that message.
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest

from tests.platform_api import PlatformAPI
from tests.rasa_process import ROOT, RasaServer, request, user_events
from tests.redis_server import RedisServer
from tests.test_early_ack import SlowActions

pytestmark = pytest.mark.e2e

CREDENTIALS = """
generic_connector.channels.batch:
  name: batch
  request: {events: items, sender: u, text: t, message_id: id}
  response: {body: "`{\\"ok\\": true}`"}

generic_connector.channels.deferring:
  name: deferring
  request: {sender: user, text: text, message_id: id}
  store: {type: redis, url_env: REDIS_URL, visibility_timeout: 5}
  response: {body: "{replies: messages[].text}"}
  defer: {after: 0.5, response: {body: "`{\\"deferred\\": true}`"}}
  outbound:
    allow_hosts: ["127.0.0.1:API_PORT"]
    text:
      url: join('', [env('REPLY_URL'), '/send'])
      body: "{to: recipient, text: message.text}"

generic_connector.channels.early:
  name: early
  request: {ack: early, sender: user, text: text}
  store: {type: redis, url_env: REDIS_URL, visibility_timeout: 5}
  response: {body: "`{\\"ok\\": true}`"}
"""


@pytest.fixture(scope="module")
def redis_later() -> Iterator[RedisServer]:
    """A redis-server on a port of its own, not started yet: Redis is down at start-up."""
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def platform() -> Iterator[PlatformAPI]:
    api = PlatformAPI()
    yield api
    api.close()


@pytest.fixture(scope="module")
def actions() -> Iterator[SlowActions]:
    server = SlowActions()
    yield server
    server.close()


@pytest.fixture(scope="module")
def attacked(
    model: Path,
    tmp_path_factory: pytest.TempPathFactory,
    redis_later: RedisServer,
    platform: PlatformAPI,
    actions: SlowActions,
) -> Iterator[RasaServer]:
    folder = tmp_path_factory.mktemp("attacked")
    (folder / "credentials.yml").write_text(CREDENTIALS.replace("API_PORT", str(platform.port)))
    (folder / "endpoints.yml").write_text(
        "lock_store:\n  type: tests.poison_store.PoisonLockStore\n"
        f"action_endpoint:\n  url: {actions.url}\n"
    )
    env = {"REDIS_URL": redis_later.url, "PYTHONPATH": str(ROOT), "REPLY_URL": platform.url}
    server = RasaServer(
        model, folder / "credentials.yml", folder / "attacked.log", folder / "endpoints.yml", env
    )
    yield server.wait_ready()
    server.stop()


def eventually(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def texts(server: RasaServer, sender: str) -> List[str]:
    return [event["text"] for event in user_events(server.tracker(sender))]


def test_a_poison_event_does_not_lose_its_neighbours(attacked: RasaServer) -> None:
    items = [
        {"u": "ann", "t": "hi", "id": "b-1"},
        {"u": "poison-1", "t": "hi", "id": "b-2"},
        {"u": "bob", "t": "hello", "id": "b-3"},
    ]
    failed = {"error": "1 of 3 messages could not be handled; retry later", "failed_events": [1]}
    for _ in range(2):  # the first delivery and the platform's retry
        status, _, answer = attacked.post("/webhooks/batch/webhook", {"items": items})
        assert (status, json.loads(answer)) == (500, failed)
    # Both neighbours handled, once each: the retry handed over only the poison event.
    assert texts(attacked, "ann") == ["hi"]
    assert texts(attacked, "bob") == ["hello"]


def test_redis_down_at_start_up_then_up_every_message_is_handled_without_a_restart(
    attacked: RasaServer, redis_later: RedisServer
) -> None:
    status, _, answer = request(attacked.url + "/webhooks/early/")
    assert status == 503
    assert "the inbox worker is not running" in json.loads(answer)["problems"]
    # Nothing is acknowledged that no one would handle.
    assert attacked.post("/webhooks/early/webhook", {"user": "e-0", "text": "hi"})[0] == 503

    redis_later.start()
    eventually(lambda: request(attacked.url + "/webhooks/early/")[0] == 200)
    # A user's repeated texts, without a platform message id: every one reaches Rasa, in order.
    sent = ["hi", "bye", "hi", "hi", "menu", "hi"]
    for text in sent:
        status, _, answer = attacked.post("/webhooks/early/webhook", {"user": "e-1", "text": text})
        assert (status, json.loads(answer)) == (200, {"ok": True})
    eventually(lambda: len(texts(attacked, "e-1")) == len(sent))
    assert texts(attacked, "e-1") == sent
    assert attacked.process.poll() is None  # the same process all along


def test_deferred_messages_survive_a_kill_of_the_replica_that_answered(
    attacked: RasaServer, redis_later: RedisServer, platform: PlatformAPI
) -> None:
    # Runs after the test that starts Redis. The custom action takes 5 s: every webhook gets
    # the deferred answer, and the process is killed while Rasa is still at work on them.
    senders = [f"d-{number}" for number in range(10)]

    def post(sender: str) -> Any:
        body = {"user": sender, "text": "/take_time", "id": f"id-{sender}"}
        status, _, answer = attacked.post("/webhooks/deferring/webhook", body)
        return status, json.loads(answer)

    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(post, senders))
    assert answers == [(200, {"deferred": True})] * 10
    attacked.kill_and_restart()
    sent = platform.received(lambda r: r.path == "/send", len(senders), timeout=120)
    assert sorted(r.json["to"] for r in sent) == senders  # 0 of 10 lost
    assert {r.json["text"] for r in sent} == {"Thanks for waiting."}
