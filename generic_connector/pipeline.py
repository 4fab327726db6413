"""The request pipeline: every request goes through the same named stages, in this order.

    limits → auth → decode → (auth by a body field) → handshakes → events → fetch → mapping
    (receipts, ignore rules, fields) → handover → numbered answers → early acknowledgement
    → de-duplication and Rasa → answer → outbound

Each stage is a small function of the pipeline and the request's ``Exchange`` — a coroutine
function where it awaits I/O (auth keys, fetches, Rasa, outbox), a plain one otherwise, which
saves a coroutine per stage and request. It knows nothing of Sanic or Rasa, and either lets
the request go on, sets the answer (a handshake, a deferred answer), or raises ``HTTPError``.
The channel runs this pipeline with Rasa as the ``Assistant``; the dry run and the mapping
test cases run the same one with sample replies.
"""

import asyncio
import base64
import hashlib
import itertools
import os
import re
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Protocol, Tuple

from generic_connector import defaults, stores
from generic_connector import handover as handovers
from generic_connector.answers import Rendered, RenderError
from generic_connector.auth import AuthFailed, AuthUnavailable
from generic_connector.config import ChannelConfig
from generic_connector.conversations import (
    OFFERED,
    PAUSED,
    REPLY_TO,
    ConversationStore,
    MemoryConversations,
)
from generic_connector.errors import HTTPError, Unavailable
from generic_connector.expressions import EvaluationError, truthy
from generic_connector.fallback import chosen, replies_as_text, unrendered
from generic_connector.fetch import Fetcher, FetchFailed, HTTPFetcher, fetched_event
from generic_connector.functions import Scope
from generic_connector.handover import HELD, PAUSE
from generic_connector.idempotency import IdempotencyStore, Replies
from generic_connector.limits import split_replies
from generic_connector.logtext import get_logger
from generic_connector.mapping import Extracted, IgnoreRule, MappingError
from generic_connector.metrics import ChannelMetrics
from generic_connector.outbox import Outbox
from generic_connector.presence import Presence
from generic_connector.request import IncomingRequest, decode_body, dumps, valid_unicode
from generic_connector.routes import BODY_METHODS

logger = get_logger(__name__)


class Assistant:
    """What the pipeline hands user messages to: Rasa in the channel, samples in the dry run."""

    def ready(self) -> bool:
        """False while the assistant cannot take messages (the model is loading)."""
        return True

    async def handle(self, message: Extracted) -> Replies:
        """The bot's messages for one user message, in order."""
        raise NotImplementedError


class Inbox(Protocol):
    """Where stored messages wait for the assistant (``request.ack: early``, and ``defer`` on a
    shared store): ``stores.redis.inbox.RedisInbox``; its workers give each to ``handle_stored``."""

    async def put(self, entries: List[Dict[str, Any]]) -> None:
        """Store the entries durably; raise ``Unavailable`` when they could not be."""

    async def start(self, handler: Callable[[Dict[str, Any]], Awaitable[None]]) -> None:
        """Begin handing stored entries to ``handler``; raise when the store is unreachable."""

    async def close(self) -> None:
        """Stop the workers."""

    @property
    def worker(self) -> "Optional[asyncio.Task[None]]":
        """This process's reading worker (None before ``start``)."""


class Exchange:
    """One request on its way through the stages, and what each stage made of it."""

    __slots__ = (
        "request", "request_id", "now", "body", "scope", "answer", "handshake", "refusal",
        "deferred", "events", "messages", "ignored", "replies", "fresh", "outbound", "problem",
        "held",
    )  # fmt: skip

    def __init__(self, request: IncomingRequest, request_id: str, now: float) -> None:
        self.request = request
        self.request_id = request_id
        self.now = now
        self.body: Any = {}
        self.scope = Scope(request)
        self.answer: Optional[Rendered] = None
        self.handshake: Optional[str] = None  # the name of the handshake that answered
        self.refusal: Optional[HTTPError] = None
        self.deferred = False  # answered before the assistant was done (``defer``)
        self.events: List[Any] = []
        self.messages: List[Extracted] = []
        self.ignored: List[Tuple[int, str]] = []
        # Per message: the bot's replies, and whether they are new (not a duplicate's).
        self.replies: List[Replies] = []
        self.fresh: List[bool] = []
        self.outbound: List[Awaitable[Any]] = []
        # What failed after the messages were handled (the answer could not be rendered).
        self.problem: Optional[str] = None
        # Messages of paused conversations (``handover``): acknowledged, not handed over.
        self.held: List[Extracted] = []

    @property
    def sender(self) -> Optional[str]:
        first = self.messages or self.held
        return first[0].sender_id if first else None


