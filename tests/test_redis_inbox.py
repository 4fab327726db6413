"""The Redis inbox against a real redis-server: order per conversation across replicas, exactly
one handling per message, retries, the dead-letter stream, a replica that dies mid-handling,
an outage, and a graceful shut-down."""

import argparse
import asyncio
import functools
import json
import logging
import random
import time
from collections import Counter
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest
import redis

from generic_connector.cli import deliveries
from generic_connector.cli.dryrun import Recorder as Outbound
from generic_connector.config import load_channel
from generic_connector.errors import RetryLater
from generic_connector.idempotency import Replies
from generic_connector.mapping import Extracted
from generic_connector.pipeline import Assistant, Pipeline, handle_stored
from generic_connector.request import IncomingRequest
from generic_connector.stores.redis.client import StoreUnavailable, new_pool
from generic_connector.stores.redis.dedup import RedisStore
from generic_connector.stores.redis.inbox import RedisInbox
from tests.redis_server import RedisServer, fresh, serve

BASE = "generic_connector:inbox:chat"
DEAD = "generic_connector:dead"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from serve()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return fresh(redis_server)


def message(sender: str, n: int, message_id: Optional[str] = "") -> Dict[str, Any]:
    """A mapped user message, as the pipeline would put it."""
    return {
        "sender": sender,
        "text": f"message {n} from {sender}",
        "input_channel": "chat",
        "metadata": {"n": n},
        "message_id": f"{sender}-{n}" if message_id == "" else message_id,
        "event": {"from": sender, "n": n, "ts": 1700000000 + n},
        "request_id": f"req-{sender}-{n}",
    }


class Recorder:
    """Handlers that record what they handled, and notice two messages of one conversation
    handled at the same time."""

    def __init__(self) -> None:
        self.handled: List[Tuple[str, int, str]] = []  # (sender, n, replica)
        self.entries: List[Dict[str, Any]] = []
        self.calls: Counter = Counter()  # (sender, n) → handler calls
        self.running: Set[str] = set()
        self.overlaps = 0

    def handler(
        self,
        replica: str,
        delay: Callable[[Dict[str, Any]], float] = lambda entry: 0.0,
        fail: Callable[[Dict[str, Any], int], bool] = lambda entry, call: False,
    ) -> Callable[[Dict[str, Any]], Any]:
        async def handle(entry: Dict[str, Any]) -> None:
            sender, n = entry["sender"], entry["metadata"]["n"]
            self.calls[(sender, n)] += 1
            if sender in self.running:
                self.overlaps += 1
            self.running.add(sender)
            try:
                pause = delay(entry)
                if pause:
                    await asyncio.sleep(pause)
                if fail(entry, self.calls[(sender, n)]):
                    raise ValueError(f"cannot handle message {n} of {sender}")
            finally:
                self.running.discard(sender)
            self.handled.append((sender, n, replica))
            self.entries.append(entry)

        return handle

    def by_conversation(self) -> Dict[str, List[int]]:
        result: Dict[str, List[int]] = {}
        for sender, n, _ in self.handled:
            result.setdefault(sender, []).append(n)
        return result


