"""Two real ``rasa run`` replicas sharing a real Redis: de-duplication, the outbox, crashes,
shutdowns and outages.

Both replicas serve a Telegram channel built from ``mappings/telegram.yml`` with
``store: {type: redis}``, over Rasa's Redis lock store and a Redis tracker store; replies go to
a local stand-in of the Bot API reached through a link that the tests can cut. The client
alternates between the replicas, as a load balancer would. The figures printed here
(``pytest tests/test_replicas.py -s``) are the ones in docs/security.md's reliability figures.

The tests share one set of processes and run in this order: duplicates, the platform's API
down, a replica killed, a replica stopped (each brought back in the background), Redis
stopped; last, outages at a chosen moment, which fail on defects of the channel.
"""

import base64
import itertools
import json
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from tests.conftest import OPS_TOKEN
from tests.platform_api import PlatformAPI
from tests.rasa_process import RasaServer, user_events
from tests.redis_server import redis_binary
from tests.replicas import (
    BOT_TOKEN,
    SECRET_TOKEN,
    Answer,
    DurableRedis,
    Gate,
    for_chats,
    in_order,
    log_since,
    log_size,
    post_update,
    update,
    user_message_ids,
    wait_delivered,
)

pytestmark = pytest.mark.e2e

THANKS = ["You are welcome."]  # the demo assistant's one reply to /thank
OK = (200, {}, {"ok": True})
FAILING = (500, {}, {"ok": False, "error_code": 500, "description": "Internal Server Error"})
PREFIX = "generic_connector"

# Two Telegram channels, both from the shipped mapping. The answer shows the replies, so that a
# duplicate's answer can be compared with the first one's; each reply names the message it
# answers (reply_parameters), so that order and duplicates show at the API. ``telegram`` has a
# retry budget of about 4-13 s, ``telegram-short`` one below a second.
CREDENTIALS = """
generic_connector.channels.telegram:
  mapping: mappings/telegram.yml
  response: {body: "{replies: messages[].text}"}
  store: {type: redis, url_env: REDIS_URL, visibility_timeout: 2, running_timeout: 3}
  outbound:
    retries: 10
    backoff: 0.2
    max_backoff: 1
    timeout: 5
    rate: null        # unpaced: the tests count on deliveries under way at any moment
    presence: null    # the stand-in Bot API counts replies only
    defaults:
      url: join('', [env('TELEGRAM_API_URL'), '/bot', env('TELEGRAM_BOT_TOKEN'), '/sendMessage'])
    text:
      body: >-
        {chat_id: recipient, text: message.text,
         reply_parameters: {message_id: event.message.message_id}}

generic_connector.channels.short:
  mapping: mappings/telegram.yml
  name: telegram-short
  response: {body: "{replies: messages[].text}"}
  store: {type: redis, url_env: REDIS_URL, visibility_timeout: 2, running_timeout: 3}
  outbound:
    retries: 2
    backoff: 0.2
    max_backoff: 0.4
    timeout: 5
    rate: null
    presence: null
    defaults:
      url: join('', [env('TELEGRAM_API_URL'), '/bot', env('TELEGRAM_BOT_TOKEN'), '/sendMessage'])
    text:
      body: >-
        {chat_id: recipient, text: message.text,
         reply_parameters: {message_id: event.message.message_id}}

# A token provider: replies need an access token from the stand-in's token endpoint (client
# credentials), shared by both replicas through Redis, refreshed after a 401.
generic_connector.channels.tokened:
  name: tokened
  request: {sender: sender, text: message, message_id: id}
  store: {type: redis, url_env: REDIS_URL, visibility_timeout: 2, running_timeout: 3}
  tokens:
    api:
      url: join('', [env('TOKENED_API_URL'), '/oauth2/token'])
      headers:
        Authorization: >-
          join(' ', ['Basic', base64_encode(join(':', [env('TOKENED_CLIENT_ID'),
          env('TOKENED_CLIENT_SECRET')]))])
      body: "{grant_type: 'client_credentials'}"
  outbound:
    retries: 3
    backoff: 0.2
    text:
      url: join('', [env('TOKENED_API_URL'), '/send'])
      headers: {Authorization: "join(' ', ['Bearer', token('api')])"}
      body: "{to: recipient, text: message.text}"

# Replies that take two calls: a conversation opened first, then the message sent into it with
# the id it got (a chain stored on Redis with its step); a 2xx answer whose is_sent is false is
# retried, then given up to the dead letters.
generic_connector.channels.chained:
  name: chained
  request: {sender: sender, text: message, message_id: id}
  store: {type: redis, url_env: REDIS_URL, visibility_timeout: 2, running_timeout: 3}
  outbound:
    retries: 2
    backoff: 0.2
    max_backoff: 0.4
    text:
      steps:
        - name: opened
          url: join('', [env('CHAINED_API_URL'), '/conversations'])
          body: "{members: [recipient]}"
      url: join('', [env('CHAINED_API_URL'), '/conversations/', steps.opened.id, '/messages'])
      body: "{text: message.text}"
      success: is_sent

# Handover: the bot paused for a conversation on every replica (the pause is on Redis), by the
# operator API, an agent event or the command; a paused conversation's messages are relayed.
generic_connector.channels.handover:
  name: handover
  request:
    sender: sender
    text: message
    message_id: id
    ignore: [{name: agent events, when: "!message"}]
  response: {body: "{replies: messages[].text}"}
  store: {type: redis, url_env: REDIS_URL, visibility_timeout: 2, running_timeout: 3}
  outbound:
    retries: 2
    backoff: 0.2
    text:
      url: join('', [env('HANDOVER_API_URL'), '/send'])
      body: "{to: recipient, text: message.text}"
  handover:
    pause_when: "event == 'agent_assigned'"
    resume_when: "event == 'agent_left'"
    relay:
      url: join('', [env('HANDOVER_API_URL'), '/agent-inbox'])
      body: "{conversation: recipient, text: message.text, id: message.message_id}"
"""

