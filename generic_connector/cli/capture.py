"""``generic-connector capture``: a local server that records what a platform sends.

Each request, whatever its method and path, is written to its own JSON file as a mapping test
case (docs/validation.md: Mapping tests) with an empty ``expect`` to fill in, or to turn into a
starter mapping with ``generic-connector new --from``. The server answers ``{}`` (or a given text),
and answers verification challenges (Meta's ``hub.challenge``, Slack's ``url_verification``)
so that a platform accepts the URL and starts sending.

Credentials are masked unless ``keep_secrets`` is set: the value of ``Authorization``,
``Cookie``, ``Set-Cookie`` and every header or query parameter whose name holds ``token``,
``secret``, ``signature``, ``key``, ``auth`` or ``password`` becomes ``<redacted>``, as test
cases are meant to be committed. A masked signature no longer matches the body, so such a case
fails a mapping's ``auth`` until it is signed again with a test secret given in ``env``.
Everything printed that comes from the request goes through ``logtext.printable``.
"""

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from aiohttp import web

from generic_connector import defaults
from generic_connector.errors import GenericConnectorError
from generic_connector.logtext import printable, printable_json

DEFAULT_PORT = 5005  # where `rasa run` serves the channel later
DEFAULT_MAX_REQUESTS = 1000
# Headers about one connection, not the request: left out of the test cases.
HOP_BY_HOP = frozenset(
    {
        "accept-encoding",
        "connection",
        "content-length",
        "expect",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# What a masked credential becomes in a captured test case.
REDACTED = "<redacted>"
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
SECRET_WORDS = ("token", "secret", "signature", "key", "auth", "password")
_CHANNEL_PATH = re.compile(r"/webhooks/[^/]+(/.*)")
_NUMBERED = re.compile(r"^(\d{4,})-")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def channel_path(path: str) -> str:
    """The path as a test case gives it: under ``/webhooks/<name>`` when sent there."""
    match = _CHANNEL_PATH.fullmatch(path)
    return match.group(1) if match else path


def case_file_name(number: int, method: str, path: str) -> str:
    """``0001-post-webhooks-telegram-webhook.json``."""
    slug = re.sub(r"[^A-Za-z0-9_]+", "-", path).strip("-")[:60].strip("-") or "root"
    return f"{number:04d}-{method.lower()}-{slug}.json"


def first_free_number(directory: Path) -> int:
    """1, or one more than the highest number of the captures already in ``directory``."""
    numbers = [0]
    if directory.is_dir():
        for entry in directory.iterdir():
            match = _NUMBERED.match(entry.name)
            if match:
                numbers.append(int(match.group(1)))
    return max(numbers) + 1


def body_entry(raw: bytes, body_file: str, raw_bodies: bool = False) -> Tuple[Dict[str, Any], str]:
    """The test case's ``body`` or ``body_file`` for ``raw``, and what kind of body it is.

    A JSON object or list is kept as JSON, other UTF-8 text as it is; anything else (and every
    body with ``raw_bodies``, for signatures over the exact bytes) goes to ``body_file``.
    """
    if not raw:
        return {}, "no body"
    if raw_bodies:
        return {"body_file": body_file}, "raw"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"body_file": body_file}, "binary"
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return {"body": text}, "text"
    if isinstance(value, (dict, list)):
        return {"body": value}, "JSON"
    return {"body": text}, "text"


def _joined(pairs: Iterable[Tuple[str, str]], keep: Callable[[str], bool]) -> Dict[str, str]:
    """Repeated headers joined with ", ", as HTTP allows."""
    joined: Dict[str, str] = {}
    names: Dict[str, str] = {}  # lower-case name -> the spelling first seen
    for name, value in pairs:
        if not keep(name):
            continue
        first = names.setdefault(name.lower(), name)
        joined[first] = f"{joined[first]}, {value}" if first in joined else value
    return joined


def is_secret_name(name: str, header: bool = True) -> bool:
    """Whether a header (or, with ``header=False``, a query parameter) holds a credential."""
    lower = name.lower()
    return (header and lower in SECRET_HEADERS) or any(word in lower for word in SECRET_WORDS)


def mask_secrets(case: Dict[str, Any]) -> List[str]:
    """Replace credential values of ``case``'s headers and query by ``REDACTED``; the names
    masked, headers first."""
    masked: List[str] = []
    for key, header in (("headers", True), ("query", False)):
        values = case.get(key) or {}
        for name in values:
            if is_secret_name(name, header):
                values[name] = REDACTED
                masked.append(name)
    return masked


def capture_case(
    number: int,
    method: str,
    path: str,
    headers: Iterable[Tuple[str, str]],
    query: Iterable[Tuple[str, str]],
    raw: bytes,
    raw_bodies: bool = False,
    when: Optional[datetime] = None,
    keep_secrets: bool = False,
) -> Tuple[str, Dict[str, Any], str, List[str]]:
    """(file name, test case, kind of body, names of the masked values) for one request.

    The case has the keys of a mapping test case: ``name``, ``source``, ``method``, ``path``
    (under ``/webhooks/<name>`` when it was sent there), ``headers`` (without hop-by-hop ones),
    ``query`` (the first value of a repeated parameter), ``body`` or ``body_file``, and an
    empty ``expect``. Credentials in headers and query are masked unless ``keep_secrets``.
    """
    name = case_file_name(number, method, path)
    body, kind = body_entry(raw, name[: -len(".json")] + ".body", raw_bodies)
    stamp = (when or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    params: Dict[str, str] = {}
    for key, value in query:
        params.setdefault(key, value)
    case: Dict[str, Any] = {
        "name": f"request {number}: {method} {path}",
        "source": f"captured {stamp}",
        "method": method,
        "path": channel_path(path),
        "headers": _joined(headers, lambda h: h.lower() not in HOP_BY_HOP),
        "query": params,
        **body,
        "expect": {},
    }
    masked = [] if keep_secrets else mask_secrets(case)
    return name, case, kind, masked


def masked_note(masked: List[str]) -> str:
    """What the printed line says about masked values ("" when none was)."""
    if not masked:
        return ""
    signed = any("signature" in name.lower() for name in masked)
    why = "signature headers masked; " if signed else ""
    return f" (masked: {', '.join(masked)}; {why}use --keep-secrets to keep them)"


def challenge_answer(method: str, query: Dict[str, str], raw: bytes) -> Optional[Tuple[str, str]]:
    """(answer, name) for a verification challenge a platform sends before anything else."""
    if method == "GET":
        for key, value in query.items():
            if key.lower().endswith("challenge"):
                return value, "the verification challenge"
        return None
    if b"url_verification" not in raw:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("type") == "url_verification":
        challenge = body.get("challenge")
        if isinstance(challenge, str):
            return challenge, "the url_verification challenge"
    return None


@dataclass
class CaptureSettings:
    """What ``generic-connector capture`` was asked to do."""

    out_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    answer: str = "{}"
    max_body: int = defaults.MAX_BODY
    max_requests: int = DEFAULT_MAX_REQUESTS
    count: Optional[int] = None  # stop after this many requests
    raw_bodies: bool = False
    keep_secrets: bool = False  # credentials written as they were sent, not masked


class BodyTooLarge(GenericConnectorError):
    pass


class Capture:
    """The server's state: numbering, counts, and when to stop."""

    def __init__(self, settings: CaptureSettings, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.say = say
        self.next_number = first_free_number(settings.out_dir)
        self.received = 0
        self.recorded = 0
        self.done: Optional[asyncio.Event] = None
        self.address: Optional[Tuple[str, int]] = None
        try:
            json.loads(settings.answer)
            self.answer_type = "application/json"
        except ValueError:
            self.answer_type = "text/plain"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received += 1
        query = list(request.query.items())
        # The method and path come from the request: printed with control characters escaped.
        line = printable(f"{request.method} {request.path}")
        try:
            raw = await self._read(request)
        except BodyTooLarge:
            limit = self.settings.max_body
            self.say(
                f"---- {line}: refused with 413, "
                f"the body is larger than {limit} bytes (--max-body); not recorded"
            )
            response = web.json_response(
                {"error": f"request body is larger than {limit} bytes"}, status=413
            )
            return await self._send(request, response)
        challenge = challenge_answer(request.method, dict(reversed(query)), raw)
        if challenge is not None:
            response = web.Response(text=challenge[0], content_type="text/plain")
            answered = f", answered {challenge[1]}"
        else:
            response = web.Response(text=self.settings.answer, content_type=self.answer_type)
            answered = ""
        if self.recorded >= self.settings.max_requests:
            self.say(
                f"---- {line}: not recorded, "
                f"{self.recorded} requests already captured (--max-requests){answered}"
            )
            return await self._send(request, response)
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        name, case, kind, masked = capture_case(
            self.next_number, request.method, request.path, headers, query, raw,
            self.settings.raw_bodies, keep_secrets=self.settings.keep_secrets,
        )  # fmt: skip
        try:
            self._write(name, case, raw)
        except OSError as error:
            self.say(
                f"---- {line}: not recorded, cannot write "
                f"{self.settings.out_dir / name}: {error.strerror}{answered}"
            )
            return await self._send(request, response)
        self.say(
            f"{self.next_number:04d} {line}: {kind}"
            + (f", {len(raw)} bytes" if raw else "")
            + answered
            + f" -> {self.settings.out_dir / name}"
            + printable(masked_note(masked))
        )
        self.next_number += 1
        self.recorded += 1
        return await self._send(request, response)

    async def _read(self, request: web.Request) -> bytes:
        limit = self.settings.max_body
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge
        chunks: List[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    def _write(self, name: str, case: Dict[str, Any], raw: bytes) -> None:
        directory = self.settings.out_dir
        if "body_file" in case:
            _write_atomically(directory / case["body_file"], raw)
        text = printable_json(case, indent=2) + "\n"
        _write_atomically(directory / name, text.encode("utf-8"))

    async def _send(self, request: web.Request, response: web.Response) -> web.Response:
        # Sent in full before the server may stop (--count).
        await response.prepare(request)
        await response.write_eof()
        count = self.settings.count
        if count is not None and self.received >= count and self.done is not None:
            self.done.set()
        return response


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def _say(line: str) -> None:
    print(line, flush=True)


async def serve(
    settings: CaptureSettings, say: Callable[[str], None] = _say, capture: Optional[Capture] = None
) -> Capture:
    """Record requests until ``settings.count`` requests arrived, or until cancelled."""
    settings.out_dir.mkdir(parents=True, exist_ok=True)
    capture = capture or Capture(settings, say)
    capture.done = asyncio.Event()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", capture.handle)
    # A platform's keep-alive connection must not hold up the stop for aiohttp's 60 s default.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    loop = asyncio.get_running_loop()
    # Ctrl-C ends the wait like --count does, so the server is shut down in order; a
    # KeyboardInterrupt raised in the middle of the loop could leave it waiting.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # main thread only
        loop.add_signal_handler(signal.SIGINT, capture.done.set)
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        capture.address = (host, port)
        stop = (
            f"stops after {settings.count} request{'' if settings.count == 1 else 's'}"
            if settings.count is not None
            else "Ctrl-C to stop"
        )
        say(f"capturing requests on http://{host}:{port}/ into {settings.out_dir}/ ({stop})")
        await capture.done.wait()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)
        await runner.cleanup()
    return capture


def run(settings: CaptureSettings, say: Callable[[str], None] = _say) -> int:
    """The ``capture`` command: 0 when stopped (Ctrl-C or --count), 1 if it cannot listen."""
    try:
        settings.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(
            f"generic-connector capture: cannot create {settings.out_dir}: {error.strerror}",
            file=sys.stderr,
        )
        return 1
    capture = Capture(settings, say)
    try:
        asyncio.run(serve(settings, say, capture))
    except KeyboardInterrupt:
        pass
    except OSError as error:
        print(
            f"generic-connector capture: cannot listen on {settings.host}:{settings.port}: "
            f"{error.strerror or error}",
            file=sys.stderr,
        )
        return 1
    plural = "" if capture.recorded == 1 else "s"
    say(f"captured {capture.recorded} request{plural} in {settings.out_dir}/")
    return 0