class Replicas:
    """Inboxes with connection pools of their own, as separate processes would have."""

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options = {
            "visibility_timeout": 1.0,
            "grace": 1.0,
            "backoff": 0.05,
            "max_backoff": 0.2,
            "poll_interval": 0.1,
            **options,
        }
        self.started: List[RedisInbox] = []

    def inbox(self, **options: Any) -> RedisInbox:
        inbox = RedisInbox("chat", self.url, pool=new_pool(self.url), **{**self.options, **options})
        self.started.append(inbox)
        return inbox

    async def start(self, handler: Any, **options: Any) -> RedisInbox:
        inbox = self.inbox(**options)
        await inbox.start(handler)
        return inbox

    async def close(self) -> None:
        for inbox in self.started:
            await inbox.close()
            if inbox.redis._given is not None:
                await inbox.redis._given.disconnect()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    """Wait until the condition holds; the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def left_in_redis(url: str) -> Tuple[int, int]:
    """(messages in the inbox's queues, conversations waiting to be worked on)."""
    r = client(url)
    queued = sum(r.llen(key) for key in r.scan_iter(f"{BASE}:queue:*"))
    return queued, r.zcard(f"{BASE}:ready")


def test_three_messages_are_handled_once_in_order(redis_url: str) -> None:
    recorder = Recorder()
    entries = [message("u1", n) for n in range(3)]

    async def scenario() -> None:
        replicas = Replicas(redis_url)
        try:
            inbox = await replicas.start(recorder.handler("a"))
            await inbox.put(entries)
            await until(lambda: len(recorder.handled) == 3)
            await asyncio.sleep(0.3)  # nothing comes twice
        finally:
            await replicas.close()

    asyncio.run(scenario())
    assert recorder.entries == entries  # as put, in order, once
    assert left_in_redis(redis_url) == (0, 0)  # acknowledged and deleted


def test_two_replicas_handle_each_message_once_in_order_per_conversation(redis_url: str) -> None:
    recorder = Recorder()
    conversations = [f"c{i:02d}" for i in range(20)]
    per_conversation = 10
    rng = random.Random(7)

    def delay(entry: Dict[str, Any]) -> float:
        return rng.choice((0.0, 0.0, 0.002, 0.01))

    async def scenario() -> Dict[str, int]:
        replicas = Replicas(redis_url, concurrency=8)
        try:
            first = await replicas.start(recorder.handler("a", delay))
            second = await replicas.start(recorder.handler("b", delay))
            for n in range(per_conversation):  # batches of 4 requests, alternating replicas
                for index in range(0, len(conversations), 4):
                    batch = [message(c, n) for c in conversations[index : index + 4]]
                    await (first if (n + index) % 2 else second).put(batch)
            total = len(conversations) * per_conversation
            took = await until(lambda: len(recorder.handled) >= total, 20)
            await asyncio.sleep(0.5)  # and nothing comes twice
            shares = Counter(replica for _, _, replica in recorder.handled)
            print(f"\n2 replicas: {len(recorder.handled)} handled in {took:.2f} s, {dict(shares)}")
            return dict(shares)
        finally:
            await replicas.close()

    shares = asyncio.run(scenario())
    duplicates = sum(count - 1 for count in recorder.calls.values())
    print(f"duplicates {duplicates}, overlapping handlings of one conversation {recorder.overlaps}")
    assert len(recorder.handled) == 200 and duplicates == 0  # exactly once
    assert recorder.by_conversation() == {c: list(range(per_conversation)) for c in conversations}
    assert recorder.overlaps == 0  # one message of a conversation at a time
    assert shares.get("a") and shares.get("b")  # both replicas worked
    assert left_in_redis(redis_url) == (0, 0)


def test_a_message_that_fails_once_is_retried_and_handled_once(redis_url: str) -> None:
    recorder = Recorder()

    def fail(entry: Dict[str, Any], call: int) -> bool:
        return entry["metadata"]["n"] == 1 and call == 1

    async def scenario() -> None:
        replicas = Replicas(redis_url)
        try:
            inbox = await replicas.start(recorder.handler("a", fail=fail))
            await inbox.put([message("r1", n) for n in range(3)] + [message("r2", 0)])
            await until(lambda: len(recorder.handled) == 4)
            await asyncio.sleep(0.3)
        finally:
            await replicas.close()

    asyncio.run(scenario())
    assert recorder.calls[("r1", 1)] == 2  # failed, then handled
    assert recorder.by_conversation() == {"r1": [0, 1, 2], "r2": [0]}  # once each, in order
    assert client(redis_url).xlen(DEAD) == 0
    assert client(redis_url).hlen(f"{BASE}:attempts") == 0


def deliveries_cli(*argv: str) -> int:
    """``generic-connector deliveries ...`` as the command line runs it."""
    parser = argparse.ArgumentParser()
    deliveries.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["deliveries", *argv])
    return args.run(args)


