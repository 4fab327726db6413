"""Idempotency on its own and in the channel: retries after a failure are handled."""

import asyncio
import json
from typing import Any, List

from generic_connector.channel import GenericChannel
from generic_connector.config import load_channel
from generic_connector.idempotency import MemoryStore
from generic_connector.request import IncomingRequest

SHOP = {
    "name": "shop",
    "request": {"sender": "customer", "text": "text", "message_id": "id"},
    "response": {"body": "messages[].text"},
}


def test_done_keys_replay_their_replies_and_expire() -> None:
    async def scenario() -> None:
        store = MemoryStore(window=0.2)
        assert await store.begin("k") is None
        store.finish("k", [{"text": "hi"}])
        assert await store.begin("k") == [{"text": "hi"}]
        await asyncio.sleep(0.25)
        assert await store.begin("k") is None  # the window has passed

    asyncio.run(scenario())


def test_a_failed_key_is_forgotten_and_a_waiting_duplicate_takes_over() -> None:
    async def scenario() -> List[Any]:
        store = MemoryStore()
        assert await store.begin("k") is None  # first delivery, in progress
        duplicate = asyncio.ensure_future(store.begin("k"))
        await asyncio.sleep(0.01)
        assert not duplicate.done()  # waits for the first one's outcome
        store.finish("k", None)  # the first one failed
        return [await duplicate]

    assert asyncio.run(scenario()) == [None]  # so the duplicate handles it


def test_max_keys_forgets_the_oldest() -> None:
    async def scenario() -> None:
        store = MemoryStore(max_keys=2)
        for key in "abc":
            await store.begin(key)
            store.finish(key, [])
        assert await store.begin("a") is None
        assert await store.begin("c") == []

    asyncio.run(scenario())


def test_a_key_handled_again_after_its_window_keeps_its_new_record() -> None:
    async def scenario() -> None:
        store = MemoryStore(window=0.1, max_keys=1000)
        await store.begin("k")
        store.finish("k", [{"text": "first"}])
        await asyncio.sleep(0.15)
        assert await store.begin("k") is None  # expired: handled again
        store.finish("k", [{"text": "second"}])
        await store.begin("other")
        store.finish("other", [])  # forgets what expired: k's first record, not its second
        assert await store.begin("k") == [{"text": "second"}]
        for number in range(5000):
            await store.begin(str(number))
            store.finish(str(number), [])
        assert len(store._done) == 1000

    asyncio.run(scenario())


def test_after_an_injected_failure_the_retry_is_processed() -> None:
    channel = GenericChannel(load_channel(SHOP))
    handled: List[str] = []
    failures = [RuntimeError("injected")]

    async def assistant(message: Any) -> None:
        if failures:
            raise failures.pop()
        handled.append(message.message_id)
        await message.output_channel.send_response(message.sender_id, {"text": "done"})

    body = json.dumps({"customer": "c", "text": "hi", "id": "m-9"}).encode()

    async def deliver() -> int:
        answer = await channel.process(IncomingRequest.from_parts(body), assistant)
        return answer.status

    async def scenario() -> List[int]:
        return [await deliver() for _ in range(3)]

    assert asyncio.run(scenario()) == [500, 200, 200]
    assert handled == ["m-9"]  # the retry was handled, the third delivery was not
