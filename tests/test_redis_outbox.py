"""The Redis outbox against a real redis-server and a real local platform API: order across
replicas, a replica that dies mid-send, retries, the dead-letter stream and its commands."""

import argparse
import asyncio
import json
import logging
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import redis

from generic_connector.cli import deliveries
from generic_connector.outbound import Outbound, OutboundRequest, RequestTemplate
from generic_connector.stores.redis.client import StoreUnavailable, new_pool
from generic_connector.stores.redis.outbox import RedisOutbox
from tests.platform_api import PlatformAPI, Recorded
from tests.redis_server import RedisServer, fresh, serve

TOKEN = "123456:outbox-test-token"
SECRETS = {"BOT_TOKEN": TOKEN}
OK = (200, {}, {"ok": True})
FAILING = (500, {}, {"ok": False, "description": f"internal error for bot{TOKEN}"})


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from serve()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return fresh(redis_server)


@pytest.fixture
def api() -> Iterator[PlatformAPI]:
    server = PlatformAPI()
    yield server
    server.close()


def policy(**options: Any) -> Outbound:
    template = RequestTemplate("text", url="'http://unused'")
    settings = {"backoff": 0.05, "max_backoff": 0.2, "timeout": 5.0, "retries": 3, **options}
    return Outbound({"text": template}, **settings)


