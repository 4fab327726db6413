"""One behavioural suite for the backends of ``store.type``: the same tests, unchanged, against
``memory`` and against ``redis`` (a real redis-server), each with a real local platform API.

What a channel relies on whatever its backend: de-duplication (a handled key answered with its
replies, a duplicate waiting for the first delivery, a failed one handled again), replies
delivered in order per conversation, the same statuses retried, ``Retry-After`` followed, the
others not retried, a request given up recorded for the operator (a log line; on Redis a
dead letter too), and, on a backend shared by replicas, a killed replica's deliveries taken
over by another one.
"""

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable, Iterator, List, Optional

import pytest

from generic_connector import stores
from generic_connector.config import ChannelConfig, load_channel
from generic_connector.outbound import OutboundRequest
from tests.platform_api import PlatformAPI
from tests.redis_server import RedisServer, fresh, serve


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from serve()


@pytest.fixture
def api() -> Iterator[PlatformAPI]:
    server = PlatformAPI()
    yield server
    server.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def config(
    request: pytest.FixtureRequest, api: PlatformAPI, monkeypatch: pytest.MonkeyPatch
) -> ChannelConfig:
    store: dict = {"type": request.param}
    if request.param == "redis":
        monkeypatch.setenv("REDIS_URL", fresh(request.getfixturevalue("redis_server")))
        store.update(url_env="REDIS_URL", visibility_timeout=1)
    return load_channel(
        {
            "name": f"contract-{request.param}",
            "request": {"sender": "user", "text": "text", "message_id": "id"},
            "store": store,
            "outbound": {
                "retries": 3,
                "backoff": 0.05,
                "max_backoff": 0.2,
                "allow_hosts": [f"127.0.0.1:{api.port}"],
                "text": {"url": "'http://unused'", "body": "{text: message.text}"},
                # Upload, then send with the upload's id (both on the stand-in API).
                "image": {
                    "steps": [
                        {
                            "name": "upload",
                            "url": f"'{api.url}/upload'",
                            "body": "{url: message.image}",
                        }
                    ],
                    "url": f"'{api.url}/send'",
                    "body": "{chat: recipient, media_id: steps.upload.media_id}",
                    "success": "is_sent",
                },
            },
        }
    )


@pytest.fixture
def parts(config: ChannelConfig) -> stores.Parts:
    return stores.build(config)