def test_a_poison_message_goes_to_the_dead_letter_stream_and_the_rest_is_handled(
    redis_url: str, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="generic_connector")
    recorder = Recorder()
    healed = False

    def fail(entry: Dict[str, Any], call: int) -> bool:
        return entry["sender"] == "p1" and entry["metadata"]["n"] == 1 and not healed

    async def scenario() -> None:
        nonlocal healed
        replicas = Replicas(redis_url, max_attempts=3)
        try:
            inbox = await replicas.start(recorder.handler("a", fail=fail))
            # One batch: the poison message in the middle of a conversation, and another one.
            await inbox.put([message("p1", n) for n in range(4)] + [message("p2", 0)])
            await until(lambda: len(recorder.handled) == 4)
            await asyncio.sleep(0.2)
            assert recorder.calls[("p1", 1)] == 3  # max_attempts handler calls
            # ``deliveries retry`` for an inbound entry: back in the inbox, handled this time.
            healed = True
            [(dead_id, _)] = client(redis_url).xrange(DEAD)
            assert deliveries_cli("retry", dead_id.decode(), "--url", redis_url) == 0
            await until(lambda: len(recorder.handled) == 5)
        finally:
            await replicas.close()

    r = client(redis_url)
    fields: Dict[str, str] = {}

    def capture() -> None:
        [(_, raw)] = r.xrange(DEAD)
        fields.update({k.decode(): v.decode() for k, v in raw.items()})

    async def watched() -> None:
        task = asyncio.ensure_future(scenario())
        await until(lambda: r.xlen(DEAD) == 1)
        capture()  # before the requeue empties the stream again
        await task

    asyncio.run(watched())
    assert recorder.by_conversation() == {"p1": [0, 2, 3, 1], "p2": [0]}
    assert fields["kind"] == "inbound" and fields["channel"] == "chat"
    assert fields["conversation"] == "p1" and fields["attempts"] == "3"
    assert fields["reason"] == "retries exhausted"
    assert fields["problem"] == "ValueError: cannot handle message 1 of p1"
    assert json.loads(fields["payload"]) == message("p1", 1)  # to handle it again
    assert json.loads(fields["shown"])["text"] == "message 1 from p1"
    assert r.xlen(DEAD) == 0  # requeued
    assert "moved to the dead-letter stream" in caplog.text
    assert "message 1 from p1" not in caplog.text  # the user's text is not logged


def test_a_replica_killed_mid_handling_is_taken_over_after_the_visibility_timeout(
    redis_url: str,
) -> None:
    recorder = Recorder()
    starts: List[Tuple[str, int, float]] = []  # (replica, n, when)

    def timed(replica: str, seconds: float) -> Callable[[Dict[str, Any]], float]:
        def delay(entry: Dict[str, Any]) -> float:
            starts.append((replica, entry["metadata"]["n"], time.monotonic()))
            return seconds if entry["metadata"]["n"] == 0 else 0.0

        return delay

    async def scenario() -> float:
        replicas = Replicas(redis_url)
        try:
            doomed = await replicas.start(recorder.handler("doomed", timed("doomed", 5.0)))
            await doomed.put([message("k1", n) for n in range(3)])
            await until(lambda: bool(starts))  # handling the first one
            survivor = await replicas.start(recorder.handler("survivor", timed("survivor", 0.0)))
            assert doomed.worker is not None
            doomed.kill()  # no hand-back, no clean-up
            await asyncio.wait([doomed.worker])
            killed = time.monotonic()
            await until(lambda: len(recorder.handled) == 3, 10)
            await asyncio.sleep(0.3)
            assert survivor.worker is not None and not survivor.worker.done()
            return killed
        finally:
            await replicas.close()

    killed = asyncio.run(scenario())
    taken_over = min(when for replica, _, when in starts if replica == "survivor") - killed
    print(
        f"\nkilled mid-handling: {sum(recorder.calls.values())} handler calls for 3 messages, "
        f"{recorder.calls[('k1', 0)] - 1} repeated, taken over {taken_over:.2f} s after the kill"
    )
    assert [(r, n) for r, n, _ in starts] == [("doomed", 0), ("survivor", 0), ("survivor", 1),
                                              ("survivor", 2)]  # fmt: skip
    assert recorder.handled == [("k1", 0, "survivor"), ("k1", 1, "survivor"), ("k1", 2, "survivor")]
    assert 0.7 <= taken_over < 2.5  # after the 1 s visibility timeout, not before
    assert left_in_redis(redis_url) == (0, 0)


def test_redis_down_makes_put_and_start_raise_and_the_inbox_recovers(
    redis_server: RedisServer, redis_url: str, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="generic_connector")
    recorder = Recorder()

    async def scenario() -> Tuple[str, str]:
        replicas = Replicas(redis_url)
        try:
            inbox = await replicas.start(recorder.handler("a"))
            redis_server.stop()
            with pytest.raises(StoreUnavailable) as raised:
                await inbox.put([message("u1", 0)])
            with pytest.raises(StoreUnavailable) as at_start:
                await replicas.start(recorder.handler("b"))
            await asyncio.sleep(0.5)  # the worker notices
            redis_server.start()  # empty: the consumer group is made again
            await inbox.put([message("u1", 1)])
            await until(lambda: len(recorder.handled) == 1, 10)
            return str(raised.value), str(at_start.value)
        finally:
            await replicas.close()

    problem, at_start = asyncio.run(scenario())
    where = f"Redis at 127.0.0.1:{redis_server.port}/0 cannot be reached"
    assert problem.startswith(where + " (storing inbound messages)")
    assert at_start.startswith(where)
    assert recorder.handled == [("u1", 1, "a")]  # the refused one was never stored
    assert caplog.text.count("the inbox waits until it answers again") == 1
    assert "answers again; the inbox goes on" in caplog.text


