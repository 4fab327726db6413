"""The ``tokens`` section: access tokens from a token endpoint, filled in at send time.

Against a real local HTTP server playing both the token endpoint (``/token``) and the
platform's API (``/send``); the Redis tests against a real redis-server, two providers (two
replicas) sharing one token.
"""

import asyncio
import json
from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import redis

from generic_connector import stores
from generic_connector.config import ChannelConfig, check_channel, load_channel
from generic_connector.tokens import MemoryTokenCache, TokenProvider, build_specs, marker
from tests.platform_api import PlatformAPI, Recorded
from tests.redis_server import RedisServer, fresh, serve

BASIC = "join(' ', ['Basic', base64_encode(join(':', [env('CLIENT_ID'), env('CLIENT_SECRET')]))])"


@pytest.fixture
def api() -> Iterator[PlatformAPI]:
    server = PlatformAPI()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLIENT_ID", "id")
    monkeypatch.setenv("CLIENT_SECRET", "secret")


def to_token(request: Recorded) -> bool:
    return request.path == "/token"


def to_send(request: Recorded) -> bool:
    return request.path.startswith("/send")


def token_answers(api: PlatformAPI, *tokens: str, expires_in: Any = 3600) -> None:
    answers = [(200, {}, {"access_token": t, "expires_in": expires_in}) for t in tokens]
    api.plan(to_token, answers)


def token_section(api: PlatformAPI, **extra: Any) -> Dict[str, Any]:
    return {
        "url": f"'{api.url}/token'",
        "headers": {"Authorization": BASIC},
        "body": "{grant_type: 'client_credentials'}",
        **extra,
    }


def channel(
    api: PlatformAPI, store: Any = None, success: Optional[str] = None, **token: Any
) -> ChannelConfig:
    entry: Dict[str, Any] = {
        "name": "tokens",
        "request": {"sender": "user", "text": "text"},
        "tokens": {"api": token_section(api, **token)},
        "outbound": {
            "retries": 0,
            "allow_hosts": [f"127.0.0.1:{api.port}"],
            "text": {
                "url": f"join('', ['{api.url}/send?t=', token('api')])",
                "headers": {"Authorization": "join(' ', ['Bearer', token('api')])"},
                "body": "{text: message.text}",
            },
        },
    }
    if store is not None:
        entry["store"] = store
    if success is not None:
        entry["outbound"]["text"]["success"] = success
    return load_channel(entry)


async def deliver(config: ChannelConfig, texts: List[str]) -> None:
    assert config.outbound is not None
    outbox = stores.build(config).outbox
    assert outbox is not None
    await outbox.start()
    try:
        for text in texts:
            requests, problems = config.outbound.render({"text": text}, "u1")
            assert not problems
            await (await outbox.put("u1", requests))
    finally:
        await outbox.close()


@pytest.mark.unit
def test_token_renders_the_marker_and_the_request_holds_only_it(api: PlatformAPI) -> None:
    config = channel(api)
    assert config.outbound is not None
    [request], _ = config.outbound.render({"text": "hi ${token:api}"}, "u1")
    assert marker("api") == "${token:api}"
    assert request.headers["Authorization"] == "Bearer ${token:api}"
    assert request.url.endswith("/send?t=${token:api}")
    assert request.body == json.dumps({"text": "hi ${token:api}"}).encode()


@pytest.mark.unit
def test_a_token_is_got_once_and_used_for_two_sends(api: PlatformAPI) -> None:
    token_answers(api, "tok+1/=")
    asyncio.run(deliver(channel(api), ["one", "two ${token:api}"]))
    [got] = [r for r in api.requests if to_token(r)]
    assert got.body == b"grant_type=client_credentials"
    assert got.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert got.headers["Authorization"] == "Basic aWQ6c2VjcmV0"
    sent = [r for r in api.requests if to_send(r)]
    assert [r.headers["Authorization"] for r in sent] == ["Bearer tok+1/="] * 2
    assert parse_qs(urlsplit(sent[0].path).query) == {"t": ["tok+1/="]}  # percent-encoded
    assert sent[1].json == {"text": "two ${token:api}"}  # never filled in the body


@pytest.mark.unit
def test_a_json_token_request(api: PlatformAPI) -> None:
    token_answers(api, "t1")
    asyncio.run(deliver(channel(api, content_type="application/json"), ["one"]))
    [got] = [r for r in api.requests if to_token(r)]
    assert got.json == {"grant_type": "client_credentials"}
    assert got.headers["Content-Type"] == "application/json"


@pytest.mark.unit
def test_a_401_renews_the_token_and_sends_again_once(api: PlatformAPI) -> None:
    token_answers(api, "old", "new")
    api.plan(to_send, [(401, {}, {"error": "expired"})])
    asyncio.run(deliver(channel(api), ["one"]))  # retries: 0, the second send is not a retry
    sent = [r.headers["Authorization"] for r in api.requests if to_send(r)]
    assert sent == ["Bearer old", "Bearer new"]
    assert len([r for r in api.requests if to_token(r)]) == 2


