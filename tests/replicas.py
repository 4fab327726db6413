"""Helpers for the several-replicas tests: a Redis that keeps its data across a restart, a TCP
link that can be cut (a platform API that goes down, a Redis that stops answering at a chosen
command), Telegram updates and what the platform API received for them.

    redis = DurableRedis(folder).start()      # AOF, fsync on every write: a restart keeps data
    link = Gate(api.port)                     # 127.0.0.1:<link.port> forwards to the API
    link.down(); link.up()                    # connections refused, then accepted again
    link.trip_on(pattern, hold=2)             # when a client sends bytes matching the pattern:
                                              # not forwarded, every connection cut, down 2 s
"""

import contextlib
import http.client
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from tests.platform_api import PlatformAPI, Recorded
from tests.rasa_process import RasaServer, request
from tests.redis_server import RedisServer, free_port

SECRET_TOKEN = "replicas-secret-token"
BOT_TOKEN = "123456:replicas-bot-token"
WEBHOOK = "/webhooks/{channel}/webhook"
HEADERS = {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": SECRET_TOKEN}


# A Redis that keeps its data -------------------------------------------------------------------


class DurableRedis(RedisServer):
    """``redis-server`` with the append-only file on and fsync on every write, as a production
    Redis holding an outbox and trackers is run: stopped and started again, it has its data."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def persistence(self) -> List[str]:
        """An append-only file, synced on every write: a restart keeps trackers and replies."""
        return [
            "--dir",
            str(self.folder),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]

    def keys(self, pattern: str) -> List[str]:
        """KEYS ``pattern`` in database 0 (a test's handful of keys)."""
        return [key.decode() for key in _resp_items(self.command("KEYS", pattern))]

    def get(self, key: str) -> Optional[str]:
        reply = self.command("GET", key)
        if reply.startswith(b"$-1"):
            return None
        return reply.split(b"\r\n", 2)[1].decode()


def _resp_items(reply: bytes) -> List[bytes]:
    """The bulk strings of a RESP array reply (enough for KEYS)."""
    lines = reply.split(b"\r\n")
    return [
        lines[i + 1] for i, line in enumerate(lines) if line.startswith(b"$") and line != b"$-1"
    ]


# A TCP link that can be cut --------------------------------------------------------------------


class Gate:
    """127.0.0.1:<port> forwarded to an upstream port, one thread pair per connection.

    ``down`` closes the listening socket (connections are refused) and every open connection;
    ``up`` listens on the same port again. ``trip_on`` arms a one-shot trigger on what clients
    send: the matching bytes are not forwarded, and the link goes down for ``hold`` seconds.
    """

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.host = host
        self.port = free_port()
        self._lock = threading.Lock()
        self._open: Set[socket.socket] = set()
        self._listener: Optional[socket.socket] = None
        self._accepting: Optional[threading.Thread] = None
        self._trips: List[Tuple[re.Pattern, float]] = []
        self.tripped: List[float] = []  # when each trigger fired (time.monotonic)
        self.up()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(128)
            self._listener = listener
            self._accepting = threading.Thread(target=self._accept, args=(listener,), daemon=True)
            self._accepting.start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            accepting, self._accepting = self._accepting, None
            connections, self._open = self._open, set()
        if listener is not None:
            _shutdown(listener)  # wakes the accepting thread, which closes it
        for connection in connections:
            _shutdown(connection)
        if accepting is not None and accepting is not threading.current_thread():
            accepting.join(5)

    def trip_on(self, pattern: bytes, hold: float) -> None:
        with self._lock:
            self._trips.append((re.compile(pattern, re.DOTALL), hold))

    def close(self) -> None:
        self.down()

    def _accept(self, listener: socket.socket) -> None:
        try:
            while True:
                try:
                    client, _ = listener.accept()
                except OSError:
                    return
                try:
                    upstream = socket.create_connection(self.upstream, timeout=2)
                    upstream.settimeout(None)
                except OSError:
                    _shutdown(client)  # nothing upstream (Redis stopped): cut at once
                    client.close()
                    continue
                with self._lock:
                    if self._listener is not listener:
                        for connection in (client, upstream):
                            _shutdown(connection)
                            connection.close()
                        return
                    self._open |= {client, upstream}
                pair = [client, upstream, 2]  # the sockets, and pumps still running
                for source, target, inspect in (
                    (client, upstream, True),
                    (upstream, client, False),
                ):
                    threading.Thread(
                        target=self._pump, args=(source, target, inspect, pair), daemon=True
                    ).start()
        finally:
            listener.close()

    def _pump(
        self, source: socket.socket, target: socket.socket, inspect: bool, pair: List[Any]
    ) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    return
                if inspect and self._trips and self._trip(data):
                    return
                target.sendall(data)
        except OSError:
            return
        finally:
            for connection in (source, target):
                _shutdown(connection)
            with self._lock:
                self._open.discard(source)
                self._open.discard(target)
                pair[2] -= 1
                last = pair[2] == 0
            if last:  # both directions are done: the sockets can go
                source.close()
                target.close()

    def _trip(self, data: bytes) -> bool:
        with self._lock:
            found = next((t for t in self._trips if t[0].search(data)), None)
            if found is None:
                return False
            self._trips.remove(found)
        self.tripped.append(time.monotonic())
        self.down()
        threading.Timer(found[1], self.up).start()
        return True


def _shutdown(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)


# Telegram updates and what the platform API received -------------------------------------------


def update(update_id: int, chat: int, seq: int, text: str = "/thank") -> Dict[str, Any]:
    """A Telegram text-message update; ``seq`` is the message's id in its chat, and comes back
    in the reply's ``reply_parameters.message_id``."""
    return {
        "update_id": update_id,
        "message": {
            "message_id": seq,
            "date": 1700000000 + seq,
            "chat": {"id": chat, "type": "private", "first_name": "Replica"},
            "from": {"id": chat, "is_bot": False, "first_name": "Replica"},
            "text": text,
        },
    }


Answer = Tuple[int, Dict[str, str], bytes]  # status, headers, body; status 0: no answer


def post_update(server: RasaServer, body: Dict[str, Any], channel: str = "telegram") -> Answer:
    """One webhook delivery; a connection that fails (a replica shutting down) is status 0."""
    try:
        return server.send(WEBHOOK.format(channel=channel), json.dumps(body).encode(), HEADERS)
    except (OSError, http.client.HTTPException) as error:
        return 0, {}, repr(error).encode()


def is_send(request_: Recorded) -> bool:
    return request_.path.endswith("/sendMessage")


def reply_marker(request_: Recorded) -> Tuple[str, int]:
    """(chat, message id the reply answers) of a sendMessage call."""
    body = request_.json or {}
    return str(body.get("chat_id")), int((body.get("reply_parameters") or {}).get("message_id", -1))


def for_chats(chats: Iterable[int]) -> Any:
    """A PlatformAPI match: sendMessage calls for these chats."""
    wanted = {str(chat) for chat in chats}
    return lambda r: is_send(r) and str((r.json or {}).get("chat_id")) in wanted


def deliveries(api: PlatformAPI, chats: Iterable[int]) -> Dict[str, List[Tuple[int, int]]]:
    """Per chat, (message id answered, HTTP status) of every sendMessage call, in arrival order."""
    match = for_chats(chats)
    found: Dict[str, List[Tuple[int, int]]] = {str(chat): [] for chat in chats}
    for recorded in sorted(api.received(match, 0, timeout=0), key=lambda r: r.at):
        chat, seq = reply_marker(recorded)
        found[chat].append((seq, recorded.status))
    return found


def wait_delivered(
    api: PlatformAPI, expected: Dict[str, List[int]], timeout: float
) -> Dict[str, List[int]]:
    """Wait until every expected (chat, message id) got a sendMessage answered 2xx; return, per
    chat, the message ids of the 2xx calls in arrival order."""
    deadline = time.monotonic() + timeout
    chats = [int(chat) for chat in expected]
    while True:
        got = {
            chat: [seq for seq, status in calls if status < 300]
            for chat, calls in deliveries(api, chats).items()
        }
        if all(set(ids) <= set(got[chat]) for chat, ids in expected.items()):
            return got
        if time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def in_order(delivered: List[int], acknowledged: List[int]) -> bool:
    """Whether the delivered ids, repeats of the one just sent aside, are the acknowledged ones
    in the order they were acknowledged."""
    collapsed = [seq for i, seq in enumerate(delivered) if i == 0 or delivered[i - 1] != seq]
    return collapsed == acknowledged


def user_message_ids(server: RasaServer, chat: int) -> List[str]:
    status, _, body = request(f"{server.url}/conversations/{chat}/tracker")
    assert status == 200, body
    events = json.loads(body)["events"]
    return [e.get("message_id") for e in events if e["event"] == "user"]


def log_since(server: RasaServer, offset: int) -> str:
    return server.log.read_bytes()[offset:].decode(errors="replace")


def log_size(server: RasaServer) -> int:
    return server.log.stat().st_size if server.log.exists() else 0
