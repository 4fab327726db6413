"""Control characters from requests and platforms' answers never reach a log line or the
operator's terminal as they are: CR/LF would forge lines, ESC [ ... would move the cursor,
recolour or retitle the terminal, bidi overrides would make text read as something else."""

import asyncio
import io
import json
import logging
import socket
import threading
import time
import urllib.request
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import redis

from generic_connector import logtext
from generic_connector.cli import main
from generic_connector.config import load_channel
from generic_connector.logtext import EscapeControl, get_logger, printable, printable_json
from generic_connector.pipeline import Assistant, Pipeline
from generic_connector.request import IncomingRequest
from tests.redis_server import RedisServer, fresh, serve

# A sender id that forges a log line and turns the terminal red, and a platform's answer that
# sets the terminal's title (OSC 0) - what the dead-letter stream may hold.
HOSTILE_SENDER = "u1\r\nINFO forged line\x1b[31m"
HOSTILE_ANSWER = "HTTP 500: \x1b]0;pwned\x07 \u202eevil"


# --- printable ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("plain text, café, 日本語, emoji 🙂", "plain text, café, 日本語, emoji 🙂"),
        ("a\nb", "a\\nb"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("\x00\x07\x08\x7f", "\\x00\\x07\\x08\\x7f"),
        ("\x85 \x9b31m", "\\x85 \\x9b31m"),  # C1: NEL, and CSI that some terminals obey
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\u202aa\u202bb\u202cc\u202dd\u202ee", "\\u202aa\\u202bb\\u202cc\\u202dd\\u202ee"),
        ("\u2066a\u2067b\u2068c\u2069", "\\u2066a\\u2067b\\u2068c\\u2069"),
        ("\udcff", "\\udcff"),  # a byte a header decoder kept as a lone surrogate
        ("back\\slash", "back\\slash"),
        ("\u200b\u00a0", "\u200b\u00a0"),  # not controls: left alone
    ],
)
def test_printable_escapes_control_characters(text: str, expected: str) -> None:
    assert printable(text) == expected


def test_printable_json_is_the_same_json_value_without_raw_controls() -> None:
    value = {"sender": HOSTILE_SENDER, "answer": HOSTILE_ANSWER}
    text = printable_json(value)
    assert text == (
        '{"sender": "u1\\r\\nINFO forged line\\u001b[31m", '
        '"answer": "HTTP 500: \\u001b]0;pwned\\u0007 \\u202eevil"}'
    )
    assert json.loads(text) == value


# --- Log records --------------------------------------------------------------------------


def record(msg: str, args: object) -> logging.LogRecord:
    return logging.LogRecord("generic_connector.test", logging.INFO, __file__, 1, msg, args, None)


def test_the_filter_escapes_string_arguments() -> None:
    entry = record("sender %s", ("a\nb",))
    assert EscapeControl().filter(entry) is True
    assert entry.getMessage() == "sender a\\nb"


def test_the_filter_keeps_numbers_and_escapes_other_objects() -> None:
    entry = record(
        "%s: %d attempts, %.1f s, %r, %s", ("x\x1b[2J", 3, 1.5, ValueError("bad\nline"), None)
    )
    EscapeControl().filter(entry)
    assert entry.getMessage() == "x\\x1b[2J: 3 attempts, 1.5 s, ValueError('bad\\nline'), None"


def test_the_filter_escapes_a_mapping_argument() -> None:
    entry = record("%(sender)s sent %(count)d", {"sender": "a\r\nb", "count": 2})
    EscapeControl().filter(entry)
    assert entry.getMessage() == "a\\r\\nb sent 2"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def collected() -> Iterator[_Collect]:
    handler = _Collect()
    logger = logging.getLogger("generic_connector")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_get_logger_escapes_what_its_records_carry(collected: _Collect) -> None:
    logger = get_logger("generic_connector.hostile_text_test")
    assert get_logger("generic_connector.hostile_text_test") is logger
    assert [type(f) for f in logger.filters] == [EscapeControl]  # attached once
    logger.info("Channel %s: request refused for sender %s", "shop", HOSTILE_SENDER)
    assert collected.lines == [
        "Channel shop: request refused for sender u1\\r\\nINFO forged line\\x1b[31m"
    ]


def test_a_filter_on_a_parent_logger_does_not_see_its_childrens_records(
    collected: _Collect,
) -> None:
    """Why modules take their logger from get_logger(__name__): installing the filter on the
    package's logger alone leaves its modules' records as they are."""
    logtext.install(logging.getLogger("generic_connector"))
    try:
        logging.getLogger("generic_connector.hostile_child").info("%s", "a\nb")
    finally:
        parent = logging.getLogger("generic_connector")
        for found in [f for f in parent.filters if isinstance(f, EscapeControl)]:
            parent.removeFilter(found)
    assert collected.lines == ["a\nb"]


# --- deliveries list / show ---------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from serve()


