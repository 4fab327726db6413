"""A real local HTTP server playing platforms' APIs: records requests, answers as told.

It speaks HTTP/1.1 with keep-alive, as the platforms do, so that a client's connection reuse
shows: each recorded request has the client's port.
"""

import functools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Tuple

Answer = Tuple[int, Dict[str, str], Any]  # status, headers, JSON body


@dataclass
class Recorded:
    method: str
    path: str
    headers: Dict[str, str]
    body: bytes
    status: int
    client_port: int = 0
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class PlatformAPI:
    """Answers 200 ``{"ok": true}`` unless a plan says otherwise for matching requests."""

    def __init__(self) -> None:
        self.requests: List[Recorded] = []
        self._plans: List[Tuple[Callable[[Recorded], bool], List[Answer], float]] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: connections can be reused

            def do_POST(self) -> None:  # noqa: N802
                api._handle(self)

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # shutdown() waits for the serving loop's next poll: a short one keeps teardowns short.
        serve = functools.partial(self.server.serve_forever, poll_interval=0.05)
        threading.Thread(target=serve, daemon=True).start()

    def plan(
        self, match: Callable[[Recorded], bool], answers: List[Answer], delay: float = 0.0
    ) -> None:
        """Answer the next matching requests with ``answers``, in turn (after ``delay`` s)."""
        with self._lock:
            self._plans.append((match, list(answers), delay))

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        request = Recorded(
            handler.command,
            handler.path,
            dict(handler.headers),
            handler.rfile.read(length),
            200,
            handler.client_address[1],
        )
        status, headers, body, delay = 200, {}, {"ok": True}, 0.0
        with self._lock:
            for match, answers, plan_delay in self._plans:
                if answers and _matches(match, request):
                    status, headers, body = answers.pop(0)
                    delay = plan_delay
                    break
            request.status = status
            self.requests.append(request)
        if delay:
            time.sleep(delay)
        # A bytes body is sent as it is (a file), with the Content-Type the plan gives.
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        media = "application/octet-stream" if isinstance(body, bytes) else "application/json"
        try:
            handler.send_response(status)
            for name, value in {"Content-Type": media, **headers}.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:  # the client gave up waiting (a time-out test)
            handler.close_connection = True

    def received(
        self, match: Callable[[Recorded], bool], count: int, timeout: float = 30.0
    ) -> List[Recorded]:
        """Wait until ``count`` matching requests arrived; return all that match."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [r for r in self.requests if _matches(match, r)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _matches(match: Callable[[Recorded], bool], request: Recorded) -> bool:
    try:
        return bool(match(request))
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def json_field(name: str, value: Any) -> Callable[[Recorded], bool]:
    """Match requests whose JSON body has ``name`` equal to ``value``."""
    return lambda request: (request.json or {}).get(name) == value
