"""Reliability under a real ``rasa run``: load, duplicate deliveries, a crash.

The figures these tests print are the ones in docs/security.md's reliability figures
(``pytest tests/test_reliability.py -s`` shows them).
"""

import asyncio
import json
import statistics
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Tuple

import aiohttp
import pytest

from tests.rasa_process import RasaServer, user_events

pytestmark = pytest.mark.e2e

SENDERS = 50
PER_SENDER = 40  # 50 x 40 = 2,000 messages


def shop_message(customer: str, message_id: str, text: str) -> Dict[str, Any]:
    return {
        "data": {
            "customer": {"id": customer, "name": "Load"},
            "message": {"id": message_id, "body": text},
        }
    }


async def _load(url: str, run: str) -> Tuple[List[float], List[int]]:
    latencies: List[float] = []
    statuses: List[int] = []
    connector = aiohttp.TCPConnector(limit=SENDERS)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def sender(index: int) -> None:
            for number in range(PER_SENDER):
                body = shop_message(f"{run}-{index}", f"{run}-{index}-{number}", f"hello {number}")
                started = time.perf_counter()
                async with session.post(url, json=body) as answer:
                    await answer.read()
                    statuses.append(answer.status)
                latencies.append(time.perf_counter() - started)

        await asyncio.gather(*(sender(i) for i in range(SENDERS)))
    return latencies, statuses


def test_2000_messages_over_50_connections_all_answered_all_in_trackers_none_twice(
    rasa: RasaServer,
) -> None:
    run = f"load-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    latencies, statuses = asyncio.run(_load(f"{rasa.url}/webhooks/shop/webhook", run))
    elapsed = time.perf_counter() - started
    assert statuses == [200] * SENDERS * PER_SENDER
    for index in range(SENDERS):
        events = user_events(rasa.tracker(f"{run}-{index}"))
        ids = [event["message_id"] for event in events]
        assert sorted(ids) == sorted(f"{run}-{index}-{n}" for n in range(PER_SENDER))
    latencies.sort()
    print(
        f"\nload: {len(latencies)} messages, {SENDERS} connections, {elapsed:.1f} s, "
        f"{len(latencies) / elapsed:.0f} messages/s, "
        f"p50 {statistics.median(latencies) * 1000:.0f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms"
    )


def test_same_message_id_three_times_in_a_row_is_handled_once(rasa: RasaServer) -> None:
    customer = f"dup-{uuid.uuid4().hex[:6]}"
    answers = [
        rasa.post("/webhooks/shop/webhook", shop_message(customer, "m-1", "thanks"))
        for _ in range(3)
    ]
    assert {a[0] for a in answers} == {200}
    # Every delivery gets the same answer: the replies of the one time it was handled.
    assert [json.loads(a[2])["replies"] for a in answers] == [["You are welcome."]] * 3
    assert [e["message_id"] for e in user_events(rasa.tracker(customer))] == ["m-1"]
    assert "message m-1 from sender " + customer + " was already handled" in rasa.log_text()


def test_same_message_id_three_times_at_once_is_handled_once(rasa: RasaServer) -> None:
    customer = f"dup-{uuid.uuid4().hex[:6]}"
    body = shop_message(customer, "m-2", "are you a bot?")
    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: rasa.post("/webhooks/shop/webhook", body), range(3)))
    assert {a[0] for a in answers} == {200}
    assert len({a[2] for a in answers}) == 1
    assert [e["message_id"] for e in user_events(rasa.tracker(customer))] == ["m-2"]


def test_acknowledged_messages_survive_sigkill_and_restart(durable_rasa: RasaServer) -> None:
    run = f"crash-{uuid.uuid4().hex[:6]}"
    sent: Dict[str, List[str]] = {}
    for number in range(30):
        customer = f"{run}-{number % 3}"
        status, _, _ = durable_rasa.post(
            "/webhooks/shop/webhook", shop_message(customer, f"{run}-{number}", "hello")
        )
        assert status == 200
        sent.setdefault(customer, []).append(f"{run}-{number}")
    durable_rasa.kill_and_restart()
    for customer, ids in sent.items():
        events = user_events(durable_rasa.tracker(customer))
        assert [e["message_id"] for e in events] == ids