def test_close_finishes_the_handling_under_way_and_hands_back_the_rest(
    redis_url: str, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="generic_connector")
    recorder = Recorder()
    began: Set[Tuple[str, int]] = set()

    def delay(entry: Dict[str, Any]) -> float:
        began.add((entry["sender"], entry["metadata"]["n"]))
        return {"s1": 0.5, "s2": 30.0}.get(entry["sender"], 0.0)  # s2 outlasts the grace

    async def scenario() -> Tuple[float, float]:
        # A long visibility timeout: the other replica gets the rest because it is handed back.
        replicas = Replicas(redis_url, visibility_timeout=20.0, grace=1.0)
        try:
            stopping = await replicas.start(recorder.handler("stopping", delay))
            await stopping.put([message("s1", 0), message("s1", 1), message("s2", 0)])
            await until(lambda: {("s1", 0), ("s2", 0)} <= began)
            started = time.monotonic()
            await stopping.close()  # SIGTERM
            closed = time.monotonic() - started
            assert recorder.handled == [("s1", 0, "stopping")]  # finished within the grace
            attempts = client(redis_url).hgetall(f"{BASE}:attempts")
            assert attempts == {}  # s2's stopped attempt does not count, s1's next was not made
            await replicas.start(recorder.handler("other"))
            took = await until(lambda: len(recorder.handled) == 3, 10)
            return closed, took
        finally:
            await replicas.close()

    closed, took = asyncio.run(scenario())
    print(f"\nclose took {closed:.2f} s; the other replica handled the rest in {took:.2f} s")
    assert 0.9 <= closed < 1.6  # the grace, not the 30 s handler
    assert took < 3.0  # handed back: no 20 s visibility timeout
    assert recorder.by_conversation() == {"s1": [0, 1], "s2": [0]}
    assert ("s1", 1, "other") in recorder.handled and ("s2", 0, "other") in recorder.handled
    assert recorder.calls[("s1", 0)] == 1  # nothing handled twice but the stopped one
    assert "2 conversation(s) handed back to the other replicas (1 stopped" in caplog.text


class Texts(Assistant):
    """Records the texts it handles, with the sender."""

    def __init__(self) -> None:
        self.handled: List[Tuple[str, str]] = []

    async def handle(self, message: Extracted) -> Replies:
        self.handled.append((message.sender_id, message.text))
        return []


EARLY = {
    "name": "chat",
    "request": {"sender": "user", "text": "text", "message_id": "id", "ack": "early"},
    "store": {"type": "redis", "url_env": "REDIS_URL"},
}


