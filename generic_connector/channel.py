"""The Rasa channel: Sanic and Rasa on one side, the request pipeline on the other.

The only module that touches Rasa or Sanic. It reads the body within the channel's limits,
hands the request to the pipeline with Rasa as the assistant, and writes the answer.
"""

import asyncio
import hmac
import logging
import os
import re
import time
from typing import Any, Awaitable, Callable, Coroutine, Dict, List, Optional, Tuple

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from rasa.core.lock_store import LockError
from rasa.shared.exceptions import RasaException
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sanic import Blueprint, response
from sanic.http import Http
from sanic.request import Request
from sanic.response import HTTPResponse

from generic_connector import defaults, stores
from generic_connector.config import ChannelConfig
from generic_connector.errors import (
    ConfigError,
    GenericConnectorError,
    HTTPError,
    RetryLater,
    Unavailable,
)
from generic_connector.handover import operate
from generic_connector.idempotency import Replies
from generic_connector.logtext import get_logger
from generic_connector.mapping import Extracted
from generic_connector.metrics import CONTENT_TYPE, exposition
from generic_connector.pipeline import (
    Assistant,
    Pipeline,
    deliver,
    handle_stored,
    request_id_of,
    unique_id,
)
from generic_connector.request import IncomingRequest, dumps
from generic_connector.routes import METHODS, sanic_path
from generic_connector.startup import load_startup_channel

logger = get_logger(__name__)
# One line per answer (an access log), on a logger of its own: an operator who does not want
# them sets it to WARNING in a logging config. It costs a few microseconds per request.
access = get_logger("generic_connector.access")

OnNewMessage = Callable[[UserMessage], Awaitable[Any]]

# A bearer token for /metrics and readiness details, for every channel of the process.
OPS_TOKEN_ENV = "GENERIC_CONNECTOR_OPS_TOKEN"

# The largest body the conversations API reads ({"timeout": seconds}).
API_MAX_BODY = 1024

# The longest wait between two attempts to start the workers while the store is down.
START_RETRY = 5.0


class GenericChannelConfigError(GenericConnectorError, RasaException):
    """A generic channel's configuration is invalid; Rasa prints it as one line and exits."""


class GenericOutputChannel(CollectingOutputChannel):
    """Collects the bot's replies under the channel's own name.

    Rasa picks ``channel:`` response variations by the output channel's name, so the
    collector must carry the configured name rather than Rasa's ``collector``.
    """

    def __init__(self, channel_name: str) -> None:
        super().__init__()
        self.channel_name = channel_name

    def name(self) -> str:
        return self.channel_name


class DeliveringOutputChannel(GenericOutputChannel):
    """For messages Rasa sends on its own (reminders, trigger_intent): the platform's API."""

    def __init__(self, channel_name: str, pipeline: Pipeline) -> None:
        super().__init__(channel_name)
        self.pipeline = pipeline

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        await super().send_response(recipient_id, dict(message))  # Rasa pops keys off it
        delivered = await deliver(self.pipeline, recipient_id, [message], None)
        outbound = self.pipeline.config.outbound
        assert outbound is not None  # deliver() needs it too: made only with outbound
        if outbound.wait:
            await delivered


class RasaAssistant(Assistant):
    """Rasa behind the pipeline's ``Assistant``: one ``UserMessage`` per mapped message."""

    def __init__(self, channel_name: str, on_new_message: OnNewMessage, app: Any) -> None:
        self.channel_name = channel_name
        self.on_new_message = on_new_message
        self.app = app  # its agent is replaced when Rasa loads another model

    def ready(self) -> bool:
        agent = getattr(self.app.ctx, "agent", None)
        return agent is None or agent.is_ready()

    async def handle(self, message: Extracted) -> Replies:
        collector = GenericOutputChannel(self.channel_name)
        user_message = UserMessage(
            message.text,
            collector,
            message.sender_id,
            input_channel=message.input_channel,
            message_id=message.message_id or unique_id(),
            metadata=message.metadata,
        )
        try:
            await self.on_new_message(user_message)
        except (LockError, RedisConnectionError, RedisTimeoutError):  # the lock store is down
            logger.error(
                "Channel %s: could not lock the conversation of sender %s "
                "(busy, or lock store down)",
                self.channel_name, message.sender_id,
            )  # fmt: skip
            raise HTTPError(
                503, "the conversation is busy; retry later", {"Retry-After": "2"}
            ) from None
        return collector.messages


