"""The ``redis`` backend: state in one Redis shared by every replica that names its URL.

``client`` (the shared connection, round trips), ``dedup`` (the de-duplication store),
``queue`` (the one durable queue engine), and its two adapters: ``outbox`` and ``inbox``.
"""

import os
from typing import TYPE_CHECKING

from generic_connector.stores.redis.dedup import RedisStore
from generic_connector.stores.redis.inbox import RedisInbox
from generic_connector.stores.redis.outbox import RedisOutbox

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
    return RedisInbox(
        config.name, store.url, store.prefix, visibility_timeout=store.visibility_timeout
    )