def test_duplicates_are_handled_once_by_message_id_and_repeats_without_one_every_time(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    config = load_channel(EARLY)
    assistant = Texts()
    with_id = message("d1", 0)
    # Without a platform message id a user's repeated "hi" cannot be told from a retry: each
    # one is handled (the user's hi, bye, hi, hi reached Rasa as hi, bye when keyed by text).
    without_id = message("d2", 0, message_id=None)

    async def scenario() -> None:
        replicas = Replicas(redis_url)
        stores = []
        inboxes = []
        try:
            for _ in range(2):  # each replica with its pipeline and de-duplication store
                store = RedisStore(url=redis_url, pool=new_pool(redis_url))
                pipeline = Pipeline(config, store, None)
                stores.append(store)
                handler = functools.partial(handle_stored, pipeline, assistant=assistant)
                inboxes.append(await replicas.start(lambda entry, h=handler: h(entry)))
            first, second = inboxes
            await first.put([with_id, without_id])
            # The platform's retry (the 2xx was lost), on the other replica, in a batch with a
            # copy of itself; and the same text again from the user.
            await second.put([{**with_id, "request_id": "retry"}, {**with_id}, without_id])
            await second.put([without_id])
            await until(lambda: len(assistant.handled) == 4)
            await asyncio.sleep(0.4)
        finally:
            await replicas.close()
            for store in stores:
                await store.close()

    asyncio.run(scenario())
    assert sorted(assistant.handled) == [
        ("d1", "message 0 from d1"),
        ("d2", "message 0 from d2"),
        ("d2", "message 0 from d2"),
        ("d2", "message 0 from d2"),
    ]
    assert left_in_redis(redis_url) == (0, 0)  # the copies were taken out too


def test_retry_later_does_not_spend_attempts(redis_url: str) -> None:
    recorder = Recorder()
    refusals = 0
    inner = recorder.handler("a")

    async def handler(entry: Dict[str, Any]) -> None:
        nonlocal refusals
        if refusals < 4:  # the assistant is loading
            refusals += 1
            raise RetryLater(0.05, "the assistant is not ready")
        await inner(entry)

    async def scenario() -> None:
        replicas = Replicas(redis_url, max_attempts=2)
        try:
            inbox = await replicas.start(handler)
            await inbox.put([message("l1", 0)])
            await until(lambda: len(recorder.handled) == 1)
        finally:
            await replicas.close()

    asyncio.run(scenario())
    assert refusals == 4 and recorder.handled == [("l1", 0, "a")]
    assert client(redis_url).xlen(DEAD) == 0


def test_a_message_that_kills_its_replica_on_the_last_attempt_goes_to_the_dead_letters(
    redis_url: str,
) -> None:
    recorder = Recorder()
    began: List[str] = []

    def hang(entry: Dict[str, Any]) -> float:
        began.append(entry["sender"])
        return 30.0 if entry["sender"] == "x1" else 0.0

    async def scenario() -> None:
        replicas = Replicas(redis_url, max_attempts=1)
        try:
            doomed = await replicas.start(recorder.handler("doomed", hang))
            await doomed.put([message("x1", 0), message("x1", 1)])
            await until(lambda: bool(began))
            survivor = await replicas.start(recorder.handler("survivor"))
            assert doomed.worker is not None
            doomed.kill()  # the message's only attempt died with its replica
            await until(lambda: len(recorder.handled) == 1, 10)
            assert survivor.worker is not None
        finally:
            await replicas.close()

    asyncio.run(scenario())
    assert recorder.handled == [("x1", 1, "survivor")]  # the next one is handled
    [(_, fields)] = client(redis_url).xrange(DEAD)
    assert fields[b"attempts"] == b"1" and fields[b"kind"] == b"inbound"
    assert fields[b"problem"] == b"the worker handling it stopped during the last attempt"


class Slow(Assistant):
    """Answers after ``delay`` seconds with the message's text."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.handled: List[str] = []

    async def handle(self, message: Extracted) -> Replies:
        await asyncio.sleep(self.delay)
        self.handled.append(message.text)
        return [{"recipient_id": message.sender_id, "text": f"re: {message.text}"}]


DEFERRING = {
    "name": "deferring",
    "request": {"sender": "user", "text": "text", "message_id": "id"},
    "store": {"type": "redis", "url_env": "REDIS_URL"},
    "response": {"body": "{replies: messages[].text}"},
    "defer": {"after": 0.5, "response": {"body": '`{"deferred": true}`'}},
    "outbound": {"text": {"url": "'https://api.example.com/send'", "body": "{text: message.text}"}},
}


@pytest.mark.parametrize(
    "delay, answer, sent",
    [
        (0.0, {"replies": ["re: hi"]}, []),  # in time: the answer carries the reply
        (1.0, {"deferred": True}, ["re: hi"]),  # late: the reply goes through outbound
    ],
)
def test_defer_on_a_shared_store_stores_the_message_before_it_answers(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, delay: float, answer: Any, sent: List[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    config = load_channel(DEFERRING)
    outbox = Outbound()
    pipeline = Pipeline(config, None, outbox)
    assistant = Slow(delay)
    body = b'{"user": "u", "text": "hi", "id": "m-1"}'

    async def scenario() -> Any:
        pipeline.inbox = Replicas(redis_url).inbox()
        await pipeline.inbox.start(lambda entry: handle_stored(pipeline, entry, assistant))
        try:
            _, rendered = await pipeline.run(IncomingRequest.from_parts(body), assistant)
            await until(lambda: assistant.handled == ["hi"])
            await until(lambda: len(outbox.requests) == len(sent))
            await asyncio.sleep(0.2)
            return rendered
        finally:
            await pipeline.inbox.close()

    rendered = asyncio.run(scenario())
    assert (rendered.status, json.loads(rendered.body)) == (200, answer)
    assert [json.loads(r.body)["text"] for r in outbox.requests] == sent
    assert left_in_redis(redis_url) == (0, 0)