def message(api: PlatformAPI, conversation: str, n: int) -> OutboundRequest:
    """A Telegram-like request: the token in the path and in a header."""
    return OutboundRequest(
        "text",
        "POST",
        f"{api.url}/bot{TOKEN}/sendMessage",
        {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        json.dumps({"chat_id": conversation, "n": n}).encode(),
    )


class CountingOutbox(RedisOutbox):
    """A RedisOutbox that counts the requests it sent itself."""

    sent = 0

    async def process(self, entry: Any) -> Any:
        self.sent += 1
        return await super().process(entry)


class Replicas:
    """Outboxes with connection pools of their own, as separate processes would have."""

    def __init__(self, url: str, outbound: Outbound, **options: Any) -> None:
        self.url = url
        self.outbound = outbound
        self.options = {
            "visibility_timeout": 1.0,
            "poll_interval": 0.05,
            "grace": 1.0,
            "secrets": SECRETS,
            **options,
        }
        self.started: List[RedisOutbox] = []

    async def start(self, **options: Any) -> RedisOutbox:
        outbox = CountingOutbox(
            "chat", self.outbound, self.url, pool=new_pool(self.url), **{**self.options, **options}
        )
        await outbox.start()
        self.started.append(outbox)
        return outbox

    async def close(self) -> None:
        for outbox in self.started:
            await outbox.close()
            if outbox.redis._given is not None:
                await outbox.redis._given.disconnect()


def by_conversation(requests: List[Recorded]) -> Dict[str, List[int]]:
    sent: Dict[str, List[int]] = {}
    for request in requests:
        body = request.json
        sent.setdefault(body["chat_id"], []).append(body["n"])
    return sent


def delivered(api: PlatformAPI) -> List[Recorded]:
    return [r for r in api.requests if r.status == 200]


def received(api: PlatformAPI) -> set:
    """The distinct (conversation, n) the platform got."""
    return {(r.json["chat_id"], r.json["n"]) for r in api.requests}


def without_repeats(numbers: List[int]) -> List[int]:
    """The sequence with immediate repetitions (a request sent again) collapsed."""
    return [n for i, n in enumerate(numbers) if i == 0 or numbers[i - 1] != n]


def client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    deliveries.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.run(args)


def test_two_replicas_deliver_every_conversation_in_order(redis_url: str, api: PlatformAPI) -> None:
    conversations = [f"c{i}" for i in range(4)]
    per_conversation = 15
    api.plan(lambda r: True, [OK] * 1000, delay=0.01)

    async def scenario() -> Tuple[int, int]:
        replicas = Replicas(redis_url, policy())
        try:
            first, second = await replicas.start(), await replicas.start()
            waiting = []
            for n in range(per_conversation):
                for index, conversation in enumerate(conversations):
                    outbox = first if (n + index) % 2 else second
                    waiting.append(await outbox.put(conversation, [message(api, conversation, n)]))
            await asyncio.wait_for(asyncio.gather(*waiting), 20)  # every put's future completes
            return first.sent, second.sent
        finally:
            await replicas.close()

    shares = asyncio.run(scenario())
    sent = by_conversation(delivered(api))
    total = sum(len(numbers) for numbers in sent.values())
    print(f"\n2 replicas, {len(conversations)} conversations: {total} deliveries, sent {shares}")
    assert all(shares)  # both replicas delivered
    assert sent == {c: list(range(per_conversation)) for c in conversations}  # in order, once


def test_a_replica_killed_mid_send_is_taken_over_after_the_visibility_timeout(
    redis_url: str, api: PlatformAPI
) -> None:
    conversations = ["k1", "k2"]
    count = 5
    api.plan(lambda r: True, [OK] * 1000, delay=0.3)  # a slow platform

    async def scenario() -> float:
        replicas = Replicas(redis_url, policy())
        try:
            doomed = await replicas.start()
            for conversation in conversations:
                requests = [message(api, conversation, n) for n in range(count)]
                await doomed.put(conversation, requests)
            while len(api.requests) < 3:  # it is sending
                await asyncio.sleep(0.02)
            survivor = await replicas.start()
            assert doomed.worker is not None
            doomed.kill()  # no hand-back, no clean-up
            await asyncio.wait([doomed.worker])
            await asyncio.sleep(0)  # its sends are cancelled too
            killed = time.monotonic()
            while len(received(api)) < len(conversations) * count:
                await asyncio.sleep(0.02)
                assert time.monotonic() - killed < 20
            assert survivor.worker is not None and not survivor.worker.done()
            return killed
        finally:
            await replicas.close()

    killed = asyncio.run(scenario())
    sent = by_conversation(api.requests)
    duplicates = sum(len(n) - len(set(n)) for n in sent.values())
    # The first request after the kill (a request the killed replica had just sent may be
    # recorded a moment later).
    takeover = min(r.at for r in api.requests if r.at > killed + 0.1)
    print(
        f"\nkilled mid-send: {len(api.requests)} requests received for "
        f"{len(conversations) * count}, {duplicates} duplicate(s), taken over "
        f"{takeover - killed:.2f} s after the kill"
    )
    for conversation in conversations:
        assert without_repeats(sent[conversation]) == list(range(count))  # order holds
    assert duplicates <= len(conversations)  # at most the request each was sending
    assert takeover - killed >= 0.5  # the lease had to expire first (renewed every 1/3 s)


def test_a_failing_platform_is_retried_until_it_recovers(redis_url: str, api: PlatformAPI) -> None:
    api.plan(lambda r: True, [FAILING, FAILING, (503, {}, {})], delay=0.0)

    async def scenario() -> None:
        replicas = Replicas(redis_url, policy(retries=3))
        try:
            outbox = await replicas.start()
            done = await outbox.put("r1", [message(api, "r1", n) for n in range(4)])
            await asyncio.wait_for(done, 10)
        finally:
            await replicas.close()

    asyncio.run(scenario())
    assert [r.status for r in api.requests] == [500, 500, 503, 200, 200, 200, 200]
    assert by_conversation(delivered(api)) == {"r1": [0, 1, 2, 3]}
    assert client(redis_url).xlen("generic_connector:dead") == 0


def test_retry_after_is_respected(redis_url: str, api: PlatformAPI) -> None:
    api.plan(lambda r: True, [(429, {"Retry-After": "1"}, {"ok": False})])

    async def scenario() -> None:
        replicas = Replicas(redis_url, policy(backoff=0.01))
        try:
            outbox = await replicas.start()
            await asyncio.wait_for(await outbox.put("ra", [message(api, "ra", 0)]), 10)
        finally:
            await replicas.close()

    asyncio.run(scenario())
    first, second = api.requests
    assert (first.status, second.status) == (429, 200)
    assert 1.0 <= second.at - first.at < 2.0  # not the 10 ms backoff


def test_exhausted_requests_go_to_the_dead_letter_stream_and_retry_sends_them(
    redis_url: str, api: PlatformAPI, capsys: pytest.CaptureFixture, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG, logger="generic_connector")
    conversations = {"d1": 3, "d2": 2}
    requests = sum(conversations.values())
    api.plan(lambda r: True, [FAILING] * (2 * requests))  # down for the whole budget

    async def fail() -> None:
        replicas = Replicas(redis_url, policy(retries=1))
        try:
            outbox = await replicas.start()
            waiting = [
                await outbox.put(c, [message(api, c, n) for n in range(count)])
                for c, count in conversations.items()
            ]
            await asyncio.wait_for(asyncio.gather(*waiting), 10)
        finally:
            await replicas.close()

    asyncio.run(fail())
    assert len(api.requests) == 2 * requests  # two attempts each
    assert client(redis_url).xlen("generic_connector:dead") == requests

    capsys.readouterr()
    assert cli("deliveries", "list", "--url", redis_url) == 0
    listing = capsys.readouterr().out
    assert f"{requests} undelivered requests" in listing
    assert "conversation d1" in listing and "HTTP 500" in listing
    assert cli("deliveries", "list", "--url", redis_url, "--format", "json") == 0
    entries = json.loads(capsys.readouterr().out)
    found = [(e["conversation"], json.loads(e["request"]["body"])["n"]) for e in entries]
    assert sorted(found) == [("d1", 0), ("d1", 1), ("d1", 2), ("d2", 0), ("d2", 1)]
    assert [n for c, n in found if c == "d1"] == [0, 1, 2]  # each conversation in order
    first = entries[0]
    assert first["attempts"] == 2 and first["status"] == 500
    assert first["reason"] == "retries exhausted"
    assert cli("deliveries", "show", first["id"], "--url", redis_url) == 0
    shown = capsys.readouterr().out
    assert "/bot${BOT_TOKEN}/sendMessage" in shown
    assert "Authorization: Bearer ${BOT_TOKEN}" in shown
    assert "internal error for bot${BOT_TOKEN}" in shown  # the platform's answer, masked
    assert cli("deliveries", "show", first["id"], "--url", redis_url, "--format", "json") == 0
    shown += capsys.readouterr().out
    # Nothing printed or logged shows the token; Redis keeps the real request, for retry.
    assert TOKEN not in listing + shown + json.dumps(entries) + caplog.text
    [(_, stored)] = client(redis_url).xrange("generic_connector:dead", first["id"], first["id"])
    assert TOKEN in json.loads(stored[b"payload"])["url"]

    assert cli("deliveries", "show", "1-1", "--url", redis_url) == 1
    assert cli("deliveries", "retry", "--url", redis_url) == 2  # neither IDs nor --all
    capsys.readouterr()
    assert cli("deliveries", "retry", "--all", "--url", redis_url) == 0
    assert f"{requests} requests back in the outbox" in capsys.readouterr().out
    assert client(redis_url).xlen("generic_connector:dead") == 0

    async def recover() -> None:
        replicas = Replicas(redis_url, policy(retries=1))
        try:
            await replicas.start()  # a restarted replica's worker finds them
            while len(delivered(api)) < requests:
                await asyncio.sleep(0.02)
        finally:
            await replicas.close()

    asyncio.run(asyncio.wait_for(recover(), 10))
    assert by_conversation(delivered(api)) == {"d1": [0, 1, 2], "d2": [0, 1]}


def test_a_refused_request_is_dead_at_once_and_drop_deletes_it(
    redis_url: str, api: PlatformAPI, capsys: pytest.CaptureFixture
) -> None:
    api.plan(lambda r: r.json["n"] == 0, [(400, {}, {"description": "chat not found"})])

    async def scenario() -> None:
        replicas = Replicas(redis_url, policy())
        try:
            outbox = await replicas.start()
            done = await outbox.put("p1", [message(api, "p1", 0), message(api, "p1", 1)])
            await asyncio.wait_for(done, 10)
        finally:
            await replicas.close()

    asyncio.run(scenario())
    assert [r.status for r in api.requests] == [400, 200]  # not retried; the next one goes on
    [(stream_id, fields)] = client(redis_url).xrange("generic_connector:dead")
    assert fields[b"reason"] == b"not retried" and fields[b"attempts"] == b"1"
    capsys.readouterr()
    assert cli("deliveries", "drop", stream_id.decode(), "--url", redis_url) == 0
    assert "1 request dropped" in capsys.readouterr().out
    assert client(redis_url).xlen("generic_connector:dead") == 0
    assert cli("deliveries", "drop", stream_id.decode(), "--url", redis_url) == 1


def test_attempts_are_counted_across_restarts(redis_url: str, api: PlatformAPI) -> None:
    api.plan(lambda r: True, [FAILING] * 10)

    async def scenario() -> None:
        replicas = Replicas(redis_url, policy(retries=2, backoff=0.6, max_backoff=0.6))
        try:
            before = await replicas.start()
            await before.put("a1", [message(api, "a1", 0)])
            while not api.requests:
                await asyncio.sleep(0.02)
            await before.close()  # restarted while the retry waits
            await asyncio.sleep(0.1)
            after = await replicas.start()
            dead = client(redis_url)
            while dead.xlen("generic_connector:dead") == 0:
                await asyncio.sleep(0.05)
            assert after.worker is not None
        finally:
            await replicas.close()

    asyncio.run(asyncio.wait_for(scenario(), 15))
    assert len(api.requests) == 3  # one before the restart, two after: the budget of 3
    [(_, fields)] = client(redis_url).xrange("generic_connector:dead")
    assert fields[b"attempts"] == b"3"


def test_close_finishes_the_send_under_way_and_hands_back_the_rest(
    redis_url: str, api: PlatformAPI, caplog: Any
) -> None:
    api.plan(lambda r: True, [OK] * 100, delay=0.4)

    async def scenario() -> Tuple[float, Optional[float]]:
        replicas = Replicas(redis_url, policy())
        try:
            stopping = await replicas.start(grace=2.0)
            await stopping.put("s1", [message(api, "s1", n) for n in range(4)])
            while not api.requests:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            await stopping.close()  # SIGTERM: the send under way finishes, the rest is handed back
            closed = time.monotonic() - started
            handed = time.monotonic()
            await replicas.start()  # another replica takes it at once, no visibility timeout
            while len(delivered(api)) < 4:
                await asyncio.sleep(0.02)
            return closed, min((r.at for r in api.requests if r.at > handed), default=None)
        finally:
            await replicas.close()

    caplog.set_level(logging.INFO, logger="generic_connector")
    closed, _ = asyncio.run(asyncio.wait_for(scenario(), 15))
    assert closed < 1.5
    assert by_conversation(api.requests) == {"s1": [0, 1, 2, 3]}  # nothing sent twice
    assert "shutting down with 3 request(s) of conversation s1 not delivered" in caplog.text


def test_redis_down_makes_put_raise_and_the_outbox_recovers(
    redis_server: RedisServer, redis_url: str, api: PlatformAPI, caplog: Any
) -> None:
    async def scenario() -> str:
        replicas = Replicas(redis_url, policy())
        try:
            outbox = await replicas.start()
            redis_server.stop()
            with pytest.raises(StoreUnavailable) as raised:
                await outbox.put("u1", [message(api, "u1", 0)])
            await asyncio.sleep(0.3)  # the worker notices
            redis_server.start()
            await asyncio.wait_for(await outbox.put("u1", [message(api, "u1", 1)]), 10)
            return str(raised.value)
        finally:
            await replicas.close()

    caplog.set_level(logging.INFO, logger="generic_connector")
    problem = asyncio.run(scenario())
    assert problem.startswith(f"Redis at 127.0.0.1:{redis_server.port}/0 cannot be reached")
    assert by_conversation(delivered(api)) == {"u1": [1]}  # the refused one was never stored
    assert caplog.text.count("the outbox waits until it answers again") == 1
    assert "answers again; the outbox goes on" in caplog.text


def test_start_says_when_redis_cannot_be_reached(
    redis_server: RedisServer, capsys: pytest.CaptureFixture
) -> None:
    url = f"redis://:pw-not-shown@127.0.0.1:{redis_server.port}/0"
    redis_server.stop()
    try:
        outbox = RedisOutbox("chat", policy(), url)
        with pytest.raises(StoreUnavailable) as raised:
            asyncio.run(outbox.start())
        assert str(raised.value).startswith(f"Redis at 127.0.0.1:{redis_server.port}/0")
        assert "pw-not-shown" not in str(raised.value)
        assert cli("deliveries", "list", "--url", url) == 3
        assert "cannot be reached" in capsys.readouterr().err
    finally:
        redis_server.start()


def test_secrets_are_masked_in_their_encoded_forms_and_credential_headers_hidden() -> None:
    from generic_connector.stores.redis.outbox import Masker

    mask = Masker({"TOKEN": "a b/c", "EMPTY": ""})
    assert mask("x a%20b%2Fc y a+b%2Fc z a b/c") == "x ${TOKEN} y ${TOKEN} z ${TOKEN}"
    assert mask.headers({"X-Api-Key": "k-123", "Accept": "a b/c"}) == {
        "X-Api-Key": "[hidden]",
        "Accept": "${TOKEN}",
    }
