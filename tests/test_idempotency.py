"""Idempotency on its own and in the channel: retries after a failure are handled."""

import asyncio
import json
from typing import Any, Dict, List, Optional

from generic_connector.channel import GenericChannel
from generic_connector.config import load_channel
from generic_connector.idempotency import MemoryStore
from generic_connector.request import IncomingRequest

SHOP = {
    "name": "shop",
    "request": {"sender": "customer", "text": "text", "message_id": "id"},
    "response": {"body": "messages[].text"},
}


async def begin(store: MemoryStore, key: str) -> Optional[List[Dict[str, Any]]]:
    """What the channel does with a key: handle it (None) or the replies it got before."""
    earlier = store.begin(key)
    return None if earlier is None else await earlier


def test_new_keys_are_claimed_without_waiting() -> None:
    store = MemoryStore()
    assert store.begin("k") is None  # no event loop needed: nothing to await
    duplicate = store.begin("k")  # while "k" runs: something to await
    assert asyncio.iscoroutine(duplicate)
    duplicate.close()


def test_done_keys_replay_their_replies_and_expire() -> None:
    async def scenario() -> None:
        store = MemoryStore(window=0.2)
        assert await begin(store, "k") is None
        store.finish("k", [{"text": "hi"}])
        assert await begin(store, "k") == [{"text": "hi"}]
        await asyncio.sleep(0.25)
        assert await begin(store, "k") is None  # the window has passed

    asyncio.run(scenario())


def test_a_failed_key_is_forgotten_and_a_waiting_duplicate_takes_over() -> None:
    async def scenario() -> List[Any]:
        store = MemoryStore()
        assert await begin(store, "k") is None  # first delivery, in progress
        duplicate = asyncio.ensure_future(begin(store, "k"))
        await asyncio.sleep(0.01)
        assert not duplicate.done()  # waits for the first one's outcome
        store.finish("k", None)  # the first one failed
        return [await duplicate]

    assert asyncio.run(scenario()) == [None]  # so the duplicate handles it


def test_max_keys_forgets_the_oldest() -> None:
    async def scenario() -> None:
        store = MemoryStore(max_keys=2)
        for key in "abc":
            await begin(store, key)
            store.finish(key, [])
        assert await begin(store, "a") is None
        assert await begin(store, "c") == []

    asyncio.run(scenario())


def test_a_key_handled_again_after_its_window_keeps_its_new_record() -> None:
    async def scenario() -> None:
        store = MemoryStore(window=0.1, max_keys=1000)
        await begin(store, "k")
        store.finish("k", [{"text": "first"}])
        await asyncio.sleep(0.15)
        assert await begin(store, "k") is None  # expired: handled again
        store.finish("k", [{"text": "second"}])
        await begin(store, "other")
        store.finish("other", [])  # forgets what expired: k's first record, not its second
        assert await begin(store, "k") == [{"text": "second"}]
        for number in range(5000):
            await begin(store, str(number))
            store.finish(str(number), [])
        assert len(store) == 1000

    asyncio.run(scenario())


def test_a_key_handled_again_without_replies_does_not_replay_its_old_ones() -> None:
    async def scenario() -> None:
        store = MemoryStore(window=0.1)
        await begin(store, "k")
        store.finish("k", [{"text": "first"}])
        await asyncio.sleep(0.15)
        assert await begin(store, "k") is None
        store.finish("k", [])
        assert await begin(store, "k") == []

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
