"""Delivery on its own: retries, time-outs, refused connections, order, redirects, what the log
may show, against real sockets."""

import asyncio
import logging
import socket
import time
from typing import Dict, List, Optional

import pytest

from generic_connector.delivery import Delivery
from generic_connector.outbound import Outbound, OutboundRequest, RequestTemplate
from generic_connector.retry import retry_after
from tests.platform_api import PlatformAPI, json_field


def outbound(**options: float) -> Outbound:
    template = RequestTemplate("text", url="'http://unused'")
    return Outbound({"text": template}, **{"backoff": 0.01, "timeout": 1.0, **options})


def request(
    url: str, text: str = "hi", headers: Optional[Dict[str, str]] = None
) -> OutboundRequest:
    body = f'{{"text": "{text}"}}'.encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    return OutboundRequest("text", "POST", url, headers, body)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens here once the socket is closed


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
    delivery = Delivery("t", outbound(retries=2))
    [ok] = run(delivery, delivery.send("c2", request(f"http://127.0.0.1:{closed_port()}/x")))
    assert ok is False
    assert (
        "after 3 attempt(s); the last attempt failed: ClientConnectorError (connection refused)"
    ) in caplog.text


def test_other_4xx_is_not_retried(api: PlatformAPI, caplog) -> None:  # noqa: ANN001
    api.plan(lambda r: True, [(400, {}, {"error": "bad chat"})])
    delivery = Delivery("t", outbound())
    [ok] = run(delivery, delivery.send("c3", request(api.url + "/x")))
    assert ok is False
    assert [r.status for r in api.requests] == [400]
    assert (
        'after 1 attempt(s); the platform answered HTTP 400: {"error": "bad chat"}' in caplog.text
    )


def test_redirects_are_not_followed(caplog) -> None:  # noqa: ANN001
    platform, elsewhere = PlatformAPI(), PlatformAPI()
    try:
        target = f"{elsewhere.url}/collect?token=SECRET-REDIRECT"
        platform.plan(lambda r: True, [(302, {"Location": target}, {})] * 5)
        delivery = Delivery("t", outbound(retries=3))
        [ok] = run(delivery, delivery.send("c4", request(platform.url + "/send")))
        assert ok is False
        assert [r.status for r in platform.requests] == [302]  # not retried either
        time.sleep(0.2)
        assert elsewhere.requests == []  # the body never reached the other server
    finally:
        platform.close()
        elsewhere.close()
    assert (
        "could not deliver a text message for conversation c4 after 1 attempt(s); "
        "the platform answered HTTP 302 (a redirect)"
    ) in caplog.text
    assert "SECRET-REDIRECT" not in caplog.text and elsewhere.url not in caplog.text


TOKEN = "123456:SECRET-token-in-the-url"


def test_an_allowed_host_on_another_port_is_not_sent_to(
    api: PlatformAPI,
    caplog,  # noqa: ANN001
) -> None:
    bare = Delivery("t", outbound(allow_hosts=["127.0.0.1"]))  # 127.0.0.1 on port 80 only
    [ok] = run(bare, bare.send("c7", request(f"{api.url}/bot{TOKEN}/send")))
    assert ok is False
    assert api.requests == []  # the token never reached whatever listens on that port
    assert (
        f"refused to send a text message for conversation c7 to host '127.0.0.1' on port "
        f"{api.port}, which is not in outbound.allow_hosts"
    ) in caplog.text
    assert "SECRET" not in caplog.text
    exact = Delivery("t", outbound(allow_hosts=[f"127.0.0.1:{api.port}"]))
    [ok] = run(exact, exact.send("c7", request(f"{api.url}/bot{TOKEN}/send")))
    assert ok is True
    assert [r.path for r in api.requests] == [f"/bot{TOKEN}/send"]


def logged(records: List[logging.LogRecord]) -> str:
    """Everything a handler could write of the records: messages, arguments, tracebacks."""
    parts = []
    for record in records:
        parts += [record.getMessage(), str(record.msg), repr(record.args)]
        parts += [record.exc_text or "", repr(record.exc_info) if record.exc_info else ""]
    return "\n".join(parts)