ENDPOINTS = """
lock_store:
  type: redis
  url: 127.0.0.1
  port: {port}
  db: 1
tracker_store:
  type: redis
  url: 127.0.0.1
  port: {port}
  db: 2
"""


class Cluster:
    """The Redis, the stand-in Bot API and its link, and the two replicas."""

    def __init__(self, model: Path, folder: Path) -> None:
        self.redis = DurableRedis(folder / "redis").start()
        self.api = PlatformAPI()
        self.platform = Gate(self.api.port)  # the Bot API as the replicas reach it
        # Replica B reaches Redis through links of its own, one for the channel's store and
        # one for Rasa's lock and tracker stores, to cut them at a chosen command; replica A
        # reaches Redis directly.
        self.store_link = Gate(self.redis.port)
        self.rasa_link = Gate(self.redis.port)
        (folder / "credentials.yml").write_text(CREDENTIALS)
        (folder / "endpoints-a.yml").write_text(ENDPOINTS.format(port=self.redis.port))
        (folder / "endpoints-b.yml").write_text(ENDPOINTS.format(port=self.rasa_link.port))
        env = {
            "TELEGRAM_SECRET_TOKEN": SECRET_TOKEN,
            "TELEGRAM_BOT_TOKEN": BOT_TOKEN,
            "TELEGRAM_API_URL": f"{self.platform.url}/telegram",
            # Rasa's conversation lock of a replica that died expires after 10 s, not 60.
            "TICKET_LOCK_LIFETIME": "10",
            "TOKENED_API_URL": f"{self.platform.url}/tokened",
            "TOKENED_CLIENT_ID": "client-1",
            "TOKENED_CLIENT_SECRET": "client-secret-1",
            "CHAINED_API_URL": f"{self.platform.url}/chained",
            "HANDOVER_API_URL": f"{self.platform.url}/handover",
            "GENERIC_CONNECTOR_OPS_TOKEN": OPS_TOKEN,
        }
        redis_via_link = f"redis://127.0.0.1:{self.store_link.port}/0"
        self.replicas = [
            RasaServer(
                model,
                folder / "credentials.yml",
                folder / f"replica-{name}.log",
                folder / f"endpoints-{name}.yml",
                env={**env, "REDIS_URL": url},
            )
            for name, url in (("a", self.redis.url), ("b", redis_via_link))
        ]
        self._restarts: List[threading.Thread] = []
        rng = random.Random()
        self._ids = itertools.count(rng.randrange(10**9, 2 * 10**9) * 1000)
        self._chats = itertools.count(rng.randrange(10**9, 2 * 10**9) * 1000)

    def ready(self) -> "Cluster":
        for thread in self._restarts:
            thread.join(240)
        self._restarts.clear()
        for server in self.replicas:
            server.wait_ready()
        return self

    def restart_in_background(self, server: RasaServer) -> None:
        thread = threading.Thread(target=server.kill_and_restart, daemon=True)
        thread.start()
        self._restarts.append(thread)

    def chats(self, count: int) -> List[int]:
        return [next(self._chats) for _ in range(count)]

    def update_id(self) -> int:
        return next(self._ids)

    def holder(self, channel: str = "telegram") -> Tuple[Optional[RasaServer], int]:
        """The replica holding the most conversation leases of the channel's outbox now."""
        held: Counter = Counter()
        for key in self.redis.keys(f"{PREFIX}:outbox:{channel}:lease:*"):
            token = self.redis.get(key) or ""
            held[token.split(":")[-2] if token.count(":") >= 2 else ""] += 1
        for server in sorted(self.replicas, key=lambda s: -held[str(s.process.pid)]):
            if held[str(server.process.pid)]:
                return server, held[str(server.process.pid)]
        return None, 0

    def deliveries_command(self, *args: str) -> "subprocess.CompletedProcess[str]":
        command = [str(Path(sys.executable).with_name("generic-connector")), "deliveries", *args]
        command += ["--url", self.redis.url]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    def dead(self, channel: str) -> List[Dict[str, Any]]:
        listed = self.deliveries_command("list", "--channel", channel, "--format", "json")
        assert listed.returncode == 0, listed.stderr
        return json.loads(listed.stdout)

    def close(self) -> None:
        for thread in self._restarts:
            thread.join(240)
        for server in self.replicas:
            server.stop()
        self.platform.close()
        self.store_link.close()
        self.rasa_link.close()
        self.api.close()
        self.redis.stop()


