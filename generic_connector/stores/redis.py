"""The ``redis`` backend: state in one Redis shared by every replica that names its URL."""

import os
from typing import TYPE_CHECKING

from generic_connector.redis_inbox import RedisInbox
from generic_connector.redis_outbox import RedisOutbox
from generic_connector.redis_store import RedisStore

if TYPE_CHECKING:
    from generic_connector.config import ChannelConfig


def dedup_store(config: "ChannelConfig") -> RedisStore:
    store = config.store
    return RedisStore(
        config.idempotency.window,
        config.idempotency.max_keys,
        store.url,
        prefix=store.prefix,
        running_timeout=store.running_timeout,
    )


def outbox(config: "ChannelConfig") -> RedisOutbox:
    assert config.outbound is not None  # an outbox is built only for a channel with one
    store = config.store
    # Masked wherever a request is shown (deliveries list/show, logs): every variable read.
    secrets = {name: os.environ[name] for name in config.env_names() if os.environ.get(name)}
    return RedisOutbox(
        config.name,
        config.outbound,
        store.url,
        prefix=store.prefix,
        visibility_timeout=store.visibility_timeout,
        secrets=secrets,
    )


def inbox(config: "ChannelConfig") -> RedisInbox:
    store = config.store
    return RedisInbox(config.name, store.url, store.prefix, store.visibility_timeout)