@pytest.mark.parametrize(
    "url, reason",
    [
        (f"http://127.0.0.1:{closed_port()}/bot{TOKEN}/send?key={TOKEN}", "connection refused"),
        (f"http://nowhere.invalid/bot{TOKEN}/send?key={TOKEN}", ""),  # not resolved, or timed out
        (f"http://[::1/bot{TOKEN}/send", "invalid URL"),  # aiohttp's InvalidURL text is the URL
        (f"http:///bot{TOKEN}/send", "invalid URL"),
    ],
    ids=["closed port", "unknown host", "bad IPv6 host", "no host"],
)
def test_no_url_or_header_value_is_logged_when_delivery_fails(
    caplog,  # noqa: ANN001
    url: str,
    reason: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="generic_connector")
    delivery = Delivery("t", outbound(retries=1, timeout=2.0))
    secret_header = {"Authorization": "Bearer SECRET-header-value"}
    [ok] = run(delivery, delivery.send("c5", request(url, headers=secret_header)))
    assert ok is False
    text = logged(caplog.records)
    assert "could not deliver a text message for conversation c5" in text
    assert reason in text
    for secret in (TOKEN, "SECRET", "nowhere.invalid", url):
        assert secret not in text


def test_an_error_answer_echoing_the_url_or_a_header_is_logged_without_them(
    api: PlatformAPI,
    caplog,  # noqa: ANN001
) -> None:
    echo = {"error": f"no route POST /bot{TOKEN}/send?key=abcdef1234 for Bearer SECRET-header"}
    api.plan(lambda r: True, [(404, {}, echo)])
    delivery = Delivery("t", outbound())
    url = f"{api.url}/bot{TOKEN}/send?key=abcdef1234"
    headers = {"Authorization": "Bearer SECRET-header"}
    [ok] = run(delivery, delivery.send("c6", request(url, headers=headers)))
    assert ok is False
    text = logged(caplog.records)
    assert "the platform answered HTTP 404: " in text
    for secret in (TOKEN, "abcdef1234", "SECRET-header"):
        assert secret not in text


def test_an_unexpected_error_is_logged_and_never_fails_the_task(
    api: PlatformAPI,
    caplog,  # noqa: ANN001
) -> None:
    # aiohttp raises ValueError (not a ClientError) for a line break in a header value.
    broken = request(f"{api.url}/bot{TOKEN}/send", headers={"X-Trace": "a\r\nInjected: yes"})
    delivery = Delivery("t", outbound())

    async def scenario() -> Optional[BaseException]:
        task = delivery.schedule("c7", [broken, request(api.url + "/after")])
        await asyncio.wait([task])
        return task.exception()

    [error] = run(delivery, scenario())
    assert error is None
    text = logged(caplog.records)
    assert (
        "Channel t: delivering a text message for conversation c7 failed unexpectedly: ValueError"
    ) in text
    assert TOKEN not in text and "Injected" not in text
    assert [r.path for r in api.requests] == ["/after"]  # the conversation's next request went


def test_one_pooled_connection_is_reused(api: PlatformAPI) -> None:
    delivery = Delivery("t", outbound())

    async def scenario() -> None:
        for number in range(3):
            assert await delivery.send("c8", request(api.url + "/x", str(number)))

    run(delivery, scenario())
    assert [r.json["text"] for r in api.requests] == ["0", "1", "2"]
    assert len({r.client_port for r in api.requests}) == 1


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


def test_cookies_a_platform_sets_are_not_sent_with_later_requests(api: PlatformAPI) -> None:
    # By name, not IP: a cookie jar keeps no cookies for IP addresses, so the test would pass
    # without the fix.
    url = f"http://localhost:{api.port}/send"
    api.plan(lambda r: True, [(200, {"Set-Cookie": "session=conversation-c1; Path=/"}, {})])
    delivery = Delivery("t", outbound())

    async def both() -> List[bool]:
        first = await delivery.send("c1", request(url, "for c1"))
        return [first, await delivery.send("c2", request(url, "for c2"))]

    [sent] = run(delivery, both())
    assert sent == [True, True]
    second = api.received(json_field("text", "for c2"), 1)[0]
    assert "Cookie" not in second.headers and "cookie" not in second.headers
