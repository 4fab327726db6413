"""Delivery on its own: retries, time-outs, refused connections, order, against real sockets."""

import asyncio
import socket
import time
from typing import List

import pytest

from generic_connector.delivery import Delivery, retry_after
from generic_connector.outbound import Outbound, OutboundRequest, RequestTemplate
from tests.platform_api import PlatformAPI


def outbound(**options: float) -> Outbound:
    template = RequestTemplate("text", url="'http://unused'")
    return Outbound({"text": template}, **{"backoff": 0.01, "timeout": 1.0, **options})


def request(url: str, text: str = "hi") -> OutboundRequest:
    body = f'{{"text": "{text}"}}'.encode()
    return OutboundRequest("text", "POST", url, {"Content-Type": "application/json"}, body)


def run(delivery: Delivery, *coroutines) -> List[bool]:  # noqa: ANN002
    async def main() -> List[bool]:
        try:
            return list(await asyncio.gather(*coroutines))
        finally:
            await delivery.close()

    return asyncio.run(main())


@pytest.fixture
def api() -> PlatformAPI:
    server = PlatformAPI()
    yield server
    server.close()


def test_time_outs_are_retried_then_reported(api: PlatformAPI, caplog) -> None:  # noqa: ANN001
    api.plan(lambda r: True, [(200, {}, {})] * 3, delay=0.5)
    delivery = Delivery("t", outbound(timeout=0.2, retries=2))
    [ok] = run(delivery, delivery.send("c1", request(api.url + "/slow")))
    assert ok is False
    assert len(api.received(lambda r: True, 3, timeout=3)) == 3
    assert "could not deliver a text message for conversation c1 after 3 attempt(s)" in caplog.text
    assert "TimeoutError" in caplog.text


def test_refused_connection_is_retried_then_reported(caplog) -> None:  # noqa: ANN001
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    delivery = Delivery("t", outbound(retries=2))
    [ok] = run(delivery, delivery.send("c2", request(f"http://127.0.0.1:{port}/x")))
    assert ok is False
    assert "after 3 attempt(s); the platform answered ClientConnectorError" in caplog.text


def test_other_4xx_is_not_retried(api: PlatformAPI, caplog) -> None:  # noqa: ANN001
    api.plan(lambda r: True, [(400, {}, {"error": "bad chat"})])
    delivery = Delivery("t", outbound())
    [ok] = run(delivery, delivery.send("c3", request(api.url + "/x")))
    assert ok is False
    assert [r.status for r in api.requests] == [400]
    assert (
        'after 1 attempt(s); the platform answered HTTP 400: {"error": "bad chat"}' in caplog.text
    )


def test_scheduled_requests_keep_their_order_per_conversation(api: PlatformAPI) -> None:
    api.plan(lambda r: r.json["text"] == "a1", [(503, {}, {})] * 2)
    delivery = Delivery("t", outbound(backoff=0.1))

    async def scenario() -> None:
        tasks = [
            delivery.schedule("a", [request(api.url + "/a", "a1"), request(api.url + "/a", "a2")]),
            delivery.schedule("a", [request(api.url + "/a", "a3")]),
            delivery.schedule("b", [request(api.url + "/b", "b1")]),
        ]
        await asyncio.gather(*tasks)

    run(delivery, scenario())
    ok = [r for r in api.requests if r.status == 200]
    assert [r.json["text"] for r in ok if r.path == "/a"] == ["a1", "a2", "a3"]
    b1 = next(r for r in ok if r.path == "/b")
    a1 = next(r for r in ok if r.path == "/a")
    assert b1.at < a1.at  # conversation b was not held up by a's retries


@pytest.mark.parametrize(
    "header, seconds",
    [("3", 3.0), ("0", 0.0), (None, None), ("soon", None), ("100000", 120.0)],
)
def test_retry_after_values(header: str, seconds: float) -> None:
    assert retry_after(header) == seconds


def test_retry_after_http_date() -> None:
    from email.utils import formatdate

    assert 8 <= retry_after(formatdate(time.time() + 10, usegmt=True)) <= 10