@pytest.fixture(scope="module")
def cluster(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if redis_binary() is None:
        pytest.skip("redis-server is not installed and cannot be installed here")
    started = Cluster(model, tmp_path_factory.mktemp("replicas"))
    try:
        yield started.ready()
    finally:
        started.close()


def expected_replies(answer: Answer) -> List[str]:
    return json.loads(answer[2])["replies"]


def check_trackers(
    cluster: Cluster, sent: Dict[int, List[int]], reader: Optional[RasaServer] = None
) -> Tuple[int, int, List[Tuple[int, List[str]]]]:
    """Handled once each: (user messages handled, handled more than once, conversations whose
    tracker does not hold its ids once each in order). ``sent``: chat -> update ids; the
    trackers are read through ``reader`` (default the first replica): they are shared."""
    handled = twice = 0
    wrong = []
    reader = reader or cluster.replicas[0]
    for chat, ids in sent.items():
        found = user_message_ids(reader, chat)
        counts = Counter(found)
        handled += sum(counts[str(i)] for i in ids)
        twice += sum(counts[str(i)] - 1 for i in ids if counts[str(i)] > 1)
        if found != [str(i) for i in ids]:
            wrong.append((chat, found))
    return handled, twice, wrong


def duplicates(delivered: Dict[str, List[int]]) -> int:
    return sum(len(ids) - len(set(ids)) for ids in delivered.values())


def send_until_acknowledged(
    cluster: Cluster,
    chat: int,
    seqs: range,
    sent: Dict[int, List[int]],
    acknowledged: Dict[str, List[int]],
    refusals: List[Tuple[int, Dict[str, str]]],
    lock: threading.Lock,
    first: int = 0,
    pause: float = 0.3,
    deadline: float = 90.0,
    channel: str = "telegram",
) -> None:
    """A platform's delivery of one chat's messages: each to the replicas in turn, sent again
    (to the other replica) until it is answered 200."""
    give_up = time.monotonic() + deadline
    turn = first
    for seq in seqs:
        update_id = cluster.update_id()
        body = update(update_id, chat, seq)
        while True:
            status, headers, _ = post_update(cluster.replicas[turn % 2], body, channel)
            turn += 1
            if status == 200:
                break
            with lock:
                refusals.append((status, headers))
            assert time.monotonic() < give_up, f"message {seq} of chat {chat} never accepted"
            time.sleep(pause)
        with lock:
            acknowledged[str(chat)].append(seq)
            sent[chat].append(update_id)


# The same message ids delivered to both replicas --------------------------------------------


def test_200_ids_each_delivered_to_both_replicas_in_turn_are_handled_once(
    cluster: Cluster,
) -> None:
    chats = cluster.chats(20)
    sent: Dict[int, List[int]] = {chat: [] for chat in chats}
    pairs: List[Tuple[Answer, Answer]] = []
    offsets = [log_size(s) for s in cluster.replicas]
    started = time.perf_counter()
    for seq in range(1, 11):
        for index, chat in enumerate(chats):
            update_id = cluster.update_id()
            body = update(update_id, chat, seq)
            first, second = cluster.replicas[::-1] if index % 2 else cluster.replicas
            pairs.append((post_update(first, body), post_update(second, body)))
            sent[chat].append(update_id)
    elapsed = time.perf_counter() - started
    assert [(a[0], b[0]) for a, b in pairs] == [(200, 200)] * 200
    assert [expected_replies(a) for a, _ in pairs] == [THANKS] * 200
    same = sum(a[2] == b[2] for a, b in pairs)
    assert same == 200  # every duplicate answered as the first delivery was
    handled, twice, wrong = check_trackers(cluster, sent)
    assert (handled, twice, wrong) == (200, 0, [])
    expected = {str(chat): list(range(1, 11)) for chat in chats}
    delivered = wait_delivered(cluster.api, expected, timeout=30)
    assert delivered == expected  # one sendMessage per message id, in order
    logged = sum(
        log_since(server, offset).count("was already handled")
        for server, offset in zip(cluster.replicas, offsets)
    )
    assert logged == 200
    print(
        f"\nreplicas, in turn: 200 ids x 2 replicas = 400 deliveries, all 200; "
        f"{handled} handled (tracker user events), {twice} twice; "
        f"{sum(map(len, delivered.values()))} sendMessage calls; "
        f"{same} of 200 duplicates answered the same; {elapsed:.1f} s"
    )


def deliver_together(
    server: RasaServer, body: Dict[str, Any], barrier: threading.Barrier
) -> Answer:
    barrier.wait()  # both replicas get the update at the same moment
    return post_update(server, body)


def test_200_ids_each_delivered_to_both_replicas_at_once_are_handled_once(
    cluster: Cluster,
) -> None:
    chats = cluster.chats(20)
    sent: Dict[int, List[int]] = {chat: [] for chat in chats}
    pairs: List[Tuple[Answer, Answer]] = []
    lock = threading.Lock()

    def conversation(chat: int) -> None:
        # Messages of one chat one after the other, as Telegram sends them; each to both
        # replicas at the same moment.
        with ThreadPoolExecutor(2) as both:
            for seq in range(1, 11):
                update_id = cluster.update_id()
                body = update(update_id, chat, seq)
                barrier = threading.Barrier(2)
                a, b = both.map(deliver_together, cluster.replicas, [body] * 2, [barrier] * 2)
                with lock:
                    pairs.append((a, b))
                    sent[chat].append(update_id)

    started = time.perf_counter()
    with ThreadPoolExecutor(len(chats)) as pool:
        list(pool.map(conversation, chats))
    elapsed = time.perf_counter() - started
    assert [(a[0], b[0]) for a, b in pairs] == [(200, 200)] * 200
    assert [expected_replies(a) for a, _ in pairs] == [THANKS] * 200
    same = sum(a[2] == b[2] for a, b in pairs)
    assert same == 200
    handled, twice, wrong = check_trackers(cluster, sent)
    assert (handled, twice, wrong) == (200, 0, [])
    expected = {str(chat): list(range(1, 11)) for chat in chats}
    delivered = wait_delivered(cluster.api, expected, timeout=30)
    assert delivered == expected
    print(
        f"\nreplicas, at once: 200 ids x 2 replicas at the same moment (20 conversations in "
        f"parallel), all 200; {handled} handled, {twice} twice; "
        f"{sum(map(len, delivered.values()))} sendMessage calls; {same} of 200 duplicates "
        f"answered the same; {elapsed:.1f} s"
    )


# The platform's API down --------------------------------------------------------------------


def test_platform_down_shorter_than_the_retry_budget_all_delivered(cluster: Cluster) -> None:
    cluster.ready()
    chats = cluster.chats(10)
    acknowledged: Dict[str, List[int]] = {str(chat): [] for chat in chats}
    sent: Dict[int, List[int]] = {chat: [] for chat in chats}
    offsets = [log_size(s) for s in cluster.replicas]
    cluster.platform.down()
    down_at = time.monotonic()
    for seq in (1, 2):
        for index, chat in enumerate(chats):
            update_id = cluster.update_id()
            status, _, answer = post_update(
                cluster.replicas[(index + seq) % 2], update(update_id, chat, seq)
            )
            assert status == 200, answer
            acknowledged[str(chat)].append(seq)
            sent[chat].append(update_id)
    assert wait_delivered(cluster.api, {c: [] for c in acknowledged}, 0) == {
        c: [] for c in acknowledged
    }
    time.sleep(max(0.0, 3.0 - (time.monotonic() - down_at)))
    cluster.platform.up()
    outage = time.monotonic() - down_at
    delivered = wait_delivered(cluster.api, acknowledged, timeout=30)
    after = time.monotonic() - down_at - outage
    assert delivered == acknowledged, delivered  # each once, in order
    failed_attempts = sum(
        len(re.findall(r"attempt \d+ of \d+ failed", log_since(s, o)))
        for s, o in zip(cluster.replicas, offsets)
    )
    dead = [e for e in cluster.dead("telegram") if e["conversation"] in acknowledged]
    assert dead == []
    print(
        f"\nreplicas, platform down {outage:.1f} s (retry budget about 4-13 s): 20 replies in "
        f"10 conversations acknowledged meanwhile, {failed_attempts} attempts refused, all 20 "
        f"delivered {after:.1f} s after it came back, once each and in order; 0 dead letters"
    )


def test_platform_down_longer_than_the_retry_budget_dead_letters_then_retry_all(
    cluster: Cluster,
) -> None:
    cluster.ready()
    chats = cluster.chats(8)
    acknowledged = {str(chat): [1] for chat in chats}
    cluster.platform.down()
    down_at = time.monotonic()
    for index, chat in enumerate(chats):
        status, _, answer = post_update(
            cluster.replicas[index % 2], update(cluster.update_id(), chat, 1), "telegram-short"
        )
        assert status == 200, answer
    deadline = time.monotonic() + 20
    dead: List[Dict[str, Any]] = []
    while time.monotonic() < deadline:
        dead = [e for e in cluster.dead("telegram-short") if e["conversation"] in acknowledged]
        if len(dead) == len(chats):
            break
        time.sleep(0.2)
    all_dead = time.monotonic() - down_at
    cluster.platform.up()
    assert sorted(e["conversation"] for e in dead) == sorted(acknowledged)
    assert {e["reason"] for e in dead} == {"retries exhausted"}
    assert {e["attempts"] for e in dead} == {3}
    assert wait_delivered(cluster.api, {c: [] for c in acknowledged}, 0) == {
        c: [] for c in acknowledged
    }
    # What an operator sees: no secret, the bot token masked.
    listed = cluster.deliveries_command("list", "--channel", "telegram-short")
    shown = cluster.deliveries_command("show", dead[0]["id"])
    assert shown.returncode == 0, shown.stderr
    assert BOT_TOKEN not in listed.stdout + shown.stdout
    assert "${TELEGRAM_BOT_TOKEN}" in shown.stdout
    retried = cluster.deliveries_command("retry", "--all", "--channel", "telegram-short")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == f"{len(chats)} requests back in the outbox"
    retried_at = time.monotonic()
    delivered = wait_delivered(cluster.api, acknowledged, timeout=30)
    assert delivered == acknowledged
    took = time.monotonic() - retried_at
    left = [e for e in cluster.dead("telegram-short") if e["conversation"] in acknowledged]
    assert left == []
    print(
        f"\nreplicas, platform down longer than the retry budget (3 attempts, under 1 s): "
        f"{len(dead)} of {len(chats)} acknowledged replies in the dead-letter stream "
        f"{all_dead:.1f} s into the outage, none sent; `deliveries list` shows them with the "
        f"token masked; `deliveries retry --all` put {len(chats)} back and all were delivered "
        f"{took:.1f} s later, once each"
    )


# SIGKILL of the replica holding pending deliveries ------------------------------------------


def test_sigkill_of_the_replica_holding_deliveries_loses_none_keeps_order(
    cluster: Cluster,
) -> None:
    cluster.ready()
    chats = cluster.chats(10)
    # The platform fails the first 10 calls, then answers slowly: deliveries pile up.
    cluster.api.plan(for_chats(chats), [FAILING] * 10, delay=0.2)
    cluster.api.plan(for_chats(chats), [OK] * 1000, delay=0.8)
    acknowledged: Dict[str, List[int]] = {str(chat): [] for chat in chats}
    sent: Dict[int, List[int]] = {chat: [] for chat in chats}
    for seq in range(1, 6):
        for index, chat in enumerate(chats):
            update_id = cluster.update_id()
            server = cluster.replicas[(index + seq) % 2]
            status, _, answer = post_update(server, update(update_id, chat, seq))
            assert status == 200, answer
            acknowledged[str(chat)].append(seq)
            sent[chat].append(update_id)
    victim, leases = cluster.holder()
    assert victim is not None, "no replica holds a delivery: the platform was too fast"
    survivor = next(s for s in cluster.replicas if s is not victim)
    so_far = wait_delivered(cluster.api, {c: [] for c in acknowledged}, 0)
    delivered_before = sum(len(set(ids)) for ids in so_far.values())
    victim.process.kill()
    victim.process.wait()
    killed_at = time.monotonic()
    cluster.restart_in_background(victim)
    delivered = wait_delivered(cluster.api, acknowledged, timeout=60)
    recovered = time.monotonic() - killed_at
    missing = {c: sorted(set(a) - set(delivered[c])) for c, a in acknowledged.items()}
    assert all(not ids for ids in missing.values()), missing
    assert all(in_order(delivered[c], acknowledged[c]) for c in acknowledged), delivered
    failed = sum(1 for r in cluster.api.received(for_chats(chats), 0, timeout=0) if r.status >= 500)
    handled, twice, wrong = check_trackers(cluster, sent, survivor)
    assert (handled, twice, wrong) == (50, 0, [])
    assert survivor.process.poll() is None
    print(
        f"\nreplicas, SIGKILL: 50 acknowledged replies in 10 conversations, platform failing "
        f"{failed} calls then answering after 0.8 s; the replica holding {leases} of the "
        f"conversations killed with {50 - delivered_before} replies undelivered; all 50 "
        f"delivered {recovered:.1f} s after the kill, in order in every conversation; "
        f"{duplicates(delivered)} delivered twice; {handled} handled, {twice} twice"
    )


# SIGTERM under load -------------------------------------------------------------------------


def test_sigterm_under_load_hands_back_deliveries_and_loses_none(cluster: Cluster) -> None:
    cluster.ready()
    chats = cluster.chats(16)
    cluster.api.plan(for_chats(chats), [OK] * 1000, delay=0.4)
    sent: Dict[int, List[int]] = {chat: [] for chat in chats}
    acknowledged: Dict[str, List[int]] = {str(chat): [] for chat in chats}
    refusals: List[Tuple[int, Dict[str, str]]] = []
    lock = threading.Lock()
    with ThreadPoolExecutor(len(chats)) as pool:
        load = [
            pool.submit(
                send_until_acknowledged, cluster, chat, range(1, 9), sent, acknowledged,
                refusals, lock, index,
            )
            for index, chat in enumerate(chats)
        ]  # fmt: skip
        time.sleep(2.0)
        # The replica holding the most conversations' deliveries is stopped.
        stopping, leases = cluster.holder()
        assert stopping is not None, "no replica holds a delivery: the platform was too fast"
        other = next(s for s in cluster.replicas if s is not stopping)
        offset = log_size(stopping)
        pid = stopping.process.pid
        stopped_at = time.monotonic()
        stopping.process.terminate()
        exit_code = stopping.process.wait(60)
        stop_seconds = time.monotonic() - stopped_at
        log = log_since(stopping, offset)
        cluster.restart_in_background(stopping)  # back for the next test, meanwhile
        for done in load:
            done.result()
    handed_back = [
        (int(n), conversation)
        for n, conversation in re.findall(
            r"shutting down with (\d+) request\(s\) of conversation (\d+) not delivered", log
        )
    ]
    # Every lease the stopping replica held was handed back: none is left to expire.
    leftover = [
        key
        for key in cluster.redis.keys(f"{PREFIX}:outbox:telegram:lease:*")
        if f":{pid}:" in (cluster.redis.get(key) or "")
    ]
    assert leftover == []
    assert handed_back, f"nothing handed back at shutdown:\n{log[-3000:]}"
    assert {c for _, c in handed_back} <= {str(c) for c in chats}
    acked = sum(map(len, acknowledged.values()))
    assert acked == len(chats) * 8
    delivered = wait_delivered(cluster.api, acknowledged, timeout=60)
    missing = {c: sorted(set(a) - set(delivered[c])) for c, a in acknowledged.items()}
    assert all(not ids for ids in missing.values()), missing
    assert all(in_order(delivered[c], acknowledged[c]) for c in acknowledged), delivered
    handled, twice, wrong = check_trackers(cluster, sent, other)
    assert (handled, twice, wrong) == (acked, 0, [])
    assert other.process.poll() is None
    kinds = Counter("no connection" if status == 0 else f"HTTP {status}" for status, _ in refusals)
    print(
        f"\nreplicas, SIGTERM: {acked} messages in {len(chats)} conversations, platform "
        f"answering after 0.4 s; the replica holding {leases} conversations stopped with "
        f"SIGTERM (exit {exit_code} after "
        f"{stop_seconds:.1f} s); {len(refusals)} deliveries refused meanwhile "
        f"({dict(kinds)}) and sent again to the other replica; "
        f"{sum(n for n, _ in handed_back)} requests of {len(handed_back)} conversations handed "
        f"back, one log line each; 0 of {acked} lost (all delivered, in order); "
        f"{duplicates(delivered)} delivered twice; {twice} handled twice"
    )


# Redis stopped mid-run ----------------------------------------------------------------------


def test_redis_stopped_mid_run_503s_nothing_lost_recovers_without_restart(
    cluster: Cluster,
) -> None:
    cluster.ready()
    pids = [s.process.pid for s in cluster.replicas]
    offsets = [log_size(s) for s in cluster.replicas]
    chats = cluster.chats(12)
    sent: Dict[int, List[int]] = {chat: [] for chat in chats}
    acknowledged: Dict[str, List[int]] = {str(chat): [] for chat in chats}
    refusals: List[Tuple[int, Dict[str, str]]] = []
    lock = threading.Lock()
    with ThreadPoolExecutor(len(chats)) as pool:
        load = [
            pool.submit(
                send_until_acknowledged, cluster, chat, range(1, 11), sent, acknowledged,
                refusals, lock, index, 0.3,
            )
            for index, chat in enumerate(chats)
        ]  # fmt: skip
        time.sleep(1.0)
        cluster.redis.stop()
        stopped_at = time.monotonic()
        time.sleep(3.0)
        cluster.redis.start()
        outage = time.monotonic() - stopped_at
        for done in load:
            done.result()
    acked = sum(map(len, acknowledged.values()))
    assert acked == len(chats) * 10
    statuses = Counter(status for status, _ in refusals)
    retry_after = Counter(headers.get("Retry-After") for status, headers in refusals)
    assert refusals, "no request was refused while Redis was down"
    # 503 with Retry-After; a 500 when Rasa's lock store failed while releasing the lock (see
    # test_lock_store_down_while_releasing_the_lock_is_answered_503). Both are sent again.
    assert set(statuses) <= {503, 500}, statuses  # never a dropped connection
    assert all("Retry-After" in h for status, h in refusals if status == 503), refusals
    delivered = wait_delivered(cluster.api, acknowledged, timeout=20)
    lost = {c: sorted(set(a) - set(delivered[c])) for c, a in acknowledged.items()}
    lost = {c: ids for c, ids in lost.items() if ids}
    handled, twice, wrong = check_trackers(cluster, sent)
    not_stored = sum(
        log_since(server, offset).count("cannot be reached (storing outbound requests)")
        for server, offset in zip(cluster.replicas, offsets)
    )
    # Conversations whose requests are still in the outbox, and who holds them.
    stuck = {
        chat: cluster.redis.get(f"{PREFIX}:outbox:telegram:lease:{chat}")
        for chat in lost
        if cluster.redis.keys(f"{PREFIX}:outbox:telegram:queue:{chat}")
    }
    print(
        f"\nreplicas, Redis stopped {outage:.1f} s under load: {len(refusals)} deliveries "
        f"refused meanwhile ({statuses[503]} x 503 with Retry-After "
        f"{sorted(k for k in retry_after if k)}, {statuses[500]} x 500), sent again by the "
        f"client; {acked} acknowledged, {handled - twice} handled, {twice} handled twice; "
        f"{acked - sum(map(len, lost.values()))} delivered ({duplicates(delivered)} twice), "
        f"{sum(map(len, lost.values()))} lost; {not_stored} answered 503 after the message "
        f"was handled, while storing its replies; {len(stuck)} conversations with replies "
        f"still in the outbox {stuck or ''}"
    )
    assert [s.process.pid for s in cluster.replicas] == pids  # not restarted
    assert all(s.process.poll() is None for s in cluster.replicas)
    # Replies lost here were acknowledged as duplicates after a 503 while storing them: see
    # test_redis_cut_after_the_id_is_recorded_the_retry_still_gets_its_reply.
    assert lost == {}, f"acknowledged with 200, never delivered: {lost}; still queued: {stuck}"
    assert all(in_order(delivered[c], acknowledged[c]) for c in acknowledged), delivered
    # At least once: a message whose replies could not be stored while Redis was down is
    # handled again when the platform sends it again; nothing else is repeated or reordered.
    assert handled - twice == acked, (handled, twice, wrong)
    for chat, found in wrong:
        assert [k for k, _ in groupby(found)] == [str(i) for i in sent[chat]], (chat, found)
    # And both replicas go on as before.
    for server in cluster.replicas:
        status, _, _ = post_update(server, update(cluster.update_id(), chats[0], 99))
        assert status == 200


# Outages at a chosen moment: what the channel makes of them ------------------------------------


def test_redis_cut_after_the_id_is_recorded_the_retry_still_gets_its_reply(
    cluster: Cluster,
) -> None:
    """Replica B handles a message and records its id; Redis then stops answering just as the
    replies are to be stored, so the webhook is answered 503 and the platform sends it again.
    The id is only remembered once the replies are in the outbox, so the retry is handled
    again (at least once) and its replies reach the user."""
    (chat,) = cluster.chats(1)
    replica_b = cluster.replicas[1].wait_ready()
    # The outbox's write: a stored request of this chat (``<id> {"channel": ..., ...}``).
    store_put = (
        rb'\r\n[0-9a-f]{32} \{"channel": "telegram", "conversation": "' + str(chat).encode()
    )  # fmt: skip
    cluster.store_link.trip_on(store_put, hold=1.5)
    body = update(cluster.update_id(), chat, 1)
    status, headers, answer = post_update(replica_b, body)
    assert cluster.store_link.tripped, "the outbox write was never seen"
    assert (status, "Retry-After" in headers) == (503, True), answer
    time.sleep(2.0)  # the link is back
    assert user_message_ids(replica_b, chat) == [str(body["update_id"])]  # it was handled
    retry = post_update(replica_b, body)
    for _ in range(5):  # as the platform does while it gets 503 (a loaded machine is slower)
        if retry[0] != 503:
            break
        time.sleep(1.0)
        retry = post_update(replica_b, body)
    assert retry[0] == 200
    handled = user_message_ids(replica_b, chat)
    assert handled == [str(body["update_id"])] * 2  # handled again: the id was not remembered
    delivered = wait_delivered(cluster.api, {str(chat): [1]}, timeout=10)
    print(
        f"\nreplicas, Redis cut while the replies are stored: answered {status}, the "
        f"platform's retry handled again and answered 200; sendMessage calls for it: "
        f"{len(delivered[str(chat)])}"
    )
    assert delivered == {str(chat): [1]}, "acknowledged with 200, but the reply was never sent"


def test_lock_store_down_while_releasing_the_lock_is_answered_503(cluster: Cluster) -> None:
    """Replica B's Rasa loses Redis right when it saves the tracker, so its lock store fails
    to release the conversation's lock: Redis is unreachable, and the answer should say so
    with 503 and Retry-After, as when the lock cannot be taken."""
    (chat,) = cluster.chats(1)
    replica_b = cluster.replicas[1].wait_ready()
    tracker_save = rb"\r\nSET\r\n\$\d+\r\ntracker:" + str(chat).encode() + rb"\r\n"
    cluster.rasa_link.trip_on(tracker_save, hold=1.5)
    status, headers, answer = post_update(replica_b, update(cluster.update_id(), chat, 1))
    assert cluster.rasa_link.tripped, "the tracker save was never seen"
    print(
        f"\nreplicas, Redis cut as Rasa saves the tracker (lock store and tracker store down): "
        f"answered {status}, Retry-After {headers.get('Retry-After')}: {answer.decode()}"
    )
    assert (status, headers.get("Retry-After")) == (503, "2"), answer


def test_a_token_is_shared_by_both_replicas_and_refreshed_after_a_401(cluster: Cluster) -> None:
    """The token endpoint is asked once for both replicas' replies; when the API refuses the
    token with 401, it is asked again and the reply goes out with the new token."""
    cluster.ready()
    api = cluster.api
    token_path = "/tokened/oauth2/token"
    api.plan(
        lambda r: r.path == token_path,
        [
            (200, {}, {"access_token": "token-1", "token_type": "Bearer", "expires_in": 3600}),
            (200, {}, {"access_token": "token-2", "token_type": "Bearer", "expires_in": 3600}),
        ],
    )
    api.plan(lambda r: r.path == "/tokened/send" and r.json["to"] == "tok-3", [(401, {}, {})])
    a, b = cluster.replicas
    for number, replica in enumerate((a, b, b), start=1):
        body = {"sender": f"tok-{number}", "message": "hi", "id": f"tok-msg-{number}"}
        give_up = time.monotonic() + 30
        # Sent again while answered 503 (Retry-After), as a platform does: an earlier test of
        # the module may leave Rasa's lock store recovering for a few seconds.
        status, _, answer = replica.post("/webhooks/tokened/webhook", body)
        while status == 503 and time.monotonic() < give_up:
            time.sleep(1.0)
            status, _, answer = replica.post("/webhooks/tokened/webhook", body)
        assert status == 200, answer
        # One after the other: each reply delivered (in the background) before the next.
        api.received(lambda r: r.path == "/tokened/send" and r.status == 200, number)
    sent = [r for r in api.requests if r.path == "/tokened/send" and r.status == 200]
    assert [(r.json["to"], r.headers["Authorization"]) for r in sent] == [
        ("tok-1", "Bearer token-1"),
        ("tok-2", "Bearer token-1"),  # the other replica: the token from Redis
        ("tok-3", "Bearer token-2"),  # after the 401 with token-1
    ]
    asked = [r for r in api.requests if r.path == token_path]
    assert len(asked) == 2
    expected_basic = "Basic " + base64.b64encode(b"client-1:client-secret-1").decode()
    assert {r.headers["Authorization"] for r in asked} == {expected_basic}
    assert {r.body for r in asked} == {b"grant_type=client_credentials"}
    for replica in (a, b):  # no token in any log line
        assert "token-1" not in replica.log_text() and "token-2" not in replica.log_text()


def test_a_chain_is_delivered_from_redis_and_a_not_sent_answer_is_dead_lettered(
    cluster: Cluster,
) -> None:
    """Each reply opens a conversation, then sends into it with the id it got. A send the
    API answers 200 with is_sent false is retried (the chain from its first call), then given
    up: a dead letter an operator can see."""
    greeting = "Hello! I am the generic connector demo."
    cluster.ready()
    api = cluster.api
    api.plan(
        lambda r: r.path == "/chained/conversations",
        [(200, {}, {"id": f"conv-{n}"}) for n in range(4)],
    )
    api.plan(
        lambda r: r.path == "/chained/conversations/conv-0/messages", [(200, {}, {"is_sent": True})]
    )
    not_sent = (200, {}, {"is_sent": False, "reason": "member left"})
    api.plan(lambda r: r.path.startswith("/chained/conversations/conv-"), [not_sent] * 3)
    a, b = cluster.replicas
    for number, replica in enumerate((a, b), start=1):
        body = {"sender": f"chain-{number}", "message": "hi", "id": f"chain-msg-{number}"}
        give_up = time.monotonic() + 30
        status, _, answer = replica.post("/webhooks/chained/webhook", body)
        while status == 503 and time.monotonic() < give_up:  # Rasa's lock store recovering
            time.sleep(1.0)
            status, _, answer = replica.post("/webhooks/chained/webhook", body)
        assert status == 200, answer
        if number == 1:
            api.received(lambda r: r.path == "/chained/conversations/conv-0/messages", 1)
    deadline = time.monotonic() + 20
    dead: List[Dict[str, Any]] = []
    while time.monotonic() < deadline and not dead:
        dead = [e for e in cluster.dead("chained") if e["conversation"] == "chain-2"]
        time.sleep(0.2)
    chained = [(r.path, r.json) for r in api.requests if r.path.startswith("/chained/")]
    assert chained == [
        ("/chained/conversations", {"members": ["chain-1"]}),
        ("/chained/conversations/conv-0/messages", {"text": greeting}),
        *[
            step
            for n in (1, 2, 3)
            for step in (
                ("/chained/conversations", {"members": ["chain-2"]}),
                (f"/chained/conversations/conv-{n}/messages", {"text": greeting}),
            )
        ],
    ]
    [letter] = dead
    assert (letter["reason"], letter["attempts"]) == ("retries exhausted", 3)
    shown = cluster.deliveries_command("show", letter["id"])
    assert shown.returncode == 0, shown.stderr
    assert "is_sent" in shown.stdout and "member left" in shown.stdout


def conversations_command(cluster: Cluster, *args: str) -> "subprocess.CompletedProcess[str]":
    """``generic-connector conversations ...`` against the cluster's Redis."""
    command = [str(Path(sys.executable).with_name("generic-connector")), "conversations", *args]
    command += ["--url", cluster.redis.url]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_a_conversation_paused_on_one_replica_is_paused_on_the_other_and_resumed(
    cluster: Cluster,
) -> None:
    """Paused through replica A's API, a message to replica B is acknowledged without the
    assistant (no new user event in the shared tracker) and relayed; resumed by the command,
    the next message to replica A is handled and answered. An agent event pauses too."""
    cluster.ready()
    api = cluster.api
    a, b = cluster.replicas
    [chat] = cluster.chats(1)
    sender = f"hand-{chat}"
    bearer = {"Authorization": f"Bearer {OPS_TOKEN}", "Content-Type": "application/json"}
    base = "/webhooks/handover/conversations"

    def send(replica: RasaServer, body: Dict[str, Any]) -> Answer:
        give_up = time.monotonic() + 30
        answer = replica.post("/webhooks/handover/webhook", body)
        while answer[0] == 503 and time.monotonic() < give_up:  # Rasa's lock store recovering
            time.sleep(1.0)
            answer = replica.post("/webhooks/handover/webhook", body)
        return answer

    status, _, body = send(a, {"sender": sender, "message": "hi", "id": f"{sender}-1"})
    assert status == 200 and json.loads(body)["replies"], body
    handled = len(user_events(a.tracker(sender)))
    assert handled == 1

    wrong = a.send(f"{base}/{sender}/pause", b"", {"Authorization": "Bearer wrong"})
    assert wrong[0] == 401
    bad = a.send(f"{base}/{sender}/stop", b"", bearer)
    assert bad[0] == 400 and "unknown action" in json.loads(bad[2])["error"]
    status, _, body = a.send(f"{base}/{sender}/pause", b'{"timeout": 300}', bearer)
    assert status == 200, body
    assert json.loads(body)["by"] == "api"

    status, _, body = send(b, {"sender": sender, "message": "a person please", "id": f"{sender}-2"})
    assert (status, json.loads(body)) == (200, {"replies": []})
    assert len(user_events(b.tracker(sender))) == handled  # not given to Rasa
    [relayed] = api.received(lambda r: r.path == "/handover/agent-inbox", 1)
    assert relayed.json == {"conversation": sender, "text": "a person please", "id": f"{sender}-2"}
    assert "a person please" not in b.log_text()
    status, _, body = b.send(f"{base}/paused", None, bearer, method="GET")
    assert status == 200 and sender in [row["conversation"] for row in json.loads(body)["paused"]]

    listed = conversations_command(cluster, "list", "--channel", "handover", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert sender in [row["conversation"] for row in json.loads(listed.stdout)["paused"]]
    resumed = conversations_command(cluster, "resume", sender, "--channel", "handover")
    assert resumed.returncode == 0, resumed.stderr

    status, _, body = send(a, {"sender": sender, "message": "hi again", "id": f"{sender}-3"})
    assert status == 200 and json.loads(body)["replies"], body
    assert len(user_events(a.tracker(sender))) == handled + 1

    # An agent event to replica B pauses the conversation for replica A.
    assert send(b, {"sender": sender, "event": "agent_assigned"})[0] == 200
    status, _, body = send(a, {"sender": sender, "message": "hello?", "id": f"{sender}-4"})
    assert (status, json.loads(body)) == (200, {"replies": []})
    assert len(user_events(a.tracker(sender))) == handled + 1
    assert send(a, {"sender": sender, "event": "agent_left"})[0] == 200
    listed = conversations_command(cluster, "list", "--channel", "handover", "--format", "json")
    assert sender not in [row["conversation"] for row in json.loads(listed.stdout)["paused"]]
