"""Answers of platform APIs and key servers are read within bounds, however they arrive: in
several writes (read whole), or 300 MB long (never read whole). A real TCP server writes each
answer by hand and counts the bytes the client let it send."""

import asyncio
import contextlib
import json
import socket
import threading
import time
from typing import Callable, Iterator, List, Optional

import pytest

from generic_connector.auth import AuthUnavailable, build_auth
from generic_connector.delivery import Delivery
from generic_connector.outbound import Outbound, OutboundRequest, RequestTemplate
from generic_connector.request import IncomingRequest
from generic_connector.stores.redis.client import new_pool
from generic_connector.stores.redis.outbox import RedisOutbox
from tests.redis_server import RedisServer, fresh, serve
from tests.test_fetch import WEBHOOK, channel, run

MiB = 1_048_576
HUGE = 300 * MiB
# What a client that stops reading still takes: its receive buffer and the server's send
# buffer (a few MiB each on loopback), far below the 300 MiB a whole read would take.
READ_WHOLE = 50 * MiB

Write = Callable[[bytes], None]
Answer = Callable[[Write], None]


class RawAPI:
    """A real HTTP server on 127.0.0.1 whose answers are bytes written by hand.

    Each connection gets one request; ``answer(write)`` then writes the answer, and ``sent``
    counts the bytes the client took before it hung up (a write to a closed connection fails).
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.sent = 0
        self.requests: List[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            head = _request_head(connection)
            if head is None:
                return
            self.requests.append(head)
            with contextlib.suppress(OSError):  # the client hung up: it read what it wanted
                self.answer(lambda data: self._write(connection, data))

    def _write(self, connection: socket.socket, data: bytes) -> None:
        connection.sendall(data)
        self.sent += len(data)

    def close(self) -> None:
        self.listener.close()


def _request_head(connection: socket.socket) -> Optional[bytes]:
    """Read one request (its head, then as many body bytes as Content-Length says)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")[1:]
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    while len(body) < length:
        body += connection.recv(65536)
    return head


def huge(headers: bytes) -> Answer:
    """200 with 300 MiB of spaces: with ``Content-Length``, or until the connection closes."""

    def answer(write: Write) -> None:
        write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + headers + b"\r\n")
        block = b" " * MiB
        for _ in range(HUGE // MiB):
            write(block)

    return answer


SIZED = huge(f"Content-Length: {HUGE}\r\n".encode())
UNSIZED = huge(b"Connection: close\r\n")  # no Content-Length: the body ends with the connection


@pytest.fixture
def serving() -> Iterator[Callable[[Answer], RawAPI]]:
    servers: List[RawAPI] = []

    def start(answer: Answer) -> RawAPI:
        servers.append(RawAPI(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


# request.fetch ---------------------------------------------------------------------------------


def in_two_writes(write: Write) -> None:
    """A JSON answer whose body arrives in two TCP writes, 50 ms apart."""
    body = json.dumps({"roomId": "r-1", "text": "hi " + "x" * 20_000}).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    write(head.encode() + b"Connection: close\r\n\r\n" + body[: len(body) // 2])
    time.sleep(0.05)
    write(body[len(body) // 2 :])


def test_a_fetched_answer_that_arrives_in_two_writes_is_read_whole(
    serving: Callable[[Answer], RawAPI],
) -> None:
    api = serving(in_two_writes)
    answer, assistant = run(channel(api.url), WEBHOOK)
    assert answer.status == 200
    assert [(m.sender_id, m.text) for m in assistant.handled] == [("r-1", "hi " + "x" * 20_000)]


@pytest.mark.parametrize("answer", [SIZED, UNSIZED], ids=["content-length", "until close"])
def test_a_300_mb_fetched_answer_is_refused_without_reading_it(
    serving: Callable[[Answer], RawAPI], caplog: pytest.LogCaptureFixture, answer: Answer
) -> None:
    api = serving(answer)
    rendered, assistant = run(channel(api.url), WEBHOOK)
    assert rendered.status == 503
    assert "fetch 'message': the answer is larger than 1048576 bytes" in caplog.text
    assert assistant.handled == []
    assert api.sent < READ_WHOLE


# Outbound deliveries ---------------------------------------------------------------------------


def telegram_like(url: str) -> OutboundRequest:
    body = json.dumps({"chat_id": 7, "text": "hi"}).encode()
    return OutboundRequest(
        "text", "POST", f"{url}/send", {"Content-Type": "application/json"}, body
    )


def policy() -> Outbound:
    template = RequestTemplate("text", url="'http://unused'")
    return Outbound({"text": template}, timeout=60.0, retries=0)


@pytest.mark.parametrize("answer", [SIZED, UNSIZED], ids=["content-length", "until close"])
def test_a_300_mb_success_answer_is_delivered_without_reading_it(
    serving: Callable[[Answer], RawAPI], answer: Answer
) -> None:
    api = serving(answer)
    delivery = Delivery("t", policy())

    async def scenario() -> bool:
        try:
            return await delivery.send("c1", telegram_like(api.url))
        finally:
            await delivery.close()

    assert asyncio.run(scenario()) is True
    assert len(api.requests) == 1  # delivered once, not retried
    assert api.sent < READ_WHOLE


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from serve()


def test_the_redis_outbox_delivers_a_300_mb_success_without_reading_it(
    serving: Callable[[Answer], RawAPI], redis_server: RedisServer
) -> None:
    api = serving(UNSIZED)
    url = fresh(redis_server)

    async def scenario() -> None:
        outbox = RedisOutbox("chat", policy(), url, pool=new_pool(url), poll_interval=0.05)
        await outbox.start()
        try:
            done = await outbox.put("c1", [telegram_like(api.url)])
            await asyncio.wait_for(done, 60)
        finally:
            await outbox.close()
            await outbox.redis._given.disconnect()

    asyncio.run(scenario())
    assert len(api.requests) == 1  # delivered once: not retried, not dead-lettered
    assert api.sent < READ_WHOLE


# Key servers -----------------------------------------------------------------------------------


def test_a_300_mb_key_set_is_refused_without_reading_it(
    serving: Callable[[Answer], RawAPI],
) -> None:
    api = serving(UNSIZED)
    scheme = build_auth(
        {"type": "jwt", "algorithms": ["RS256"], "jwks_url": f"{api.url}/jwks", "audience": "a"}
    )
    request = IncomingRequest.from_parts(b"{}", {"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(AuthUnavailable, match="answered more than 1 MiB"):
        asyncio.run(scheme.check(request, None, 1_700_000_000))
    assert api.sent < READ_WHOLE


# A token naming key "k1" (its signature is never checked: the keys cannot be fetched).
TOKEN = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0."
    "eyJhdWQiOiJhIiwiZXhwIjoxODAwMDAwMDAwfQ."
    "c2lnbmF0dXJl"
)