class Pipeline:
    """A channel's stages, shared by ``rasa run``, the dry run and the mapping test cases."""

    def __init__(
        self,
        config: ChannelConfig,
        store: Optional[IdempotencyStore] = None,
        outbox: Optional[Outbox] = None,
        clock: Callable[[], float] = time.time,
        fetcher: Optional[Fetcher] = None,
    ) -> None:
        self.config = config
        self.store = store
        self.outbox = outbox
        self.clock = clock
        fetches = config.request.fetch or config.request.download
        self.fetcher = fetcher or (HTTPFetcher() if fetches else None)
        self.metrics = ChannelMetrics(config.name)
        # Where stored messages wait for the assistant (request.ack: early; defer on a
        # shared store), and the deferring requests waiting for their replies, by entry.
        self.inbox: Optional[Inbox] = None
        # What the channel remembers per conversation (the channel sets its store's).
        self.conversations: ConversationStore = MemoryConversations()
        self.presence: Optional[Presence] = None  # outbound.presence (the channel sets it)
        self.waiters: Dict[str, asyncio.Future[Replies]] = {}
        # Every stage, in order; those the configuration has nothing for are left out once
        # here instead of returning at once on every request.
        stages = [
            check_limits,
            authenticate if config.auth and not config.auth.needs_body else None,
            decode,
            authenticate_body if config.auth and config.auth.needs_body else None,
            answer_handshake,
            select_events,
            fetch_data if config.request.fetch else None,
            map_events,
            apply_handover if config.handover else None,
            download_attachments if config.request.download else None,
            remember_reply_addresses if config.request.conversation else None,
            announce_presence if config.outbound and config.outbound.presence else None,
            map_numbered_answers if _numbers_buttons(config) else None,
            acknowledge_early if config.request.ack == "early" else None,
            # de-duplication and Rasa, message by message
            hand_to_assistant_or_defer if config.defer else hand_to_assistant,
            render_answer,
            send_outbound if config.outbound else None,
        ]
        self.stages = [stage for stage in stages if stage is not None]

    async def run(
        self,
        request: IncomingRequest,
        assistant: Assistant,
        now: Optional[float] = None,
        known_id: Optional[str] = None,
    ) -> Tuple[Exchange, Rendered]:
        """Take a request through every stage; every refusal and failure becomes JSON here.

        The answer goes out with the exchange's ``request_id`` as ``X-Request-ID``:
        ``known_id`` when the channel gave the request one already, else ``request_id``'s.
        """
        given = known_id or request_id(request)
        exchange = Exchange(request, given, self.clock() if now is None else now)
        exchange.scope.clock = self.clock  # now() reads the pipeline's clock
        try:
            for stage in self.stages:
                pending = stage(self, exchange, assistant)
                if pending is not None:  # a coroutine: the stage awaits I/O
                    await pending
                if exchange.answer is not None and stage is not render_answer:
                    break
            answer = exchange.answer
        except Exception as error:
            refusal = self.answer_for(exchange, error)
            if refusal is None:
                logger.exception(
                    "Channel %s: request %s from sender %s failed",
                    self.config.name, exchange.request_id, exchange.sender,
                    extra=log_fields(self, exchange, "request.failed", status=500),
                )  # fmt: skip
                answer = self.refusal(exchange, HTTPError(500, "the request could not be handled"))
            else:
                exchange.refusal = refusal
                answer = self.refusal(exchange, refusal)
                if isinstance(error, AuthFailed) and self.config.auth is not None:
                    # ``auth.refusal.body``: the platform's own refusal, when it has one.
                    own = self.config.auth.refusal_answer(exchange.scope.body, exchange.scope)
                    answer = own or answer
        assert answer is not None
        self.metrics.requests[answer.status] += 1
        return exchange, answer

    def answer_for(self, exchange: Exchange, error: Exception) -> Optional[HTTPError]:
        """What the platform is answered when a stage raised ``error``: ``ANSWERS``' first row
        for its type (None: not a request's fate, a bug). Unavailable parts are logged here."""
        for kind, answer, logged in ANSWERS:
            if isinstance(error, kind):
                if logged:
                    logger.error(
                        "Channel %s: request %s from sender %s: %s: %s",
                        self.config.name, exchange.request_id, exchange.sender, logged, error,
                        extra=log_fields(self, exchange, "request.failed", reason=logged),
                    )  # fmt: skip
                return answer(self, error)
        return None

    def refusal(self, exchange: Exchange, error: HTTPError) -> Rendered:
        """The JSON error answer; refusals are logged once, failures (5xx) where they happen."""
        if error.status < 500:
            reason = error.reason or error.message
            logger.info(
                "Channel %s: request %s refused with %d: %s",
                self.config.name, exchange.request_id, error.status, reason,
                extra=log_fields(
                    self, exchange, "request.refused", status=error.status, reason=reason
                ),
            )  # fmt: skip
        body = dumps(error.body()).encode("utf-8")
        return Rendered(body, "application/json", error.status, error.headers)


