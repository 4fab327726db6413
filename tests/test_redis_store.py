"""The Redis idempotency store against a real redis-server: several replicas, outages."""

import asyncio
import time
from typing import Any, Iterator, List, Tuple

import pytest

from generic_connector.stores.redis.client import _POOLS, StoreUnavailable, new_pool
from generic_connector.stores.redis.dedup import RedisStore
from tests.redis_server import RedisServer, fresh, serve


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from serve()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return fresh(redis_server)


def replicas(url: str, count: int = 2, **options: Any) -> List[RedisStore]:
    """Stores with connection pools of their own: what separate processes would have."""
    return [
        RedisStore(window=options.pop("window", 60), url=url, pool=new_pool(url), **options)
        for _ in range(count)
    ]


async def close(*stores: RedisStore) -> None:
    for store in stores:
        await store.close()
        if store.redis._given is not None:
            await store.redis._given.disconnect()


def test_a_handled_key_gives_its_replies_to_a_duplicate_on_another_replica(
    redis_url: str,
) -> None:
    async def scenario() -> List[Any]:
        first, second = replicas(redis_url)
        try:
            assert await first.claim("k") is None
            await first.finish("k", [{"text": "hi"}, {"image": "https://x/y.png"}])
            return [await second.claim("k"), await first.claim("k")]
        finally:
            await close(first, second)

    replies = [{"text": "hi"}, {"image": "https://x/y.png"}]
    assert asyncio.run(scenario()) == [replies, replies]


def test_a_duplicate_waits_for_the_first_delivery_and_gets_the_same_answer(
    redis_url: str,
) -> None:
    async def scenario() -> Tuple[Any, bool, float]:
        first, second = replicas(redis_url)
        try:
            assert await first.claim("k") is None
            started = time.monotonic()
            duplicate = asyncio.ensure_future(second.claim("k"))
            await asyncio.sleep(0.3)
            waiting = not duplicate.done()
            await first.finish("k", [{"text": "answer"}])
            return await duplicate, waiting, time.monotonic() - started
        finally:
            await close(first, second)

    replies, waited, elapsed = asyncio.run(scenario())
    assert waited
    assert replies == [{"text": "answer"}]
    assert 0.3 <= elapsed < 1.0  # it noticed within the poll's bounded backoff


def test_a_released_key_is_handled_by_the_waiting_duplicate(redis_url: str) -> None:
    async def scenario() -> List[Any]:
        first, second = replicas(redis_url)
        try:
            assert await first.claim("k") is None
            duplicate = asyncio.ensure_future(second.claim("k"))
            await asyncio.sleep(0.1)
            await first.release("k")  # the first handling failed
            outcome = await asyncio.wait_for(duplicate, 2)
            await second.finish("k", [{"text": "second"}])
            return [outcome, await first.claim("k")]
        finally:
            await close(first, second)

    assert asyncio.run(scenario()) == [None, [{"text": "second"}]]


def test_release_deletes_only_a_running_claim(redis_url: str) -> None:
    async def scenario() -> Any:
        [store] = replicas(redis_url, 1)
        try:
            assert await store.claim("k") is None
            await store.finish("k", [{"text": "kept"}])
            await store.release("k")  # too late: the key is handled
            return await store.claim("k")
        finally:
            await close(store)

    assert asyncio.run(scenario()) == [{"text": "kept"}]


def test_the_claim_of_a_replica_that_died_expires_and_a_duplicate_handles_it(
    redis_url: str,
) -> None:
    async def scenario() -> Tuple[Any, float]:
        first, second = replicas(redis_url, running_timeout=0.4)
        try:
            assert await first.claim("k") is None
            await close(first)  # gone without finishing or releasing: nobody renews the claim
            started = time.monotonic()
            outcome = await asyncio.wait_for(second.claim("k"), 3)
            return outcome, time.monotonic() - started
        finally:
            await close(second)

    outcome, elapsed = asyncio.run(scenario())
    assert outcome is None  # the duplicate handles the message itself
    assert 0.2 < elapsed < 1.5


