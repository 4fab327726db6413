"""The one retry policy: which answers are retried, Retry-After, backoff; and the in-memory
delivery and the fetch treating a platform's answers as the Redis outbox does."""

import asyncio
from typing import List

import pytest

from generic_connector.delivery import Delivery
from generic_connector.fetch import FetchTemplate, HTTPFetcher
from generic_connector.retry import Backoff, retry_after, retryable_status
from tests.platform_api import PlatformAPI
from tests.test_delivery import outbound, request


@pytest.mark.parametrize(
    "status, retried",
    [(408, True), (425, True), (429, True), (500, True), (502, True), (503, True), (504, True),
     (400, False), (401, False), (403, False), (404, False), (409, False), (501, False)],
)  # fmt: skip
def test_the_statuses_worth_another_attempt(status: int, retried: bool) -> None:
    assert retryable_status(status) is retried


@pytest.mark.parametrize(
    "value, seconds",
    [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("100000", 120.0), ("nan", None), ("soon", None)],
)
def test_retry_after_is_read_and_capped_at_two_minutes(value: str, seconds: float) -> None:
    assert retry_after(value) == seconds


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    factors: List[float] = []

    def jitter(low: float, high: float) -> float:
        factors.append(low)
        return 1.0  # the middle of [0.5, 1.5)

    backoff = Backoff(0.5, 3.0, jitter)
    assert [backoff.delay(failures) for failures in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert factors == [0.5] * 5
    assert backoff.delay(2, asked=7.0) == 7.0  # what Retry-After asked for wins


@pytest.fixture
def api() -> PlatformAPI:
    server = PlatformAPI()
    yield server
    server.close()


@pytest.mark.parametrize("status", [408, 425])
def test_the_memory_delivery_retries_what_the_redis_outbox_retries(
    api: PlatformAPI, status: int
) -> None:
    # A platform's 408 or 425 was retried with store: redis and dropped in memory.
    api.plan(lambda r: True, [(status, {}, {})])
    delivery = Delivery("t", outbound(retries=2))

    async def main() -> bool:
        try:
            return await delivery.send("c1", request(api.url + "/x"))
        finally:
            await delivery.close()

    assert asyncio.run(main()) is True
    assert [r.status for r in api.requests] == [status, 200]


def test_a_fetch_retries_a_408(api: PlatformAPI) -> None:
    api.plan(lambda r: True, [(408, {}, {})])
    template = FetchTemplate("message", "join('', [`" + api.url + "`, '/m'])", retries=1)
    fetcher = HTTPFetcher()

    async def main() -> object:
        try:
            return await fetcher.fetch(template.render({}, None), template)
        finally:
            await fetcher.close()

    assert asyncio.run(main()) == {"ok": True}
    assert [r.status for r in api.requests] == [408, 200]
