"""A stand-in for the platforms' APIs: answers as the platform would and counts requests.

One process, one event loop (uvloop when installed), HTTP/1.1 with keep-alive and
``Connection: close``, Content-Length and chunked bodies. Every request is counted under its
path without the query string; a Messenger Send API call that carries a ``sender_action``
(typing indicators, "mark seen") is counted under ``<path>#sender_action``, so that only
replies count as replies. ``GET /_counts`` answers the counts as JSON.

    .venv/bin/python bench/standin_api.py PORT
"""

import asyncio
import json
import sys
from typing import Dict, Optional, Tuple

# (status, JSON body) by the last segment of the path: what each platform answers.
TELEGRAM_BOT = {"id": 123456, "is_bot": True, "first_name": "Bench", "username": "bench_bot"}
ANSWERS: Dict[str, Tuple[int, dict]] = {
    # Telegram Bot API
    "getMe": (200, {"ok": True, "result": TELEGRAM_BOT}),
    "setWebhook": (200, {"ok": True, "result": True, "description": "Webhook was set"}),
    "sendMessage": (200, {"ok": True, "result": {
        "message_id": 1366, "date": 1441645533, "from": TELEGRAM_BOT,
        "chat": {"id": 1111111, "type": "private"}, "text": "Hello!"}}),
    # Slack Web API and Rocket.Chat REST API (both name it chat.postMessage)
    "chat.postMessage": (200, {"ok": True, "success": True, "channel": "C123ABC456",
                               "ts": "1503435956.000247", "message": {"text": "Hello!"}}),
    # Rocket.Chat login
    "login": (200, {"status": "success", "data": {"authToken": "bench-auth-token",
                                                  "userId": "bench-user-id"}}),
    # Messenger Send API
    "messages": (200, {"recipient_id": "1254477777772919",
                       "message_id": "m_AG5Hz2Uq7tuwNEhXfYYKj8"}),
    # Twilio Programmable Messaging: 201 Created
    "Messages.json": (201, {"sid": "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "status": "queued",
                            "account_sid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                            "to": "+14017122661", "from": "+15558675310", "body": "Hello!"}),
    # Mattermost API v4: 201 Created
    "posts": (201, {"id": "qwertyuiopasdfghjklzxcvbnm", "message": "Hello!"}),
}  # fmt: skip
DEFAULT = (200, {"ok": True})
REASONS = {200: b"OK", 201: b"Created", 404: b"Not Found"}


def _answer(status: int, body: bytes, close: bool) -> bytes:
    head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status, REASONS.get(status, b"OK"), len(body),
    )  # fmt: skip
    return head + (b"Connection: close\r\n\r\n" if close else b"\r\n") + body


PREPARED = {
    name: (_answer(status, json.dumps(body).encode(), False),
           _answer(status, json.dumps(body).encode(), True))
    for name, (status, body) in {**ANSWERS, "": DEFAULT}.items()
}  # fmt: skip


class StandInAPI(asyncio.Protocol):
    counts: Dict[str, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            parsed = self._one_request()
            if parsed is None:
                return
            method, path, body, close = parsed
            self.transport.write(self._respond(method, path, body, close))
            if close:
                self.transport.close()
                return

    def _one_request(self) -> Optional[Tuple[bytes, str, bytes, bool]]:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buffer[:end].decode("latin-1")
        lines = head.split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, consumed = _chunked(self.buffer, start)
            if body is None:
                return None
        else:
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < start + length:
                return None
            body, consumed = self.buffer[start : start + length], start + length
        self.buffer = self.buffer[consumed:]
        connection = headers.get("connection", "").lower()
        close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        return method.encode(), target.split("?", 1)[0], body, close

    def _respond(self, method: bytes, path: str, body: bytes, close: bool) -> bytes:
        if method == b"GET" and path == "/_counts":
            payload = json.dumps(self.counts).encode()
            return _answer(200, payload, close)
        key = path + "#sender_action" if b'"sender_action"' in body else path
        self.counts[key] = self.counts.get(key, 0) + 1
        keep, closing = PREPARED.get(path.rsplit("/", 1)[-1]) or PREPARED[""]
        return closing if close else keep


def _chunked(buffer: bytes, start: int) -> Tuple[Optional[bytes], int]:
    """(body, end) of a chunked body starting at ``start``, or (None, 0) while incomplete."""
    chunks, position = [], start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None, 0
        size = int(buffer[position:line_end].split(b";")[0], 16)
        position = line_end + 2
        if size == 0:
            trailer = buffer.find(b"\r\n", position)
            return (b"".join(chunks), trailer + 2) if trailer >= 0 else (None, 0)
        if len(buffer) < position + size + 2:
            return None, 0
        chunks.append(buffer[position : position + size])
        position += size + 2


def main() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    port = int(sys.argv[1])
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(StandInAPI, "127.0.0.1", port, backlog=4096, reuse_address=True)
    )
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