def test_a_live_replica_keeps_its_claim_longer_than_the_running_timeout(redis_url: str) -> None:
    async def scenario() -> Tuple[Any, float]:
        first, second = replicas(redis_url, running_timeout=0.3)
        try:
            assert await first.claim("k") is None
            started = time.monotonic()
            duplicate = asyncio.ensure_future(second.claim("k"))
            await asyncio.sleep(1.0)  # a slow turn: three times the running timeout
            await first.finish("k", [{"text": "slow"}])
            return await asyncio.wait_for(duplicate, 2), time.monotonic() - started
        finally:
            await close(first, second)

    outcome, elapsed = asyncio.run(scenario())
    assert outcome == [{"text": "slow"}]
    assert elapsed >= 1.0


def test_handled_keys_expire_after_the_window(redis_url: str) -> None:
    async def scenario() -> List[Any]:
        [store] = replicas(redis_url, 1, window=0.3)
        try:
            assert await store.claim("k") is None
            await store.finish("k", [])
            early = await store.claim("k")
            await asyncio.sleep(0.5)
            return [early, await store.claim("k")]
        finally:
            await close(store)

    assert asyncio.run(scenario()) == [[], None]


def test_two_replicas_claiming_the_same_200_keys_at_once_win_each_key_exactly_once(
    redis_url: str,
) -> None:
    async def attempt(store: RedisStore, name: str, key: str) -> Tuple[str, str, Any]:
        earlier = await store.claim(key)
        if earlier is None:
            await store.finish(key, [{"by": name}])
            return key, name, None
        return key, name, earlier

    async def scenario() -> List[Tuple[str, str, Any]]:
        first, second = replicas(redis_url)
        try:
            keys = [f"channel\x1fuser-{i}\x1fmid-{i}\x1fhello" for i in range(200)]
            calls = [attempt(first, "a", k) for k in keys] + [attempt(second, "b", k) for k in keys]
            return list(await asyncio.gather(*calls))
        finally:
            await close(first, second)

    results = asyncio.run(scenario())
    winners = {key: name for key, name, earlier in results if earlier is None}
    assert len([r for r in results if r[2] is None]) == 200  # exactly 200 claims won
    assert len(winners) == 200  # one per key
    for key, _, earlier in results:
        if earlier is not None:  # the loser got the winner's replies
            assert earlier == [{"by": winners[key]}]


def test_stores_of_a_process_share_one_pool_per_url(redis_url: str) -> None:
    async def scenario() -> Tuple[bool, int, int]:
        first = RedisStore(window=60, url=redis_url)
        second = RedisStore(window=60, url=redis_url)
        await first.claim("a")
        await second.claim("b")
        shared = first.redis.get().connection_pool is second.redis.get().connection_pool
        pools = len([key for key in _POOLS if key[0] == redis_url])
        await first.close()
        await second.close()
        return shared, pools, len([key for key in _POOLS if key[0] == redis_url])

    assert asyncio.run(scenario()) == (True, 1, 0)


def test_redis_down_raises_store_unavailable_and_the_store_recovers(
    redis_server: RedisServer, redis_url: str
) -> None:
    port = redis_server.port
    with_password = f"redis://:hunter2secret@127.0.0.1:{port}/0"

    async def scenario() -> List[str]:
        store = RedisStore(window=60, url=redis_url)
        locked = RedisStore(window=60, url=with_password)
        problems = []
        try:
            assert await store.claim("before") is None
            redis_server.stop()
            started = time.monotonic()
            for call in (store.claim("k"), store.finish("before", []), locked.check()):
                with pytest.raises(StoreUnavailable) as raised:
                    await call
                problems.append(str(raised.value))
            assert time.monotonic() - started < 3  # refused at once, not after long time-outs
            await store.release("before")  # logged, not raised: a failure is being reported
            redis_server.start()
            # The same store, not recreated: its pool reconnects.
            assert await store.claim("after") is None
            await store.finish("after", [{"text": "back"}])
            assert await store.claim("after") == [{"text": "back"}]
            return problems
        finally:
            await store.close()
            await locked.close()

    problems = asyncio.run(scenario())
    assert problems[0].startswith(f"Redis at 127.0.0.1:{port}/0 cannot be reached")
    assert "claiming a message id" in problems[0]
    assert all(f"127.0.0.1:{port}/0" in problem for problem in problems)
    assert not any("hunter2secret" in problem for problem in problems)