@pytest.mark.unit
def test_an_answer_that_refused_matches_renews_the_token_as_a_401_does(api: PlatformAPI) -> None:
    """WeCom answers 200 {"errcode": 42001} to an expired access token."""
    token_answers(api, "old", "new")
    expired = (200, {}, {"errcode": 42001, "errmsg": "access_token expired"})
    api.plan(to_send, [expired, (200, {}, {"errcode": 0, "errmsg": "ok"})])
    config = channel(api, success="errcode == `0`", refused="errcode == `42001`")
    asyncio.run(deliver(config, ["one"]))
    sent = [r.headers["Authorization"] for r in api.requests if to_send(r)]
    assert sent == ["Bearer old", "Bearer new"]
    # Without `refused`, the same answer is a failed delivery (retries: 0), the token kept.
    api.requests.clear()
    token_answers(api, "old")  # a new channel: a new token cache
    api.plan(to_send, [expired])
    asyncio.run(deliver(channel(api, success="errcode == `0`"), ["two"]))
    assert [r.headers["Authorization"] for r in api.requests if to_send(r)] == ["Bearer old"]


@pytest.mark.unit
def test_a_second_401_is_not_sent_again(api: PlatformAPI) -> None:
    token_answers(api, "old", "new")
    api.plan(to_send, [(401, {}, {}), (401, {}, {})])
    asyncio.run(deliver(channel(api), ["one"]))
    assert len([r for r in api.requests if to_send(r)]) == 2


def provider(api: PlatformAPI, cache: Any, **token: Any) -> TokenProvider:
    return TokenProvider("tokens", build_specs({"api": token_section(api, **token)}), cache)


@pytest.mark.unit
def test_a_token_is_renewed_margin_seconds_before_it_expires(api: PlatformAPI) -> None:
    token_answers(api, "t1", "t2", expires_in="600")
    now = [1000.0]
    tokens = provider(api, MemoryTokenCache(clock=lambda: now[0]), margin=100)

    async def run() -> List[str]:
        async with aiohttp.ClientSession() as session:
            got = [await tokens.get("api", session)]
            now[0] += 499
            got.append(await tokens.get("api", session))
            now[0] += 1
            got.append(await tokens.get("api", session))
        return got

    assert asyncio.run(run()) == ["t1", "t1", "t2"]


@pytest.mark.unit
def test_concurrent_callers_share_one_request_and_a_bad_answer_is_no_token(
    api: PlatformAPI,
) -> None:
    api.plan(to_token, [(200, {}, {"access_token": "t1"})], delay=0.2)
    tokens = provider(api, MemoryTokenCache())

    async def run() -> List[str]:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(tokens.get("api", session) for _ in range(5)))

    assert asyncio.run(run()) == ["t1"] * 5
    assert len([r for r in api.requests if to_token(r)]) == 1


@pytest.mark.unit
def test_token_naming_no_declared_token_is_a_located_finding(api: PlatformAPI) -> None:
    entry = {
        "name": "tokens",
        "request": {"sender": "user", "text": "text"},
        "tokens": {"api": token_section(api)},
        "outbound": {
            "text": {
                "url": "'https://example.com/send'",
                "headers": {"Authorization": "token('nope')"},
                "body": "{t: token('api')}",
            }
        },
    }
    findings = check_channel(entry).findings
    found = {(f.code, f.path) for f in findings}
    assert ("unknown-token", "tokens.outbound.text.headers.Authorization") in found
    assert ("invalid-value", "tokens.outbound.text.body") in found


# Redis: replicas share the token -------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from serve()


@pytest.mark.redis
def test_two_replicas_share_one_token_request_in_redis(
    api: PlatformAPI, redis_server: RedisServer
) -> None:
    from generic_connector.stores.redis import RedisTokenCache

    url = fresh(redis_server)
    token_answers(api, "t1", "t2")
    first = provider(api, RedisTokenCache(url, "gc"))
    second = provider(api, RedisTokenCache(url, "gc"))

    async def run() -> List[str]:
        async with aiohttp.ClientSession() as session:
            got = [await first.get("api", session), await second.get("api", session)]
            await second.invalidate("api", "stale")  # another value: kept
            got.append(await first.get("api", session))
            await second.invalidate("api", "t1")
            got.append(await first.get("api", session))
        await first.close()
        await second.close()
        return got

    assert asyncio.run(run()) == ["t1", "t1", "t1", "t2"]
    assert len([r for r in api.requests if to_token(r)]) == 2
    ttl = redis.Redis.from_url(url).pttl("gc:token:tokens:api")
    assert 3500_000 < ttl <= 3540_000  # the expiry minus the margin


@pytest.mark.redis
def test_the_redis_outbox_stores_the_marker_never_the_token(
    api: PlatformAPI, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", fresh(redis_server))
    token_answers(api, "sekret-token")
    api.plan(to_send, [(400, {}, {"error": "bad", "echo": "sekret-token"})])
    config = channel(api, store={"type": "redis", "url_env": "REDIS_URL"})
    asyncio.run(deliver(config, ["one"]))
    client = redis.Redis.from_url(redis_server.url)
    [(_, dead)] = client.xrange("generic_connector:dead")
    text = json.dumps({k.decode(): v.decode() for k, v in dead.items()})
    assert "sekret-token" not in text
    assert "${token:api}" in text
    assert client.get("generic_connector:token:tokens:api") == b"sekret-token"
