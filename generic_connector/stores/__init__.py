"""Backends of a channel's state, chosen by ``store.type``: one table, one way to add one.

A backend supplies the parts a channel may need: the de-duplication store (message ids
handled), the outbox (replies waiting for delivery) and the inbox (messages stored before they
are handled: early acknowledgement, ``defer`` on a shared store). ``BACKENDS`` says what each
backend offers and names its module, imported only when a channel is built with it: the
validator knows every backend without importing a Redis client. A configuration that needs a
part its backend lacks is a finding of the config loader (``config.py``), never a start-up
failure.

    stores.build(config)  # -> Parts(store, outbox, inbox, fetcher), each None when not needed

A backend module defines ``dedup_store(config)``, ``outbox(config, tokens)``,
``conversations(config)`` (what the channel remembers per conversation),
``token_cache(config)`` (where the ``tokens`` section's access tokens are kept;
``token_provider`` builds on it) and, when ``Backend.inbox`` is true, ``inbox(config)``.
"""

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Dict, Optional

from generic_connector import defaults

if TYPE_CHECKING:
    from generic_connector.config import ChannelConfig
    from generic_connector.conversations import ConversationStore
    from generic_connector.fetch import Fetcher
    from generic_connector.idempotency import IdempotencyStore
    from generic_connector.outbox import Outbox
    from generic_connector.pipeline import Inbox
    from generic_connector.presence import Presence
    from generic_connector.tokens import TokenProvider


@dataclass(frozen=True)
class Backend:
    module: str
    shared: bool  # several replicas share its state
    inbox: bool  # it can store messages before they are handled


BACKENDS: Dict[str, Backend] = {
    "memory": Backend("generic_connector.stores.memory", shared=False, inbox=False),
    "redis": Backend("generic_connector.stores.redis", shared=True, inbox=True),
}


@dataclass(frozen=True)
class Parts:
    """What a channel is built with; None where its configuration needs no such part."""

    store: Optional["IdempotencyStore"] = None
    outbox: Optional["Outbox"] = None
    inbox: Optional["Inbox"] = None
    fetcher: Optional["Fetcher"] = None  # request.fetch's requests, with the outbox's tokens
    # What the channel remembers per conversation (reply addresses, pauses, offered buttons).
    conversations: Optional["ConversationStore"] = None
    presence: Optional["Presence"] = None  # outbound.presence, with the outbox's tokens


def needs_inbox(config: "ChannelConfig") -> bool:
    """Messages stored before they are handled: early acknowledgement, or ``defer`` on a
    backend that can store them (so that a replica killed after the deferred answer loses
    none)."""
    if config.request.ack == "early":
        return True
    return config.defer is not None and BACKENDS[config.store.type].inbox


def dedup_store(config: "ChannelConfig") -> Optional["IdempotencyStore"]:
    """The channel's de-duplication store; none when messages have no id or the window is 0."""
    if config.request.message_id is None or config.idempotency.window <= 0:
        return None
    store: IdempotencyStore = _module(config).dedup_store(config)
    return store


def build(config: "ChannelConfig") -> Parts:
    """Every part the channel's configuration needs, from its ``store.type``."""
    from generic_connector.fetch import HTTPFetcher

    module = _module(config)
    tokens = token_provider(config)  # one per channel: outbound and fetch share its cache
    fetches = bool(config.request.fetch or config.request.download)
    return Parts(
        store=dedup_store(config),
        outbox=module.outbox(config, tokens) if config.outbound else None,
        inbox=module.inbox(config) if needs_inbox(config) else None,
        fetcher=HTTPFetcher(tokens, owns_tokens=not config.outbound) if fetches else None,
        conversations=module.conversations(config),
        presence=_presence(config, tokens),
    )


def _presence(config: "ChannelConfig", tokens: Optional["TokenProvider"]) -> Optional["Presence"]:
    from generic_connector.presence import Presence

    outbound = config.outbound
    if outbound is None or outbound.presence is None:
        return None
    return Presence(config.name, outbound, outbound.presence, tokens)


def token_provider(config: "ChannelConfig") -> Optional["TokenProvider"]:
    """The channel's access tokens, kept in its backend's token cache; None without ``tokens``."""
    from generic_connector.tokens import TokenProvider

    if not config.tokens:
        return None
    outbound = config.outbound
    return TokenProvider(
        config.name,
        config.tokens,
        _module(config).token_cache(config),
        allow_hosts=outbound.allow_hosts if outbound else None,
        timeout=outbound.timeout if outbound else defaults.OUTBOUND_TIMEOUT,
    )


def _module(config: "ChannelConfig") -> ModuleType:
    return importlib.import_module(BACKENDS[config.store.type].module)