class GenericChannel(InputChannel):
    """One front end, configured in credentials.yml and mapping files instead of Python."""

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> "GenericChannel":
        # Rasa sets the level chosen with --debug, --verbose or LOG_LEVEL on its own loggers only.
        logging.getLogger("generic_connector").setLevel(
            logging.getLogger("rasa").getEffectiveLevel()
        )
        try:
            return cls(load_startup_channel(credentials))
        except ConfigError as error:
            raise GenericChannelConfigError(
                f"invalid generic channel configuration:\n{error}"
            ) from None

    def __init__(self, config: ChannelConfig) -> None:
        self.config = config
        parts = stores.build(config)  # what its store.type supplies
        self.pipeline = Pipeline(config, parts.store, parts.outbox, fetcher=parts.fetcher)
        self.pipeline.inbox = parts.inbox
        if parts.conversations is not None:
            self.pipeline.conversations = parts.conversations
        self.pipeline.presence = parts.presence
        self.in_flight = 0
        self.readers = BodyReaders()
        self._starting: Optional[asyncio.Future[None]] = None

    def name(self) -> str:
        return self.config.name

    def get_output_channel(self) -> Optional[GenericOutputChannel]:
        if self.pipeline.outbox is None:
            return None
        return DeliveringOutputChannel(self.config.name, self.pipeline)

    def blueprint(self, on_new_message: OnNewMessage) -> Blueprint:
        """``GET /`` health, ``POST /webhook`` and the routes the handshakes declare."""
        blueprint_name = "generic_connector_" + re.sub(r"\W", "_", self.config.name)
        webhook = Blueprint(blueprint_name, __name__)

        # Every answer of the channel's routes carries X-Request-ID and is logged once.
        @webhook.middleware("request")
        async def begin(request: Request) -> None:
            request.ctx.generic_started = time.monotonic()
            request.ctx.generic_request_id = request_id_of(request.headers.get("X-Request-ID"))

        @webhook.middleware("response")
        async def answered(request: Request, answer: HTTPResponse) -> None:
            self._answered(request, answer)

        @webhook.route("/", methods=METHODS)
        async def health(request: Request) -> HTTPResponse:
            if request.method != "GET":
                return _not_served(request, ["GET"])
            request.ctx.generic_probe = True
            return await self.health(request)

        @webhook.route("/metrics", methods=METHODS)
        async def metrics(request: Request) -> HTTPResponse:
            if request.method != "GET":
                return _not_served(request, ["GET"])
            request.ctx.generic_probe = True
            return await self.metrics(request)

        # The conversations API (handover): operators pause and resume the bot.
        @webhook.route("/conversations/paused", methods=METHODS, stream=True)
        async def paused_conversations(request: Request) -> HTTPResponse:
            if request.method != "GET":
                return _not_served(request, ["GET"])
            return await self.conversations(request, "list", None)

        @webhook.route("/conversations/<conversation>/<action>", methods=METHODS, stream=True)
        async def conversation_action(
            request: Request, conversation: str, action: str
        ) -> HTTPResponse:
            if request.method != "POST":
                return _not_served(request, ["POST"])
            return await self.conversations(request, action, conversation)

        @webhook.listener("after_server_start")
        async def start(app: Any, *_: Any) -> None:
            self._say_served(app, blueprint_name)
            # A shared store that cannot be reached is said at once; requests are answered 503
            # until it can, and the workers start as soon as it is back, without a restart.
            self._starting = asyncio.ensure_future(self._start_workers(app, on_new_message))

        @webhook.listener("after_server_stop")
        async def close(*_: Any) -> None:
            if self._starting is not None:
                self._starting.cancel()
            # In this order: stored messages being handled may still put replies in the outbox.
            if self.pipeline.inbox is not None:
                await self.pipeline.inbox.close()
            if self.pipeline.outbox is not None:
                await self.pipeline.outbox.close()
            if self.pipeline.store is not None:
                await self.pipeline.store.close()
            if self.pipeline.fetcher is not None:
                await self.pipeline.fetcher.close()
            await self.pipeline.conversations.close()
            if self.pipeline.presence is not None:
                await self.pipeline.presence.close()

        assistants: Dict[Any, RasaAssistant] = {}  # one per Sanic app

        def receiver(
            path: str, methods: List[str]
        ) -> Callable[..., Coroutine[Any, Any, HTTPResponse]]:
            async def receive_request(request: Request, **_: str) -> HTTPResponse:
                if request.method not in methods:
                    return _not_served(request, methods)
                assistant = assistants.get(request.app)
                if assistant is None:
                    assistant = assistants[request.app] = RasaAssistant(
                        self.config.name, on_new_message, request.app
                    )
                return await self.receive(request, path, assistant)

            return receive_request

        paths: Dict[str, List[str]] = {}
        for method, path in self.config.routes():
            paths.setdefault(path, []).append(method)
        for index, (path, methods) in enumerate(paths.items()):
            # Every method, so that one the path does not serve gets the channel's JSON 405.
            # Streamed: the body is read here, within the channel's size and time limits.
            webhook.add_route(
                receiver(path, methods), sanic_path(path), methods=METHODS,
                name=f"receive_{index}", stream=True,
            )  # fmt: skip

        @webhook.route("/<rest:path>", methods=METHODS, name="not_served")
        async def not_served(request: Request, rest: str) -> HTTPResponse:
            if not rest:  # "/webhooks/<name>/": Sanic routes it here rather than to health
                return await health(request)
            return _not_served(request, [])

        return webhook

    def _answered(self, request: Request, answer: HTTPResponse) -> None:
        """Every answer of the channel: its ``X-Request-ID`` (the pipeline's, or the one the
        request was given on arrival), and one log line with its fields. Readiness and
        metrics answered 2xx are logged at DEBUG (probes ask every few seconds), the rest at
        INFO. The path is logged without its query string, where tokens travel."""
        given = answer.headers.get("X-Request-ID")
        if not given:
            given = getattr(request.ctx, "generic_request_id", None) or unique_id()
            answer.headers["X-Request-ID"] = given
        started = getattr(request.ctx, "generic_started", None)
        took = 0.0 if started is None else (time.monotonic() - started) * 1000
        path = request.path[:200]
        probe = getattr(request.ctx, "generic_probe", False)
        level = logging.DEBUG if probe and answer.status < 400 else logging.INFO
        access.log(
            level,
            "Channel %s: %s %s answered %d in %.1f ms",
            self.config.name, request.method, path, answer.status, took,
            extra={
                "event": "request", "channel": self.config.name, "request_id": given,
                "method": request.method, "path": path, "status": answer.status,
                "duration_ms": round(took, 1),
            },
        )  # fmt: skip

    def _say_served(self, app: Any, blueprint_name: str) -> None:
        """One line when Rasa starts serving the channel: its URLs and methods, its store,
        whether it sends replies through the platform's API."""
        try:
            base = app.url_for(f"{blueprint_name}.health").rstrip("/")
        except Exception:  # not registered under that name: Rasa's default prefix
            base = f"/webhooks/{self.url_prefix()}"
        health = base + "/"
        paths: Dict[str, List[str]] = {}
        for method, path in self.config.routes():
            paths.setdefault(base + path, []).append(method)
        served = [f"{path} ({', '.join(methods)})" for path, methods in paths.items()]
        served.append(f"{health} (GET health)")
        outbound = "on" if self.config.outbound is not None else "off"
        logger.info(
            "Channel %s: serving %s; store %s, outbound %s",
            self.config.name, ", ".join(served), self.config.store.type, outbound,
            extra={
                "event": "channel.serving", "channel": self.config.name,
                "routes": [f"{m} {base}{p}" for m, p in self.config.routes()],
                "health": health, "metrics": f"{base}/metrics",
                "store": self.config.store.type, "outbound": outbound == "on",
            },
        )  # fmt: skip

    async def health(self, request: Request) -> HTTPResponse:
        """Readiness: the model is loaded, the shared store answers and its workers run; else
        503. What is wrong is said in words that name no internal host (the log names it), and
        only to an operator when ``GENERIC_CONNECTOR_OPS_TOKEN`` is set."""
        problems = []
        agent = getattr(request.app.ctx, "agent", None)
        if agent is not None and not agent.is_ready():
            problems.append("the model is not loaded yet")
        try:
            if self.pipeline.store is not None:
                await self.pipeline.store.check()
        except Unavailable:
            problems.append("the shared store cannot be reached")
        problems += self._stopped_workers()
        if not problems:
            return response.json({"status": "ok"})
        answer: Dict[str, Any] = {"status": "unavailable"}
        if _operator(request):
            answer["problems"] = problems
        return response.json(answer, status=503)

    async def metrics(self, request: Request) -> HTTPResponse:
        """Every generic channel's metrics, in Prometheus' text format (with
        ``GENERIC_CONNECTOR_OPS_TOKEN`` set, for its bearer only)."""
        if not _operator(request):
            return _error(HTTPError(401, "unauthorized", {"WWW-Authenticate": "Bearer"}))
        return HTTPResponse(exposition(), content_type=CONTENT_TYPE)

    async def conversations(
        self, request: Request, action: str, conversation: Optional[str]
    ) -> HTTPResponse:
        """Pause, resume or list paused conversations (``handover.operate``), for the bearer
        of ``GENERIC_CONNECTOR_OPS_TOKEN`` only: without the token set, 403, never open."""
        if not os.environ.get(OPS_TOKEN_ENV, ""):
            _close_after(request)
            message = f"the conversations API is off: {OPS_TOKEN_ENV} is not set"
            return _error(HTTPError(403, message))
        if not _operator(request):
            _close_after(request)
            return _error(HTTPError(401, "unauthorized", {"WWW-Authenticate": "Bearer"}))
        if self.config.handover is None:
            _close_after(request)
            return _error(HTTPError(404, f"channel {self.config.name} has no handover section"))
        limits = self.config.limits
        try:
            body = await self.readers.read(request, API_MAX_BODY, limits.read_timeout)
            status, answer = await operate(
                self.pipeline.conversations, action, conversation, body, "api",
                self.pipeline.clock(), self.config.handover.timeout,
            )  # fmt: skip
        except HTTPError as error:
            _close_after(request)
            return _error(error)
        except Unavailable as error:
            logger.error("Channel %s: conversations API: %s", self.config.name, error)
            later = HTTPError(503, "the channel's store is unavailable; retry later")
            return _error(later)
        if action != "list":
            logger.info(
                "Channel %s: conversation %s %sd by the API",
                self.config.name, conversation, action,
            )  # fmt: skip
        return response.json({"channel": self.config.name, **answer}, status=status)

    async def _start_workers(self, app: Any, on_new_message: OnNewMessage) -> None:
        """Check the store and start the outbox's and inbox's workers, trying again (every
        ``START_RETRY`` seconds at most) until the store can be reached."""
        delay, said = 0.5, False
        while True:
            try:
                if self.pipeline.store is not None:
                    await self.pipeline.store.check()
                if self.pipeline.outbox is not None:
                    await self.pipeline.outbox.start()
                if self.pipeline.inbox is not None:
                    assistant = RasaAssistant(self.config.name, on_new_message, app)
                    await self.pipeline.inbox.start(self._stored_handler(assistant))
                if said:
                    logger.info("Channel %s: the store is reachable; workers started", self.name())
                return
            except Unavailable as reason:
                if not said:
                    logger.error(
                        "Channel %s: %s; requests are answered 503 until it can be, and the "
                        "workers start when it can",
                        self.config.name, reason,
                    )  # fmt: skip
                    said = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, START_RETRY)

    def _stopped_workers(self) -> List[str]:
        """Readiness problems: a shared outbox's or inbox's worker that is not running."""
        problems = []
        for part in ("outbox", "inbox"):
            queue = getattr(self.pipeline, part)
            if queue is None or not hasattr(queue, "worker"):
                continue  # the memory outbox has no worker of its own
            if queue.worker is None or queue.worker.done():
                problems.append(f"the {part} worker is not running")
        return problems

    def _stored_handler(
        self, assistant: "RasaAssistant"
    ) -> Callable[[Dict[str, Any]], Awaitable[None]]:
        """What the inbox's workers do with an early acknowledged message."""

        async def handle(entry: Dict[str, Any]) -> None:
            if not assistant.ready():
                raise RetryLater(5, "the model is not loaded yet")
            await handle_stored(self.pipeline, entry, assistant)

        return handle

    async def receive(self, request: Request, path: str, assistant: Assistant) -> HTTPResponse:
        """Read the body within the limits, run the pipeline, write its answer."""
        limits = self.config.limits
        if self.in_flight >= limits.max_concurrent and not self.readers.evict_slowest():
            _close_after(request)
            return _error(
                HTTPError(503, "too many requests at once; retry later", {"Retry-After": "1"})
            )
        self.in_flight += 1
        try:
            given = getattr(request.ctx, "generic_request_id", None) or unique_id()
            try:
                body = await self.readers.read(request, limits.max_body, limits.read_timeout)
            except HTTPError as error:
                _close_after(request)
                logger.info(
                    "Channel %s: request %s refused with %d: %s",
                    self.config.name, given, error.status, error.message,
                    extra={
                        "event": "request.refused", "channel": self.config.name,
                        "request_id": given, "status": error.status, "reason": error.message,
                    },
                )  # fmt: skip
                return _error(error)
            incoming = IncomingRequest(
                body, request.headers, None, request.method, path, source=request
            )
            exchange, answer = await self.pipeline.run(incoming, assistant, known_id=given)
        finally:
            self.in_flight -= 1
        return HTTPResponse(
            answer.body,
            status=answer.status,
            headers={**answer.headers, "X-Request-ID": exchange.request_id},
            content_type=answer.content_type,
        )