def run(parts: stores.Parts, scenario: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        assert parts.outbox is not None and parts.store is not None
        await parts.outbox.start()
        try:
            return await scenario()
        finally:
            await parts.outbox.close()
            await parts.store.close()

    return asyncio.run(main())


def sent(
    api: PlatformAPI, conversation: str, number: int, success: Optional[str] = None
) -> OutboundRequest:
    body = json.dumps({"chat": conversation, "n": number}).encode()
    headers = {"Content-Type": "application/json"}
    return OutboundRequest("text", "POST", f"{api.url}/send", headers, body, success)


def numbers(api: PlatformAPI, status: int = 200) -> List[int]:
    return [r.json["n"] for r in api.requests if r.status == status]


def test_a_handled_key_answers_its_duplicates_and_a_failed_one_is_handled_again(
    parts: stores.Parts,
) -> None:
    store = parts.store
    assert store is not None

    async def scenario() -> List[Any]:
        seen = [await store.claim("k1")]
        duplicate = asyncio.ensure_future(store.claim("k1"))  # waits for the first delivery
        await asyncio.sleep(0.1)
        seen.append(duplicate.done())
        await store.finish("k1", [{"text": "done"}])
        seen.append(await duplicate)
        seen.append(await store.claim("k1"))
        seen.append(await store.claim("k2"))
        await store.release("k2")  # its handling failed
        seen.append(await store.claim("k2"))
        return seen

    assert run(parts, scenario) == [
        None,
        False,
        [{"text": "done"}],
        [{"text": "done"}],
        None,
        None,
    ]


def test_replies_are_delivered_in_order_per_conversation_through_a_retry(
    parts: stores.Parts, api: PlatformAPI
) -> None:
    api.plan(lambda r: r.json["n"] == 0, [(503, {}, {})])
    outbox = parts.outbox
    assert outbox is not None

    async def scenario() -> None:
        first = await outbox.put("c1", [sent(api, "c1", n) for n in range(3)])
        second = await outbox.put("c1", [sent(api, "c1", n) for n in range(3, 5)])
        await first
        await second

    run(parts, scenario)
    assert numbers(api) == [0, 1, 2, 3, 4]
    assert numbers(api, 503) == [0]


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_the_same_statuses_are_retried(parts: stores.Parts, api: PlatformAPI, status: int) -> None:
    api.plan(lambda r: True, [(status, {}, {})])
    outbox = parts.outbox
    assert outbox is not None

    async def scenario() -> None:
        await (await outbox.put("c2", [sent(api, "c2", 7)]))

    run(parts, scenario)
    assert [r.status for r in api.requests] == [status, 200]


@pytest.mark.parametrize("status", [400, 403, 404])
def test_other_refusals_are_not_retried(parts: stores.Parts, api: PlatformAPI, status: int) -> None:
    api.plan(lambda r: True, [(status, {}, {})])
    outbox = parts.outbox
    assert outbox is not None

    async def scenario() -> None:
        await (await outbox.put("c3", [sent(api, "c3", 8)]))

    run(parts, scenario)
    assert [r.status for r in api.requests] == [status]


def test_retry_after_is_followed(parts: stores.Parts, api: PlatformAPI) -> None:
    api.plan(lambda r: True, [(429, {"Retry-After": "1"}, {})])
    outbox = parts.outbox
    assert outbox is not None

    async def scenario() -> None:
        await (await outbox.put("c4", [sent(api, "c4", 9)]))

    run(parts, scenario)
    first, second = api.requests
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.9  # the backoff alone would be 0.05 s


NOT_SENT = (200, {}, {"is_sent": False, "error": "recipient blocked"})


@pytest.mark.parametrize(
    "answers, attempts",
    [
        ([(400, {}, {"error": "chat not found"})], 1),
        ([(503, {}, {})] * 4, 4),
        ([NOT_SENT] * 4, 4),  # 200, but the answer says the message was not sent
    ],
)
def test_a_request_given_up_is_recorded_for_the_operator(
    parts: stores.Parts, api: PlatformAPI, caplog: pytest.LogCaptureFixture, answers: Any,
    attempts: int,
) -> None:  # fmt: skip
    caplog.set_level(logging.ERROR, logger="generic_connector")
    api.plan(lambda r: True, answers)
    outbox = parts.outbox
    assert outbox is not None

    async def scenario() -> None:
        request = sent(api, "c5", 10, success="is_sent")
        await asyncio.wait_for(await outbox.put("c5", [request]), 10)

    run(parts, scenario)
    assert len(api.requests) == attempts  # and the put's awaitable completed
    [line] = [r.getMessage() for r in caplog.records if "conversation c5" in r.getMessage()]
    status = answers[0][0]
    assert f"after {attempts} attempt(s)" in line and f"HTTP {status}" in line


def test_a_killed_replicas_deliveries_are_taken_over(
    config: ChannelConfig, api: PlatformAPI
) -> None:
    if not stores.BACKENDS[config.store.type].shared:
        pytest.skip("this backend keeps its state in one process: nothing to take over")
    api.plan(lambda r: r.json["n"] == 0, [(200, {}, {})], delay=2.0)  # a slow first answer
    doomed, survivor = stores.build(config), stores.build(config)
    assert doomed.outbox is not None and survivor.outbox is not None

    async def scenario() -> None:
        await doomed.outbox.start()
        await doomed.outbox.put("c6", [sent(api, "c6", n) for n in range(3)])
        while not api.requests:
            await asyncio.sleep(0.01)
        doomed.outbox.kill()  # type: ignore[attr-defined]  # as if its process died
        await survivor.outbox.start()
        while len([r for r in api.requests if r.status == 200]) < 4:
            await asyncio.sleep(0.05)
        await survivor.outbox.close()
        await doomed.outbox.close()  # its session; the conversation is no longer its own

    asyncio.run(asyncio.wait_for(scenario(), 15))
    # The request under way when the replica died is sent again (at least once), then the rest.
    assert [r.json["n"] for r in api.requests] == [0, 0, 1, 2]


def test_a_2xx_answer_that_says_not_sent_is_retried(parts: stores.Parts, api: PlatformAPI) -> None:
    api.plan(lambda r: True, [NOT_SENT, NOT_SENT, (200, {}, {"is_sent": True})])
    outbox = parts.outbox
    assert outbox is not None

    async def scenario() -> None:
        await (await outbox.put("c7", [sent(api, "c7", 11, success="is_sent")]))

    run(parts, scenario)
    assert [r.json["n"] for r in api.requests] == [11, 11, 11]  # delivered on the third


# Chains: an upload, then the message with the upload's id -------------------------------------


def image_reply(config: ChannelConfig, conversation: str) -> List[OutboundRequest]:
    assert config.outbound is not None
    message = {"image": "https://example.com/cat.png"}
    requests, problems = config.outbound.render(message, conversation)
    assert problems == []
    return requests


def test_a_step_s_answer_feeds_the_request_after_it(
    config: ChannelConfig, parts: stores.Parts, api: PlatformAPI
) -> None:
    api.plan(lambda r: r.path == "/upload", [(200, {}, {"media_id": "m-17"})])
    api.plan(lambda r: r.path == "/send", [(200, {}, {"is_sent": True})])
    outbox = parts.outbox
    assert outbox is not None

    async def scenario() -> None:
        await asyncio.wait_for(await outbox.put("c8", image_reply(config, "c8")), 10)

    run(parts, scenario)
    assert [(r.path, r.json) for r in api.requests] == [
        ("/upload", {"url": "https://example.com/cat.png"}),
        ("/send", {"chat": "c8", "media_id": "m-17"}),
    ]


def test_a_chain_is_retried_from_its_first_step_and_given_up_whole(
    config: ChannelConfig, parts: stores.Parts, api: PlatformAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="generic_connector")
    api.plan(lambda r: r.path == "/upload", [(200, {}, {"media_id": f"m-{n}"}) for n in range(3)])
    api.plan(lambda r: r.path == "/send", [(503, {}, {}), NOT_SENT, (200, {}, {"is_sent": True})])
    api.plan(lambda r: r.path == "/upload", [(400, {}, {"error": "bad url"})])
    outbox = parts.outbox
    assert outbox is not None

    async def scenario() -> None:
        await asyncio.wait_for(await outbox.put("c9", image_reply(config, "c9")), 10)
        # A step refused for good: the request after it is never sent.
        await asyncio.wait_for(await outbox.put("c10", image_reply(config, "c10")), 10)

    run(parts, scenario)
    assert [(r.path, r.status, (r.json or {}).get("media_id")) for r in api.requests] == [
        ("/upload", 200, None),
        ("/send", 503, "m-0"),
        ("/upload", 200, None),  # the retry starts again from the upload
        ("/send", 200, "m-1"),  # 200, but is_sent is false: retried
        ("/upload", 200, None),
        ("/send", 200, "m-2"),
        ("/upload", 400, None),  # c10
    ]
    [line] = [r.getMessage() for r in caplog.records if "conversation c10" in r.getMessage()]
    assert "after 1 attempt(s)" in line and "HTTP 400" in line


# What a channel remembers per conversation -----------------------------------------------------


def test_conversation_state_is_kept_expires_and_is_listed(parts: stores.Parts) -> None:
    state = parts.conversations
    assert state is not None

    async def scenario() -> List[Any]:
        await state.put("paused", "c-1", {"by": "agent-7"})
        await state.put("paused", "c:2*", {"by": "agent-8"}, ttl=0.3)  # pattern characters
        await state.put("reply_to", "c-1", {"thread": "t-1"})
        seen = [await state.get("paused", "c-1"), await state.all("paused")]
        await asyncio.sleep(0.4)
        seen += [await state.get("paused", "c:2*"), await state.all("paused")]
        seen += [await state.delete("paused", "c-1"), await state.delete("paused", "c-1")]
        seen += [await state.get("paused", "c-1"), await state.get("reply_to", "c-1")]
        await state.close()
        return seen

    assert asyncio.run(scenario()) == [
        {"by": "agent-7"},
        {"c-1": {"by": "agent-7"}, "c:2*": {"by": "agent-8"}},
        None,  # expired
        {"c-1": {"by": "agent-7"}},
        True,
        False,
        None,
        {"thread": "t-1"},
    ]


# Pacing (outbound.rate): one conversation's requests spaced, in memory and in Redis -----------

SPACING = 0.5  # rate: {per_second: 2}
EARLY = 0.05  # a request may reach the stand-in API sooner after the one before than it left


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def paced(
    request: pytest.FixtureRequest, api: PlatformAPI, monkeypatch: pytest.MonkeyPatch
) -> stores.Parts:
    store: dict = {"type": request.param}
    if request.param == "redis":
        monkeypatch.setenv("REDIS_URL", fresh(request.getfixturevalue("redis_server")))
        store.update(url_env="REDIS_URL", visibility_timeout=1)
    config = load_channel(
        {
            "name": f"paced-{request.param}",
            "request": {"sender": "user", "text": "text", "message_id": "id"},
            "store": store,
            "outbound": {
                "retries": 3,
                "backoff": 0.05,
                "max_backoff": 0.2,
                "rate": {"per_second": 1 / SPACING},
                "allow_hosts": [f"127.0.0.1:{api.port}"],
                "text": {"url": "'http://unused'", "body": "{text: message.text}"},
            },
        }
    )
    return stores.build(config)


def times(api: PlatformAPI, conversation: str) -> List[float]:
    return [r.at for r in api.requests if r.json["chat"] == conversation]


def gaps(api: PlatformAPI, conversation: str) -> List[float]:
    at = times(api, conversation)
    return [later - earlier for earlier, later in zip(at, at[1:])]


def test_one_conversations_requests_are_spaced(paced: stores.Parts, api: PlatformAPI) -> None:
    outbox = paced.outbox
    assert outbox is not None

    async def scenario() -> None:
        first = await outbox.put("p1", [sent(api, "p1", n) for n in range(2)])
        await first
        await (await outbox.put("p1", [sent(api, "p1", 2)]))  # after the earlier ones left

    run(paced, scenario)
    assert numbers(api) == [0, 1, 2]
    assert all(gap >= SPACING - EARLY for gap in gaps(api, "p1")), gaps(api, "p1")


def test_paced_conversations_do_not_hold_each_other_up(
    paced: stores.Parts, api: PlatformAPI
) -> None:
    outbox = paced.outbox
    assert outbox is not None

    async def scenario() -> None:
        one = await outbox.put("p2", [sent(api, "p2", n) for n in range(3)])
        other = await outbox.put("p3", [sent(api, "p3", n) for n in range(10, 13)])
        await asyncio.gather(one, other)

    run(paced, scenario)
    assert [r.json["n"] for r in api.requests if r.json["chat"] == "p2"] == [0, 1, 2]
    assert [r.json["n"] for r in api.requests if r.json["chat"] == "p3"] == [10, 11, 12]
    for conversation in ("p2", "p3"):
        assert all(gap >= SPACING - EARLY for gap in gaps(api, conversation))
    # Interleaved: the other conversation started before this one's last (>= 2 spacings on).
    assert times(api, "p3")[0] < times(api, "p2")[2]


def test_a_retry_after_delays_its_conversation_only(paced: stores.Parts, api: PlatformAPI) -> None:
    api.plan(
        lambda r: r.json["chat"] == "p4" and r.json["n"] == 1, [(429, {"Retry-After": "2"}, {})]
    )
    outbox = paced.outbox
    assert outbox is not None

    async def scenario() -> None:
        one = await outbox.put("p4", [sent(api, "p4", n) for n in range(3)])
        other = await outbox.put("p5", [sent(api, "p5", n) for n in range(10, 13)])
        await asyncio.gather(one, other)

    run(paced, scenario)
    p4 = [(r.json["n"], r.status) for r in api.requests if r.json["chat"] == "p4"]
    assert p4 == [(0, 200), (1, 429), (1, 200), (2, 200)]
    at = times(api, "p4")
    assert at[2] - at[1] >= 1.9  # Retry-After: 2, not the backoff's 0.05 s
    assert all(gap >= SPACING - EARLY for gap in gaps(api, "p4"))
    # The other conversation went on meanwhile, at its own pace.
    assert [r.status for r in api.requests if r.json["chat"] == "p5"] == [200] * 3
    assert all(gap >= SPACING - EARLY for gap in gaps(api, "p5"))
    assert times(api, "p5")[2] < at[2]
