"""The backends of a channel's state, chosen by ``store.type`` from one table."""

import subprocess
import sys

import pytest

from generic_connector import stores
from generic_connector.config import check_channel, load_channel
from generic_connector.idempotency import MemoryStore
from generic_connector.outbox import MemoryOutbox
from generic_connector.stores.redis.dedup import RedisStore
from generic_connector.stores.redis.inbox import RedisInbox
from generic_connector.stores.redis.outbox import RedisOutbox

OUTBOUND = {"text": {"url": "'https://api.example.com/send'", "body": "{text: message.text}"}}
REQUEST = {"sender": "user", "text": "text", "message_id": "id"}


def channel(store: dict, **extra: object) -> dict:
    return {"name": "c", "request": REQUEST, "outbound": OUTBOUND, "store": store, **extra}


def test_each_backend_supplies_its_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing is connected to
    memory = stores.build(load_channel(channel({"type": "memory"})))
    assert (type(memory.store), type(memory.outbox), memory.inbox) == (
        MemoryStore,
        MemoryOutbox,
        None,
    )
    shared = stores.build(load_channel(channel({"type": "redis", "url_env": "REDIS_URL"})))
    assert (type(shared.store), type(shared.outbox), shared.inbox) == (
        RedisStore,
        RedisOutbox,
        None,
    )
    early = load_channel(
        channel(
            {"type": "redis", "url_env": "REDIS_URL"},
            request={**REQUEST, "ack": "early"},
        )
    )
    assert type(stores.build(early).inbox) is RedisInbox


def test_defer_on_a_backend_that_stores_messages_gets_an_inbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    defer = {"after": 1, "response": {"body": "`{}`"}}
    on_redis = channel({"type": "redis", "url_env": "REDIS_URL"}, defer=defer)
    assert type(stores.build(load_channel(on_redis)).inbox) is RedisInbox
    assert stores.build(load_channel(channel({"type": "memory"}, defer=defer))).inbox is None


def test_no_parts_where_the_configuration_needs_none() -> None:
    plain = load_channel({"name": "p", "request": {"sender": "user", "text": "text"}})
    parts = stores.build(plain)
    assert (parts.store, parts.outbox, parts.inbox, parts.fetcher) == (None, None, None, None)
    # Conversation state is always there; on memory it is a dict of this process.
    assert type(parts.conversations).__name__ == "MemoryConversations"


def test_a_backend_without_an_inbox_is_a_finding_not_a_start_up_failure() -> None:
    config, findings, _ = check_channel(
        channel({"type": "memory"}, request={**REQUEST, "ack": "early"}), "c"
    )
    assert config is None
    assert [(f.path, f.message) for f in findings] == [("c.request.ack", "needs a shared store")]


def test_an_unknown_backend_is_a_finding() -> None:
    config, findings, _ = check_channel(channel({"type": "mongo"}), "c")
    assert config is None
    assert findings[0].path == "c.store.type"


def test_validating_imports_no_redis_client() -> None:
    code = "import sys, generic_connector.cli.validate; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
