"""Idempotency on its own and in the pipeline: retries after a failure are handled."""

import asyncio
import json
from typing import Any, List

from generic_connector.config import load_channel
from generic_connector.idempotency import MemoryStore, Replies
from generic_connector.mapping import Extracted
from generic_connector.pipeline import Assistant, Pipeline, make_store
from generic_connector.request import IncomingRequest

SHOP = {
    "name": "shop",
    "request": {"sender": "customer", "text": "text", "message_id": "id"},
    "response": {"body": "messages[].text"},
}


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_done_keys_replay_their_replies_and_expire() -> None:
    async def scenario() -> None:
        clock = Clock()
        store = MemoryStore(window=60, clock=clock)
        assert await store.claim("k") is None
        await store.finish("k", [{"text": "hi"}])
        assert await store.claim("k") == [{"text": "hi"}]
        clock.now += 59
        assert await store.claim("k") == [{"text": "hi"}]
        clock.now += 2
        assert await store.claim("k") is None  # the window has passed: handle it again

    asyncio.run(scenario())


def test_a_released_key_is_forgotten_and_a_waiting_duplicate_takes_over() -> None:
    async def scenario() -> List[Any]:
        store = MemoryStore()
        assert await store.claim("k") is None  # first delivery, in progress
        duplicate = asyncio.ensure_future(store.claim("k"))
        await asyncio.sleep(0)
        assert not duplicate.done()  # waits for the first one's outcome
        await store.release("k")  # the first one failed
        return [await duplicate]

    assert asyncio.run(scenario()) == [None]  # so the duplicate handles it


def test_a_waiting_duplicate_gets_the_first_deliverys_replies() -> None:
    async def scenario() -> List[Any]:
        store = MemoryStore()
        await store.claim("k")
        duplicate = asyncio.ensure_future(store.claim("k"))
        await asyncio.sleep(0)
        await store.finish("k", [{"text": "once"}])
        return [await duplicate]

    assert asyncio.run(scenario()) == [[{"text": "once"}]]


def test_max_keys_forgets_the_oldest() -> None:
    async def scenario() -> None:
        store = MemoryStore(max_keys=2)
        for key in "abc":
            await store.claim(key)
            await store.finish(key, [])
        assert len(store) == 2
        assert await store.claim("a") is None  # forgotten
        assert await store.claim("c") == []

    asyncio.run(scenario())


def test_a_key_handled_again_after_its_window_keeps_its_new_record() -> None:
    async def scenario() -> None:
        clock = Clock()
        store = MemoryStore(window=10, max_keys=1000, clock=clock)
        await store.claim("k")
        await store.finish("k", [{"text": "first"}])
        clock.now += 11
        assert await store.claim("k") is None  # expired: handled again
        await store.finish("k", [{"text": "second"}])
        await store.claim("other")
        await store.finish("other", [])
        assert await store.claim("k") == [{"text": "second"}]
        for number in range(5000):
            await store.claim(str(number))
            await store.finish(str(number), [])
        assert len(store) == 1000

    asyncio.run(scenario())


def test_a_key_handled_again_without_replies_does_not_replay_its_old_ones() -> None:
    async def scenario() -> None:
        clock = Clock()
        store = MemoryStore(window=10, clock=clock)
        await store.claim("k")
        await store.finish("k", [{"text": "first"}])
        clock.now += 11
        assert await store.claim("k") is None
        await store.finish("k", [])
        assert await store.claim("k") == []

    asyncio.run(scenario())


class FailingOnce(Assistant):
    def __init__(self) -> None:
        self.handled: List[str] = []
        self.failures = [RuntimeError("injected")]

    async def handle(self, message: Extracted) -> Replies:
        if self.failures:
            raise self.failures.pop()
        self.handled.append(message.message_id)
        return [{"recipient_id": message.sender_id, "text": "done"}]


def test_after_an_injected_failure_the_retry_is_processed() -> None:
    config = load_channel(SHOP)
    pipeline = Pipeline(config, make_store(config))
    assistant = FailingOnce()
    body = json.dumps({"customer": "c", "text": "hi", "id": "m-9"}).encode()

    async def scenario() -> List[Any]:
        answers = [await pipeline.run(IncomingRequest.from_parts(body), assistant) for _ in "123"]
        return [(answer.status, json.loads(answer.body)) for _, answer in answers]

    assert asyncio.run(scenario()) == [
        (500, {"error": "the assistant could not handle the message; retry later"}),
        (200, ["done"]),
        (200, ["done"]),  # the duplicate gets the same answer
    ]
    assert assistant.handled == ["m-9"]  # the retry was handled, the third delivery was not