def check_limits(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """Bodies over ``limits.max_body`` are refused before anything reads them."""
    limit = pipeline.config.limits.max_body
    if len(exchange.request.body) > limit:
        raise HTTPError(413, f"request body is larger than {limit} bytes")


async def authenticate(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """The ``auth`` schemes, on every request but a handshake's GET (verification challenges
    are not signed); a token in a body field waits for ``decode``."""
    if _authenticated(pipeline, exchange.request):
        await _check_auth(pipeline, exchange, None)


def _authenticated(pipeline: Pipeline, request: IncomingRequest) -> bool:
    if request.method != "GET":
        return True
    return (request.method, request.path) in pipeline.config.message_routes


def decode(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """The body as JSON or form fields, checked (Unicode, integer sizes, field counts); none
    for methods without one (GET, DELETE); null for an empty body, which only a handshake
    answers (``answer_handshake``)."""
    request, config = exchange.request, pipeline.config
    if request.method not in BODY_METHODS:
        exchange.body = {}
    else:
        mapping = config.request
        exchange.body = decode_body(
            request, mapping.format, mapping.events is not None, config.limits.max_form_fields
        )
    exchange.scope.body = exchange.body


async def authenticate_body(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """The ``auth`` schemes that read a body field (a token in the payload)."""
    if _authenticated(pipeline, exchange.request):
        await _check_auth(pipeline, exchange, exchange.body)


async def _check_auth(pipeline: Pipeline, exchange: Exchange, body: Any) -> None:
    auth = pipeline.config.auth
    assert auth is not None  # the auth stages run only with an auth section
    await auth.check(exchange.request, body, exchange.now)  # AuthFailed: 401 (ANSWERS)


def answer_handshake(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """Verification challenges answered from their templates; other routes need a handshake,
    and a request without a body that no handshake answered carries no message (400)."""
    request, scope = exchange.request, exchange.scope
    for handshake in pipeline.config.handshakes:
        if handshake.matches(request.method, request.path, exchange.body, scope):
            logger.debug("Channel %s: handshake %r", pipeline.config.name, handshake.name)
            if not handshake.verified(exchange.body, scope):
                raise HTTPError(403, "verification failed")
            exchange.handshake = handshake.name
            exchange.answer = handshake.answer(exchange.body, scope)
            return
    if (request.method, request.path) not in pipeline.config.message_routes:
        raise HTTPError(
            400, f"no handshake of this channel matches {request.method} {request.path}"
        )
    if exchange.body is None:
        expected = _EXPECTED_BODY.get(pipeline.config.request.format, "a body")
        raise HTTPError(400, f"request body is empty; this channel reads messages from {expected}")


# What a message route's body holds, by ``request.format``, for the refusal of an empty one.
_EXPECTED_BODY = {
    "json": "a JSON body",
    "xml": "an XML body",
    "auto": "a JSON, form or XML body",
}


def select_events(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """The body itself, or what ``request.events`` selects; at most ``limits.max_events``."""
    exchange.events = pipeline.config.request.select_events(exchange.body, exchange.scope)
    limit = pipeline.config.limits.max_events
    if len(exchange.events) > limit:
        raise HTTPError(
            413, f"the request holds {len(exchange.events)} events; this channel takes {limit}"
        )


async def fetch_data(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """``request.fetch``: each event's requests to the platform, answers as ``fetched``."""
    templates = pipeline.config.request.fetch
    if not templates or pipeline.fetcher is None:
        return
    for index, event in enumerate(exchange.events):
        exchange.events[index] = await fetched_event(
            event, templates, pipeline.fetcher, exchange.scope
        )


async def remember_reply_addresses(
    pipeline: Pipeline, exchange: Exchange, assistant: Assistant
) -> None:
    """Each conversation's reply address (user, conversation, thread), kept by Rasa's
    sender_id, so that what Rasa sends on its own later goes where the conversation is."""
    for message in {m.sender_id: m for m in exchange.messages}.values():
        await pipeline.conversations.put(
            REPLY_TO, message.sender_id, message.reply_to, defaults.REPLY_TO_TTL
        )


async def download_attachments(
    pipeline: Pipeline, exchange: Exchange, assistant: Assistant
) -> None:
    """``request.download``: each attachment's content got from the platform (with its
    token) into its metadata as ``data`` (base64), with ``mime`` and ``size``; the URL it was
    got from, which may hold the token, is kept nowhere. One larger than ``max_size`` gets
    ``error`` instead of ``data``; one that cannot be got answers 503, so the platform retries."""
    download = pipeline.config.request.download
    if download is None or pipeline.fetcher is None:
        return
    for message in exchange.messages:
        for attachment in (message.metadata or {}).get("attachments") or []:
            seen = {"attachment": attachment, "event": message.event}
            if not download.template.wanted(seen, exchange.scope):
                continue
            request = download.template.render(seen, exchange.scope)
            got = await pipeline.fetcher.download(request, download.template, download.max_size)
            if got.body is None:
                attachment["error"] = f"larger than {download.max_size} bytes; not downloaded"
                continue
            attachment["data"] = base64.b64encode(got.body).decode("ascii")
            attachment["size"] = len(got.body)
            if got.mime and "mime" not in attachment:
                attachment["mime"] = got.mime.split(";")[0].strip()


def announce_presence(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """``outbound.presence`` (typing, read) for each message, in the background."""
    if pipeline.presence is not None:
        for message in exchange.messages:
            pipeline.presence.announce(message, _outbound_scope(exchange))


def map_events(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """Ignore rules, then the fields of each event; all are mapped before any reaches Rasa."""
    mapping, name = pipeline.config.request, pipeline.config.name
    for index, event in enumerate(exchange.events):
        if mapping.receipts and _receipt(pipeline, exchange, index, event):
            continue
        mapped = mapping.map(event, exchange.scope)
        if isinstance(mapped, IgnoreRule):
            logger.info("Channel %s: event %d ignored by rule %r", name, index, mapped.name)
            exchange.ignored.append((index, mapped.name))
            pipeline.metrics.ignored[mapped.name] += 1
        elif not valid_unicode(mapped[:5]):
            # Headers and query parameters can carry what the body's decoding refused (Sanic
            # keeps undecodable header bytes as lone surrogates); Rasa's SQL tracker store
            # stops the whole process on one.
            raise HTTPError(400, f"event {index} maps to text that is not valid Unicode")
        else:
            exchange.messages.append(mapped)


def _receipt(pipeline: Pipeline, exchange: Exchange, index: int, event: Any) -> bool:
    """``request.receipts``: whether the event is a receipt; one is counted, then ignored (as
    ``receipt: <name>``), or given to the assistant as ``request.receipts_intent``."""
    mapping = pipeline.config.request
    rule = mapping.receipt(event, exchange.scope)
    if rule is None:
        return False
    pipeline.metrics.receipts[rule.name] += 1
    if mapping.receipts_intent is None:
        ignored = f"receipt: {rule.name}"
        logger.info(
            "Channel %s: event %d ignored by rule %r",
            pipeline.config.name, index, ignored,
        )  # fmt: skip
        exchange.ignored.append((index, ignored))
    else:
        exchange.messages.append(mapping.receipt_message(rule, event, exchange.scope))
    return True


async def apply_handover(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """``handover``: events that ``pause_when`` or ``resume_when`` is true for pause or resume
    their conversation; then the messages of a paused conversation are held (``hold``)."""
    config = pipeline.config
    assert config.handover is not None  # this stage runs only with a handover section
    ignored = {index for index, _ in exchange.ignored}
    messages = iter(exchange.messages)
    kept: List[Extracted] = []
    for index, event in enumerate(exchange.events):
        change = config.handover.change(event, exchange.scope)
        if change is not None:
            await _change_pause(pipeline, exchange, event, change)
        if index in ignored:
            continue
        message = next(messages)
        if await pipeline.conversations.get(PAUSED, message.sender_id) is None:
            kept.append(message)
            continue
        await hold(pipeline, exchange, message)
        exchange.ignored.append((index, HELD))  # a failed batch's event numbers skip it
        exchange.held.append(message)
    exchange.messages = kept


async def _change_pause(pipeline: Pipeline, exchange: Exchange, event: Any, change: str) -> None:
    config = pipeline.config
    assert config.handover is not None
    conversation = config.handover.conversation_of(event, exchange.scope, config.request.sender)
    if conversation is None:
        logger.warning(
            "Channel %s: request %s: a %s rule matched an event without a conversation id",
            config.name, exchange.request_id, change,
        )  # fmt: skip
        return
    if change == PAUSE:
        rule = "pause_when"
        await handovers.pause(
            pipeline.conversations, conversation, rule, exchange.now, config.handover.timeout
        )
    else:
        rule = "resume_when"
        await handovers.resume(pipeline.conversations, conversation)
    logger.info(
        "Channel %s: conversation %s %sd by handover.%s",
        config.name, conversation, change, rule,
        extra=log_fields(
            pipeline, exchange, f"conversation.{change}d", conversation=conversation, rule=rule
        ),
    )  # fmt: skip


async def hold(pipeline: Pipeline, exchange: Exchange, message: Extracted) -> None:
    """A message of a paused conversation: acknowledged without the assistant, logged (never
    its text), counted, and relayed with ``handover.relay`` through the outbox; a message id
    already held is not relayed again."""
    config = pipeline.config
    assert config.handover is not None
    logger.info(
        "Channel %s: request %s: message %s of paused conversation %s held, not handed over",
        config.name, exchange.request_id, message.message_id, message.sender_id,
        extra=log_fields(
            pipeline, exchange, "conversation.held",
            conversation=message.sender_id, message_id=message.message_id,
        ),
    )  # fmt: skip
    pipeline.metrics.paused += 1
    if not config.handover.relays or config.outbound is None or pipeline.outbox is None:
        return
    key = dedup_key(pipeline, message)
    if key is not None and await _store_of(pipeline).claim(key) is not None:
        return  # relayed before: the platform sent it again
    try:
        scope = _outbound_scope(exchange)
        try:
            request = config.handover.relay_request(config.outbound, message, scope)
        except (EvaluationError, RenderError) as error:
            logger.error(
                "Channel %s: message %s of paused conversation %s was not relayed: %s",
                config.name, message.message_id, message.sender_id, error,
            )  # fmt: skip
        else:
            exchange.outbound.append(await pipeline.outbox.put(message.sender_id, [request]))
    except BaseException:
        if key is not None:
            await _store_of(pipeline).release(key)
        raise
    if key is not None:
        await _store_of(pipeline).finish(key, [])


async def acknowledge_early(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """``request.ack: early``: the messages are stored durably and the webhook answered now;
    the inbox's workers hand them to the assistant (``handle_stored``)."""
    entries = [_stored(message, exchange.request_id) for message in exchange.messages]
    if entries:
        assert pipeline.inbox is not None  # the channel makes one for request.ack: early
        await pipeline.inbox.put(entries)  # Unavailable: 503, the platform sends it again
    exchange.answer = pipeline.config.response.render(
        [], exchange.body, exchange.sender, exchange.scope
    )


def _stored(message: Extracted, request_id: str) -> Dict[str, Any]:
    """An inbox entry: one mapped message, as JSON."""
    return {
        "sender": message.sender_id,
        "text": message.text,
        "input_channel": message.input_channel,
        "metadata": message.metadata,
        "message_id": message.message_id,
        "event": message.event,
        "request_id": request_id,
    }


async def handle_stored(pipeline: Pipeline, entry: Dict[str, Any], assistant: Assistant) -> None:
    """One stored message: de-duplication, the assistant, outbound; raising makes the inbox
    hand it over again (and to the dead letters after too many attempts). The replies of a
    deferring request still waiting in this process go to it instead of outbound."""
    message = Extracted(
        entry["sender"],
        entry["text"],
        entry["input_channel"],
        entry.get("metadata"),
        entry.get("message_id"),
        entry.get("event"),
    )
    request = IncomingRequest.from_parts(b"")
    exchange = Exchange(request, entry.get("request_id") or unique_id(), pipeline.clock())
    exchange.scope.clock = pipeline.clock
    exchange.messages = [message]
    exchange.body = message.event
    await hand_to_assistant(pipeline, exchange, assistant)
    waiter = pipeline.waiters.get(entry.get("waiter", ""))
    if waiter is not None and not waiter.done():
        waiter.set_result(exchange.replies[0])  # in time: the request's answer carries them
        return
    exchange.deferred = True  # answered without these replies (deferred, or acknowledged early)
    if pipeline.config.outbound is not None:
        await send_outbound(pipeline, exchange, assistant)


def _unauthorized(pipeline: Pipeline, error: Any) -> HTTPError:
    auth = pipeline.config.auth
    assert auth is not None
    headers = auth.refusal_headers()
    return HTTPError(auth.refusal_status, "unauthorized", headers, reason=str(error))


def _later(message: str) -> Callable[[Pipeline, Any], HTTPError]:
    return lambda pipeline, error: HTTPError(503, message, {"Retry-After": "5"})


# What a stage's exception answers, in one place: the first row whose type matches; the third
# column, when set, logs the error (a part of ours or the platform's is down). Anything else is
# a bug: 500, with its traceback in the log.
ANSWERS: Tuple[Tuple[type, Callable[[Pipeline, Any], HTTPError], str], ...] = (
    (HTTPError, lambda pipeline, error: error, ""),
    (AuthFailed, _unauthorized, ""),
    (AuthUnavailable, _later("authentication is unavailable; retry later"), "authentication"),
    (FetchFailed, _later("the message could not be fetched from the platform; retry later"),
     "fetching"),
    (Unavailable, _later("the channel's store is unavailable; retry later"), "store"),
    (MappingError, lambda pipeline, error: HTTPError(
        422, error.message, field=error.field, expression=error.expression), ""),
    (EvaluationError, lambda pipeline, error: HTTPError(
        422, str(error), expression=error.expression), ""),
)  # fmt: skip


async def hand_to_assistant(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """Each message to the assistant in order, unless the same delivery was handled before."""
    if exchange.messages and not assistant.ready():
        # Rasa would drop the message and answer nothing.
        raise HTTPError(503, "the assistant is not ready yet; retry later", {"Retry-After": "5"})
    failures: List[Tuple[int, HTTPError]] = []
    for index, message in enumerate(exchange.messages):
        try:
            await _hand_over(pipeline, exchange, assistant, message)
        except HTTPError as error:  # the others are handled all the same
            failures.append((index, error))
            exchange.replies.append([])
            exchange.fresh.append(False)
        if index % YIELD_EVERY == YIELD_EVERY - 1:
            await asyncio.sleep(0)  # a long batch does not hold up other channels' requests
    if failures:
        raise _batch_failure(exchange, failures)


# Messages of one batch handed over between two turns given to the other requests.
YIELD_EVERY = 20


def _batch_failure(exchange: Exchange, failures: List[Tuple[int, HTTPError]]) -> HTTPError:
    """One honest answer for a batch where some messages could not be handled: the status of
    the first failure (the platform sends the batch again), and which messages failed. Those
    handled are remembered (with ``message_id``), so that the retry hands over only the rest.
    ``failed_events`` are the failed messages' positions in the request's events."""
    first = failures[0][1]
    if len(exchange.messages) == 1:
        return first
    ignored = {number for number, _ in exchange.ignored}
    events = [number for number in range(len(exchange.events)) if number not in ignored]
    failed = [events[number] for number, _ in failures]
    total = len(exchange.messages)
    message = f"{len(failed)} of {total} messages could not be handled; retry later"
    return HTTPError(first.status, message, first.headers, failed_events=failed)


async def hand_to_assistant_or_defer(
    pipeline: Pipeline, exchange: Exchange, assistant: Assistant
) -> None:
    """``hand_to_assistant``, but an assistant slower than ``defer.after`` gets the deferred
    answer sent at once; its replies then go through outbound when they come. With a shared
    store the messages are stored first (``_store_then_wait``). A request that ``defer.when``
    is not true for waits for the assistant, as without ``defer``."""
    defer = pipeline.config.defer
    assert defer is not None  # this stage runs only with a defer section
    if defer.when is not None and not truthy(defer.when.search(exchange.body, exchange.scope)):
        await hand_to_assistant(pipeline, exchange, assistant)
        return
    if pipeline.inbox is not None:
        await _store_then_wait(pipeline, exchange)
        return
    work = asyncio.ensure_future(hand_to_assistant(pipeline, exchange, assistant))
    done, _ = await asyncio.wait({work}, timeout=defer.after)
    if work in done:
        work.result()  # raises what handing over raised
        return
    _answer_deferred(pipeline, exchange)
    work.add_done_callback(lambda _: asyncio.ensure_future(_deliver_late(pipeline, exchange, work)))


async def _store_then_wait(pipeline: Pipeline, exchange: Exchange) -> None:
    """``defer`` with a shared store: the messages are in the inbox before anything else, so
    that a replica that dies after the deferred answer loses none; the inbox's workers hand
    them over (``handle_stored``), and give this request the replies that come within
    ``defer.after``. Later ones go through outbound from the worker that handled them."""
    if not exchange.messages:
        return
    assert pipeline.inbox is not None and pipeline.config.defer is not None
    loop = asyncio.get_running_loop()
    waiting: Dict[str, asyncio.Future[Replies]] = {}
    entries = []
    for message in exchange.messages:
        entry = _stored(message, exchange.request_id)
        entry["waiter"] = unique_id()
        waiting[entry["waiter"]] = loop.create_future()
        entries.append(entry)
    pipeline.waiters.update(waiting)
    try:
        await pipeline.inbox.put(entries)  # Unavailable: 503, the platform sends it again
        await asyncio.wait(waiting.values(), timeout=pipeline.config.defer.after)
    finally:
        for key in waiting:  # from now on, late replies go through outbound
            del pipeline.waiters[key]
    for future in waiting.values():
        exchange.replies.append(future.result() if future.done() else [])
        exchange.fresh.append(future.done())
    if all(exchange.fresh):
        return
    _answer_deferred(pipeline, exchange)  # send_outbound sends the replies that were in time


def _answer_deferred(pipeline: Pipeline, exchange: Exchange) -> None:
    defer = pipeline.config.defer
    assert defer is not None
    logger.info(
        "Channel %s: request %s: the assistant takes longer than %g s; answered deferred",
        pipeline.config.name, exchange.request_id, defer.after,
    )  # fmt: skip
    exchange.deferred = True
    exchange.answer = defer.response.render([], exchange.body, exchange.sender, exchange.scope)


async def _deliver_late(
    pipeline: Pipeline, exchange: Exchange, work: "asyncio.Future[None]"
) -> None:
    """The replies of a deferred request, through outbound; a failure can only be logged."""
    if work.cancelled() or work.exception() is not None:
        logger.error(
            "Channel %s: request %s was answered deferred, and then failed: %s",
            pipeline.config.name, exchange.request_id, work.exception() or "cancelled",
        )  # fmt: skip
        return
    await send_outbound(pipeline, exchange, Assistant())


async def _hand_over(
    pipeline: Pipeline, exchange: Exchange, assistant: Assistant, message: Extracted
) -> None:
    """One message to the assistant, or its earlier replies when it was handled before."""
    key = dedup_key(pipeline, message)
    earlier = await _store_of(pipeline).claim(key) if key is not None else None
    if earlier is not None:
        logger.info(
            "Channel %s: message %s from sender %s was already handled; not handled again",
            pipeline.config.name, message.message_id, message.sender_id,
        )  # fmt: skip
        exchange.replies.append(earlier)
        exchange.fresh.append(False)
        pipeline.metrics.duplicates += 1
        return
    started = time.perf_counter()
    try:
        replies = await assistant.handle(message)
    except BaseException as error:  # cancelled too: the platform will retry
        if key is not None:
            await _store_of(pipeline).release(key)
        if isinstance(error, HTTPError) or not isinstance(error, Exception):
            raise
        logger.exception(
            "Channel %s: request %s: the assistant failed to handle the message from "
            "sender %s",
            pipeline.config.name, exchange.request_id, message.sender_id,
            extra=log_fields(pipeline, exchange, "assistant.failed", sender=message.sender_id),
        )  # fmt: skip
        raise HTTPError(500, "the assistant could not handle the message; retry later") from None
    pipeline.metrics.handled(time.perf_counter() - started)
    config = pipeline.config
    if replies and config.outbound and pipeline.outbox is not None and config.defer is None:
        # In the outbox before the id is remembered as handled: were the outbox unreachable,
        # the platform's retry must be handled again, not answered from memory unsent.
        try:
            exchange.outbound.append(
                await deliver(
                    pipeline,
                    message.sender_id,
                    replies,
                    message,
                    _outbound_scope(exchange),
                )
            )
        except BaseException:
            if key is not None:
                await _store_of(pipeline).release(key)
            raise
    if key is not None:
        # A duplicate gets the same answer: the replies are kept when the answer shows them.
        kept = replies if pipeline.config.response.reads_messages else []
        await _store_of(pipeline).finish(key, kept)
    exchange.replies.append(replies)
    exchange.fresh.append(True)


def make_store(config: ChannelConfig) -> Optional[IdempotencyStore]:
    """The channel's idempotency store; none when messages have no id or the window is 0."""
    return stores.dedup_store(config)


def dedup_key(pipeline: Pipeline, message: Extracted) -> Optional[str]:
    """The de-duplication key of a message, or None when it is not de-duplicated."""
    if pipeline.store is None or message.message_id is None:
        return None
    # The channel's name too: a shared store serves several channels. A digest, so that the
    # store holds 32 characters per message whatever the length of its text.
    parts = (pipeline.config.name, message.sender_id, message.message_id, message.text)
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).hexdigest()


def _store_of(pipeline: Pipeline) -> IdempotencyStore:
    """The store a de-duplication key is kept in: ``dedup_key`` gives keys only with one."""
    assert pipeline.store is not None
    return pipeline.store


def render_answer(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """The ``response`` template over every reply, in the order of the messages; a template
    that fails after the messages were handled still acknowledges them (200)."""
    replies = [reply for replies in exchange.replies for reply in replies]
    try:
        exchange.answer = pipeline.config.response.render(
            replies, exchange.body, exchange.sender, exchange.scope
        )
    except (EvaluationError, RenderError) as error:
        logger.error(
            "Channel %s: request %s: the answer could not be rendered: %s",
            pipeline.config.name, exchange.request_id, error,
            extra=log_fields(pipeline, exchange, "answer.failed"),
        )  # fmt: skip
        if not exchange.messages:
            raise HTTPError(500, "the answer could not be rendered") from None
        exchange.problem = f"the answer could not be rendered: {error}"
        # Rasa has handled the messages: a 5xx would make the platform send them again.
        body = {"error": "the answer could not be rendered", "handled": True}
        exchange.answer = Rendered(dumps(body).encode("utf-8"), "application/json", 200, {})


async def send_outbound(pipeline: Pipeline, exchange: Exchange, assistant: Assistant) -> None:
    """New replies through the platform's API, each matched to the message it answers.

    They were put in the outbox as each message was handled (``_hand_over``); this waits for
    their delivery with ``outbound.wait``. With ``defer``, the replies of a deferred request are
    put in the outbox here, and those in time are not sent (the answer carried them).
    """
    outbound = pipeline.config.outbound
    if outbound is None or pipeline.outbox is None:
        return
    if pipeline.config.defer is not None:
        if not exchange.deferred:
            return
        scope = _outbound_scope(exchange)
        for message, replies, fresh in zip(exchange.messages, exchange.replies, exchange.fresh):
            if fresh and replies:
                delivered = await deliver(pipeline, message.sender_id, replies, message, scope)
                exchange.outbound.append(delivered)
    if outbound.wait:
        for delivered in exchange.outbound:
            await delivered


def _outbound_scope(exchange: Exchange) -> Scope:
    """What outbound templates' env() and header() read: the request and its decoded body (the
    dry run shows variables by name through its own ``Outbound``, ``cli.dryrun.ShownOutbound``)."""
    return Scope(exchange.request, exchange.body)


async def deliver(
    pipeline: Pipeline,
    recipient: str,
    replies: Replies,
    source: Optional[Extracted],
    scope: Optional[Scope] = None,
) -> Awaitable[Any]:
    """Render the replies' API requests and put them in the outbox; the awaitable is their
    delivery. Also for the messages Rasa sends on its own."""
    outbound = pipeline.config.outbound
    assert outbound is not None and pipeline.outbox is not None
    reply_to: Optional[Dict[str, Any]] = None
    if source is not None:
        reply_to = source.reply_to
    elif pipeline.config.request.conversation is not None:  # Rasa sends on its own
        reply_to = await pipeline.conversations.get(REPLY_TO, recipient)
    replies = await _as_text(pipeline, recipient, replies)
    replies = split_replies(replies, outbound.max_text)  # longer texts in several messages
    requests, problems = outbound.render_replies(replies, recipient, source, scope, reply_to)
    for problem in problems:
        logger.error(
            "Channel %s: a reply for conversation %s was not sent: %s",
            pipeline.config.name, recipient, problem,
            extra=log_fields(pipeline, None, "delivery.failed", conversation=recipient),
        )  # fmt: skip
    return await pipeline.outbox.put(recipient, requests)


async def _as_text(pipeline: Pipeline, recipient: str, replies: Replies) -> Replies:
    """``outbound.renders``: the parts the platform cannot show written as text; the buttons
    offered as numbers are remembered for the conversation (``map_numbered_answers``)."""
    outbound = pipeline.config.outbound
    assert outbound is not None
    kinds = unrendered(outbound.renders)
    if not kinds:
        return replies
    replies, offer = replies_as_text(replies, kinds, outbound.numbered)
    if offer is not None:
        await pipeline.conversations.put(OFFERED, recipient, offer, defaults.OFFERED_TTL)
    return replies


def _numbers_buttons(config: ChannelConfig) -> bool:
    """Whether the channel offers buttons as numbered text (its platform shows none)."""
    return config.outbound is not None and "buttons" in unrendered(config.outbound.renders)


async def map_numbered_answers(
    pipeline: Pipeline, exchange: Exchange, assistant: Assistant
) -> None:
    """A user's answer naming a button last offered as numbered text (its number or title)
    becomes that button's payload, as a press of it would; the offer is then forgotten."""
    for index, message in enumerate(exchange.messages):
        offer = await pipeline.conversations.get(OFFERED, message.sender_id)
        payload = chosen(offer, message.text) if offer is not None else None
        if payload is not None:
            exchange.messages[index] = message._replace(text=payload)
            await pipeline.conversations.delete(OFFERED, message.sender_id)


def request_id(request: IncomingRequest) -> str:
    """The caller's ``X-Request-ID`` when it is a short token, else a new one."""
    return request_id_of(request.header("X-Request-ID"))


def request_id_of(given: Optional[str]) -> str:
    """``given`` (a caller's ``X-Request-ID``) when it is a short token, else a new id."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return unique_id()


def log_fields(
    pipeline: Pipeline, exchange: Optional[Exchange], event: str, **more: Any
) -> Dict[str, Any]:
    """The fields of a log line (``extra=``): the event's name, the channel, the request id,
    then ``more``; ``logtext.JSONFormatter`` writes them. Never a URL, a header or a text."""
    fields: Dict[str, Any] = {"event": event, "channel": pipeline.config.name}
    if exchange is not None:
        fields["request_id"] = exchange.request_id
    fields.update(more)
    return fields


# What a caller's request id may hold: it is written into every log line of the request.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@+=/-]{1,128}")


def unique_id() -> str:
    """An id unique across processes and requests: a random prefix per process, a counter.

    For request ids and for messages without a platform id: os.urandom (and the uuid4 Rasa
    would make) is a system call per request, which cost 14 % of a request in the profile.
    """
    return f"{_PREFIX}{next(_COUNTER):016x}"


_PREFIX = os.urandom(8).hex()
_COUNTER = itertools.count()