class BodyReaders:
    """The requests of a channel whose body is still arriving, oldest first.

    A body is read within ``read_timeout`` (408 after it). When the channel is full
    (``max_concurrent``), the oldest request still waiting for its body after ``patience``
    seconds gives its place to the new one (408): slow clients cannot keep a channel at 503 by
    opening a connection as each of theirs times out.
    """

    def __init__(
        self,
        patience: float = defaults.SLOW_BODY_PATIENCE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.patience = patience
        self.clock = clock
        # Each reading task, with when it started and the reason it was cut off (if it was).
        self._reading: Dict[asyncio.Task[Any], Tuple[float, List[str]]] = {}

    def evict_slowest(self) -> bool:
        """Cut off the oldest reader waiting longer than ``patience``; whether there was one."""
        for task, (started, cut) in self._reading.items():
            if self.clock() - started < self.patience:
                return False  # the rest started later still
            del self._reading[task]
            cut.append("the request body was too slow while others waited")
            task.cancel()
            return True
        return False

    async def read(self, request: Request, max_body: int, timeout: float) -> bytes:
        """The whole body of a streamed request: 413 beyond ``max_body``, 408 after
        ``timeout`` or when cut off for a new request."""
        length = request.headers.get("content-length")
        if length is not None and "transfer-encoding" in request.headers:
            # Two lengths that a proxy in front may read one way and the server the other:
            # the way to smuggle a second request inside the first (RFC 9112, section 6.3).
            raise HTTPError(
                400, "a request must not have both Transfer-Encoding and Content-Length"
            )
        if length is not None and length.isdigit() and int(length) > max_body:
            raise HTTPError(413, f"request body is larger than {max_body} bytes")
        stream = request.stream
        if stream is None:  # not streamed (a test client): Sanic read it already
            return request.body
        received = len(stream.recv_buffer)
        if length is not None and length.isdigit() and received >= int(length):
            # Received with the headers (most webhooks): no read can wait, no timer needed.
            return await _read_all(stream, max_body)
        # One timer for the whole body, rather than asyncio.wait_for around every read, which
        # made a task per read.
        task = asyncio.current_task()
        assert task is not None
        cut: List[str] = []
        self._reading[task] = (self.clock(), cut)
        expired = f"the request body did not arrive within {timeout:g} s"

        def expire() -> None:
            cut.append(expired)
            task.cancel()

        timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            return await _read_all(stream, max_body)
        except asyncio.CancelledError:
            if cut:
                raise HTTPError(408, cut[0]) from None
            raise
        finally:
            timer.cancel()
            self._reading.pop(task, None)


async def _read_all(stream: Http, max_body: int) -> bytes:
    chunks: List[bytes] = []
    size = 0
    while True:
        chunk = await stream.read()
        if chunk is None:
            return b"".join(chunks)
        size += len(chunk)
        if size > max_body:
            raise HTTPError(413, f"request body is larger than {max_body} bytes")
        chunks.append(chunk)


def _operator(request: Request) -> bool:
    """Whether the caller may see operators' details: no token set, or its bearer token."""
    token = os.environ.get(OPS_TOKEN_ENV, "")
    if not token:
        return True
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def _close_after(request: Request) -> None:
    """Close the connection after the answer instead of reading what is left of the body."""
    if request.stream is not None:
        request.stream.request_max_size = 0  # Sanic then drops the rest and the connection


def _not_served(request: Request, methods: List[str]) -> HTTPResponse:
    """The channel's JSON 404 for a path it does not serve, 405 for a method it does not."""
    _close_after(request)
    if not methods:
        return _error(HTTPError(404, f"this channel serves no path {request.path[:200]}"))
    allowed = ", ".join(methods)
    message = f"{request.method} is not served here; this path takes {allowed}"
    return _error(HTTPError(405, message, {"Allow": allowed}))


def _error(error: HTTPError) -> HTTPResponse:
    return HTTPResponse(
        dumps(error.body()),
        status=error.status,
        headers=error.headers,
        content_type="application/json",
    )