@pytest.fixture
def dead_letter(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Dict[str, str]:
    """A dead-letter entry whose conversation, answer and request hold control characters."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    url = fresh(redis_server)
    shown = {
        "kind": "telegram",
        "method": "POST",
        "url": "https://api.example/send\x1b[8m",
        "headers": {"X-Note": "a\x1b[2Jb"},
        "body": '{"text": "hi\\u001b"}\n\x1b[1A',
    }
    fields = {
        "channel": "shop",
        "conversation": HOSTILE_SENDER,
        "entry": "e1",
        "kind": "telegram",
        "attempts": "3",
        "status": "500",
        "answer": HOSTILE_ANSWER,
        "problem": HOSTILE_ANSWER,
        "reason": "retries exhausted",
        "at": "0",
        "shown": json.dumps(shown, ensure_ascii=False),
        "request": "{}",
    }
    client = redis.Redis.from_url(url)
    try:
        entry_id = client.xadd("generic_connector:dead", fields).decode()
    finally:
        client.close()
    yield {"url": url, "id": entry_id}
    monkeypatch.delenv("TZ")
    time.tzset()


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> str:
    capsys.readouterr()
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_deliveries_list_escapes_a_hostile_sender(
    dead_letter: Dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    out = run_cli(capsys, "deliveries", "list", "--url", dead_letter["url"])
    assert out == (
        f"{dead_letter['id']}  1970-01-01 00:00:00  shop  "
        "conversation u1\\r\\nINFO forged line\\x1b[31m  telegram  3 attempt(s)  "
        "HTTP 500: \\x1b]0;pwned\\x07 \\u202eevil\n"
        "1 undelivered request\n"
    )


def test_deliveries_show_escapes_every_line(
    dead_letter: Dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    out = run_cli(capsys, "deliveries", "show", dead_letter["id"], "--url", dead_letter["url"])
    assert out == (
        f"entry         {dead_letter['id']} (1970-01-01 00:00:00)\n"
        "channel       shop\n"
        "conversation  u1\\r\\nINFO forged line\\x1b[31m\n"
        "kind          telegram\n"
        "attempts      3 (retries exhausted)\n"
        "last problem  HTTP 500: \\x1b]0;pwned\\x07 \\u202eevil\n"
        "last answer   HTTP 500: HTTP 500: \\x1b]0;pwned\\x07 \\u202eevil\n"
        "request       POST https://api.example/send\\x1b[8m\n"
        "  X-Note: a\\x1b[2Jb\n"
        'body          {"text": "hi\\u001b"}\\n\\x1b[1A\n'
    )


def test_deliveries_json_output_holds_no_raw_control_character(
    dead_letter: Dict[str, str], capsys: pytest.CaptureFixture
) -> None:
    out = run_cli(capsys, "deliveries", "list", "--url", dead_letter["url"], "--format", "json")
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out and "\x07" not in out
    [entry] = json.loads(out)
    assert entry["conversation"] == HOSTILE_SENDER  # the same value, escaped as JSON
    assert entry["request"]["headers"] == {"X-Note": "a\x1b[2Jb"}
    shown = run_cli(
        capsys, "deliveries", "show", dead_letter["id"], "--url", dead_letter["url"],
        "--format", "json",
    )  # fmt: skip
    assert "\x1b" not in shown and json.loads(shown)["answer"] == HOSTILE_ANSWER


# --- capture ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def capture(out_dir: Path, requests: List[urllib.request.Request], *options: str) -> List[str]:
    """``generic-connector capture`` in a thread until it has the requests; its lines."""
    port = free_port()
    output = io.StringIO()
    codes: List[int] = []
    argv = ["capture", "--port", str(port), "--out", str(out_dir), "--count", str(len(requests))]
    with redirect_stdout(output):
        thread = threading.Thread(target=lambda: codes.append(main(argv + list(options))))
        thread.start()
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "capture did not start"
                time.sleep(0.02)
        for request in requests:
            request.full_url = f"http://127.0.0.1:{port}{request.selector}"
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        thread.join(timeout=10)
    assert codes == [0]
    return output.getvalue().splitlines()


def test_capture_prints_a_hostile_path_escaped_and_writes_no_raw_control(
    tmp_path: Path,
) -> None:
    request = urllib.request.Request(
        "http://placeholder/webhooks/x/%1b[2J%0d%0aforged%e2%80%ae",
        data=b'{"text": "hi"}',
        headers={"Content-Type": "application/json", "X-Note": "a\x9bb"},
    )
    lines = capture(tmp_path, [request])
    assert lines[1] == (
        "0001 POST /webhooks/x/\\x1b[2J\\r\\nforged\\u202e: JSON, 14 bytes -> "
        f"{tmp_path}/0001-post-webhooks-x-2J-forged.json"
    )
    text = (tmp_path / "0001-post-webhooks-x-2J-forged.json").read_text(encoding="utf-8")
    assert '"X-Note": "a\\u009bb"' in text
    assert '"name": "request 1: POST /webhooks/x/\\u001b[2J\\r\\nforged\\u202e"' in text
    case = json.loads(text)
    assert case["headers"]["X-Note"] == "a\x9bb"  # the same value, escaped as JSON


def test_capture_masks_credentials_by_default(tmp_path: Path) -> None:
    request = urllib.request.Request(
        "http://placeholder/webhooks/x/webhook?hub.verify_token=t0k&api_key=k3y&page=2",
        data=b"{}",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Bearer s3cr3t",
            "Cookie": "session=abc",
            "X-Hub-Signature-256": "sha256=00ff",
            "X-Telegram-Bot-Api-Secret-Token": "t3l3gram",
            "X-Api-Key": "k3y",
            "X-Auth-Password": "pw",
            "X-Request-Id": "r-1",
        },
    )
    lines = capture(tmp_path, [request])
    name = "0001-post-webhooks-x-webhook.json"
    assert lines[1] == (
        f"0001 POST /webhooks/x/webhook: JSON, 2 bytes -> {tmp_path}/{name} (masked: "
        "Authorization, Cookie, X-Hub-Signature-256, X-Telegram-Bot-Api-Secret-Token, "
        "X-Api-Key, X-Auth-Password, hub.verify_token, api_key; signature headers masked; "
        "use --keep-secrets to keep them)"
    )
    case = json.loads((tmp_path / name).read_text(encoding="utf-8"))
    assert {k: v for k, v in case["headers"].items() if k != "User-Agent"} == {
        "Content-Type": "application/json",
        "Authorization": "<redacted>",
        "Cookie": "<redacted>",
        "X-Hub-Signature-256": "<redacted>",
        "X-Telegram-Bot-Api-Secret-Token": "<redacted>",
        "X-Api-Key": "<redacted>",
        "X-Auth-Password": "<redacted>",
        "X-Request-Id": "r-1",
    }
    assert case["query"] == {
        "hub.verify_token": "<redacted>",
        "api_key": "<redacted>",
        "page": "2",
    }
    for secret in ("s3cr3t", "abc", "00ff", "t3l3gram", "k3y", "t0k"):
        assert secret not in (tmp_path / name).read_text(encoding="utf-8")


def test_capture_keep_secrets_writes_them_as_sent(tmp_path: Path) -> None:
    request = urllib.request.Request(
        "http://placeholder/webhooks/x/webhook?token=t0k",
        data=b"{}",
        headers={"Content-Type": "application/json", "Authorization": "Bearer s3cr3t"},
    )
    lines = capture(tmp_path, [request], "--keep-secrets")
    name = "0001-post-webhooks-x-webhook.json"
    assert lines[1] == f"0001 POST /webhooks/x/webhook: JSON, 2 bytes -> {tmp_path}/{name}"
    case = json.loads((tmp_path / name).read_text(encoding="utf-8"))
    assert case["headers"]["Authorization"] == "Bearer s3cr3t"
    assert case["query"] == {"token": "t0k"}


def test_a_masked_authorization_alone_says_nothing_of_signatures(tmp_path: Path) -> None:
    request = urllib.request.Request(
        "http://placeholder/hook", headers={"Authorization": "Basic cmFzYTpwdw=="}
    )
    lines = capture(tmp_path, [request])
    assert lines[1] == (
        f"0001 GET /hook: no body -> {tmp_path}/0001-get-hook.json (masked: Authorization; "
        "use --keep-secrets to keep them)"
    )


def test_dry_run_prints_no_raw_control_character(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    body = tmp_path / "body.json"
    body.write_text('{"sender": "u\\u202e1\\u009b", "message": "hi\\u2028there"}', "utf-8")
    mapping = Path(__file__).resolve().parent.parent / "mappings" / "myio.yml"
    out = run_cli(capsys, "dry-run", str(mapping), "--body", str(body), "--reply", "ok")
    assert '"sender": "u\\u202e1\\u009b"' in out
    assert '"text": "hi\\u2028there"' in out
    assert not {"\u202e", "\x9b", "\u2028"} & set(out)
    assert json.loads(out)["messages"][0]["sender"] == "u\u202e1\x9b"


def test_a_forged_log_line_in_a_sender_id_is_logged_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A pipeline refusal names the sender; CR/LF and an ANSI escape in it would start a forged
    # line and recolour the operator's terminal.
    class Failing(Assistant):
        async def handle(self, message: Any) -> Any:
            raise RuntimeError("down")

    config = load_channel({"name": "logged", "request": {"sender": "user", "text": "text"}})
    sender = "mallory\r\n2026-12-07 ERROR forged\x1b[2J"
    body = json.dumps({"user": sender, "text": "hi"}).encode()
    with caplog.at_level(logging.ERROR, logger="generic_connector"):
        asyncio.run(Pipeline(config).run(IncomingRequest.from_parts(body), Failing()))
    lines = [record.getMessage() for record in caplog.records]
    assert any("sender mallory\\r\\n2026-12-07 ERROR forged\\x1b[2J" in line for line in lines)
    assert not any("\n" in line or "\x1b" in line for line in lines)
