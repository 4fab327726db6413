"""``generic-connector capture`` and ``new``: real HTTP requests recorded, starter mappings
guessed from them and validated as ``generic-connector validate`` does."""

import argparse
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml

from generic_connector.cli.capture import (
    body_entry,
    case_file_name,
    challenge_answer,
    channel_path,
)
from generic_connector.cli.onboarding import add_commands
from generic_connector.cli.validate import validate_file
from generic_connector.config import SCHEMA_PATH
from tests.rasa_process import free_port

ROOT = Path(__file__).resolve().parent.parent
PAYLOADS = ROOT / "tests" / "payloads"
TELEGRAM = PAYLOADS / "telegram" / "message.json"
TWILIO = PAYLOADS / "twilio" / "sms.form"
META_QUERY = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="generic-connector")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def command(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    return args.run(args)


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextmanager
def capture_server(out_dir: Path, *options: str) -> Iterator[Tuple[int, List[str]]]:
    """``capture`` in a thread on a free port; its printed lines once it has stopped."""
    port = free_port()
    output = io.StringIO()
    lines: List[str] = []
    codes: List[int] = []
    args = ["capture", "--port", str(port), "--out", str(out_dir), *options]
    with redirect_stdout(output):
        thread = threading.Thread(target=lambda: codes.append(command(*args)), daemon=True)
        thread.start()
        wait_for_port(port)
        yield port, lines
        thread.join(timeout=10)
    assert not thread.is_alive(), "capture did not stop after --count requests"
    assert codes == [0]
    lines += output.getvalue().splitlines()


def send(
    port: int,
    path: str,
    body: Optional[bytes] = None,
    headers: Optional[Dict[str, str]] = None,
    method: Optional[str] = None,
) -> Tuple[int, str, str]:
    """(status, content type, body) of a real HTTP request to the capture server."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers=headers or {}, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """Telegram's JSON update, Twilio's SMS form and Meta's verification GET, captured by a
    real server, with a body over --max-body refused in between."""
    out_dir = tmp_path_factory.mktemp("captured")
    answers = {}
    with capture_server(out_dir, "--count", "4", "--max-body", "2048") as (port, lines):
        answers["telegram"] = send(
            port,
            "/webhooks/telegram/webhook",
            TELEGRAM.read_bytes(),
            {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": "s3cr3t"},
        )
        answers["too large"] = send(port, "/webhooks/x/webhook", b"x" * 3000)
        answers["twilio"] = send(
            port,
            "/webhooks/twilio/webhook",
            TWILIO.read_bytes(),
            {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "abc="},
        )
        answers["meta"] = send(port, f"/webhooks/meta/webhook?{META_QUERY}")
    return {"dir": out_dir, "lines": lines, "answers": answers}


def read_case(directory: Path, name: str) -> Dict[str, Any]:
    return json.loads((directory / name).read_text(encoding="utf-8"))


# --- capture --------------------------------------------------------------------------


def test_capture_answers_and_writes_one_test_case_per_request(captured: Dict[str, Any]) -> None:
    answers = captured["answers"]
    assert answers["telegram"] == (200, "application/json; charset=utf-8", "{}")
    assert answers["twilio"] == (200, "application/json; charset=utf-8", "{}")
    assert answers["meta"] == (200, "text/plain; charset=utf-8", "1158201444")
    assert answers["too large"] == (
        413,
        "application/json; charset=utf-8",
        '{"error": "request body is larger than 2048 bytes"}',
    )
    assert sorted(p.name for p in captured["dir"].iterdir()) == [
        "0001-post-webhooks-telegram-webhook.json",
        "0002-post-webhooks-twilio-webhook.json",
        "0003-get-webhooks-meta-webhook.json",
    ]
    lines = captured["lines"]
    assert lines[0].startswith("capturing requests on http://127.0.0.1:")
    assert lines[1].startswith("0001 POST /webhooks/telegram/webhook: JSON, 393 bytes -> ")
    assert lines[1].endswith(
        "0001-post-webhooks-telegram-webhook.json (masked: X-Telegram-Bot-Api-Secret-Token; "
        "use --keep-secrets to keep them)"
    )
    assert lines[2] == (
        "---- POST /webhooks/x/webhook: refused with 413, the body is larger than 2048 bytes "
        "(--max-body); not recorded"
    )
    assert lines[3].startswith("0002 POST /webhooks/twilio/webhook: text, 464 bytes -> ")
    assert lines[3].endswith(
        "0002-post-webhooks-twilio-webhook.json (masked: X-Twilio-Signature; signature headers "
        "masked; use --keep-secrets to keep them)"
    )
    assert lines[4].startswith(
        "0003 GET /webhooks/meta/webhook: no body, answered the verification challenge -> "
    )
    assert lines[5] == f"captured 3 requests in {captured['dir']}/"


def test_a_captured_json_request_is_a_test_case_with_its_body_as_json(
    captured: Dict[str, Any],
) -> None:
    case = read_case(captured["dir"], "0001-post-webhooks-telegram-webhook.json")
    assert list(case) == ["name", "source", "method", "path", "headers", "query", "body", "expect"]
    assert case["name"] == "request 1: POST /webhooks/telegram/webhook"
    assert case["source"].startswith("captured 20")
    assert case["method"] == "POST"
    assert case["path"] == "/webhook"  # under /webhooks/<name>, as test cases give it
    # Host, Content-Length, Connection and Accept-Encoding describe the connection: left out;
    # credentials are masked (test cases are committed).
    assert case["headers"] == {
        "Content-Type": "application/json",
        "X-Telegram-Bot-Api-Secret-Token": "<redacted>",
        "User-Agent": f"Python-urllib/{sys.version_info.major}.{sys.version_info.minor}",
    }
    assert case["query"] == {}
    assert case["body"] == json.loads(TELEGRAM.read_text())
    assert case["expect"] == {}


def test_a_captured_form_is_kept_as_text_and_a_get_keeps_its_query(
    captured: Dict[str, Any],
) -> None:
    twilio = read_case(captured["dir"], "0002-post-webhooks-twilio-webhook.json")
    assert twilio["body"] == TWILIO.read_text()
    assert twilio["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    assert twilio["headers"]["X-Twilio-Signature"] == "<redacted>"
    meta = read_case(captured["dir"], "0003-get-webhooks-meta-webhook.json")
    assert meta["method"] == "GET"
    assert meta["query"] == {
        "hub.mode": "subscribe",
        "hub.challenge": "1158201444",
        "hub.verify_token": "<redacted>",
    }
    assert "body" not in meta and "body_file" not in meta


def test_capture_limits_records_raw_bodies_and_continues_numbering(tmp_path: Path) -> None:
    (tmp_path / "0007-post-earlier.json").write_text("{}")
    raw = b'{"sender": {"id": "u-1"},  "text": "caf\\u00e9", "n": 1.50}'
    options = ("--count", "3", "--max-requests", "2", "--raw-bodies", "--answer", "thanks")
    with capture_server(tmp_path, *options) as (port, lines):
        first = send(port, "/hook?x=1&x=2", raw, {"Content-Type": "application/json"})
        second = send(port, "/bin", bytes(range(256)), method="PUT")
        third = send(port, "/webhooks/a/webhook", b"{}")
    assert first == second == third == (200, "text/plain; charset=utf-8", "thanks")
    case = read_case(tmp_path, "0008-post-hook.json")
    assert case["path"] == "/hook" and case["query"] == {"x": "1"}
    assert case["body_file"] == "0008-post-hook.body"
    assert (tmp_path / "0008-post-hook.body").read_bytes() == raw  # byte for byte
    put = read_case(tmp_path, "0009-put-bin.json")
    assert put["method"] == "PUT"
    assert (tmp_path / put["body_file"]).read_bytes() == bytes(range(256))
    assert not list(tmp_path.glob("0010-*"))
    assert lines[-2] == (
        "---- POST /webhooks/a/webhook: not recorded, 2 requests already captured (--max-requests)"
    )
    assert lines[-1] == f"captured 2 requests in {tmp_path}/"


def test_capture_stops_on_ctrl_c(tmp_path: Path) -> None:
    script = (
        "import argparse, sys\n"
        "from generic_connector.cli.onboarding import add_commands\n"
        "parser = argparse.ArgumentParser()\n"
        "add_commands(parser.add_subparsers(dest='command'))\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "sys.exit(args.run(args))\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, "capture", "--port", "0", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        first = process.stdout.readline()
        port = int(first.split("http://127.0.0.1:")[1].split("/")[0])
        assert send(port, "/webhooks/x/webhook", b'{"text": "hi"}')[0] == 200
        assert process.stdout.readline().startswith("0001 POST /webhooks/x/webhook: JSON")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert out == f"captured 1 request in {tmp_path}/\n"
    assert [p.name for p in tmp_path.iterdir()] == ["0001-post-webhooks-x-webhook.json"]


def test_capture_helpers() -> None:
    assert channel_path("/webhooks/telegram/webhook") == "/webhook"
    assert channel_path("/webhooks/meta/verify/it") == "/verify/it"
    assert channel_path("/") == "/"
    assert case_file_name(12, "POST", "/") == "0012-post-root.json"
    assert case_file_name(3, "GET", "/a b/ç.x") == "0003-get-a-b-x.json"
    assert body_entry(b"", "f.body") == ({}, "no body")
    assert body_entry(b"\xff\xfe", "f.body") == ({"body_file": "f.body"}, "binary")
    assert body_entry(b'"just a string"', "f.body") == ({"body": '"just a string"'}, "text")
    assert body_entry(b"[NaN]", "f.body") == ({"body": "[NaN]"}, "text")
    assert body_entry(b"[1, 2]", "f.body") == ({"body": [1, 2]}, "JSON")
    slack = b'{"token": "t", "challenge": "c-1", "type": "url_verification"}'
    assert challenge_answer("POST", {}, slack) == ("c-1", "the url_verification challenge")
    assert challenge_answer("GET", {"hub.challenge": "9"}, b"") == (
        "9",
        "the verification challenge",
    )
    assert challenge_answer("POST", {}, b'{"type": "message"}') is None


# --- new ------------------------------------------------------------------------------


def starter(path: Path) -> Dict[str, Any]:
    """A written starter mapping, after checking it validates with all its cases passing."""
    report = validate_file(path)
    assert report.valid, [str(f) for f in report.findings]
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert report.tests_passed == len(document["tests"])
    return document


def test_new_from_a_captured_telegram_update(
    captured: Dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    case_file = captured["dir"] / "0001-post-webhooks-telegram-webhook.json"
    out = tmp_path / "mappings" / "telegram.yml"
    assert command("new", "--from", str(case_file), "--name", "telegram", "--out", str(out)) == 0
    assert capsys.readouterr().out == (
        f"wrote {out} (sender message.chat.id, text message.text, message_id update_id; "
        "1 test case passes)\n"
    )
    text = out.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    # The project's own schema (written beside mappings/), not a path inside the virtualenv.
    assert first == "# yaml-language-server: $schema=../.vscode/generic-connector.schema.json"
    project_schema = tmp_path / ".vscode" / "generic-connector.schema.json"
    assert json.loads(project_schema.read_text(encoding="utf-8")) == json.loads(
        SCHEMA_PATH.read_text(encoding="utf-8")
    )
    assert "  # other candidates: message.from.id\n  sender: message.chat.id\n" in text
    mapping = starter(out)
    assert mapping["name"] == "telegram"
    request = mapping["request"]
    assert request["sender"] in ("message.chat.id", "message.from.id")
    assert request["text"] == "message.text"
    assert request["message_id"] == "update_id"
    assert "events" not in request and "format" not in request
    assert request["ignore"] == [{"name": "no text", "when": "!(message.text)"}]
    [case] = mapping["tests"]
    assert case["name"] == "request 1: POST /webhooks/telegram/webhook"
    assert case["headers"]["X-Telegram-Bot-Api-Secret-Token"] == "<redacted>"
    assert case["body"]["message"]["text"] == "/start"
    assert case["expect"] == {"sender": "1111111", "text": "/start", "message_id": "10000"}


def test_new_from_a_captured_twilio_form(captured: Dict[str, Any], tmp_path: Path) -> None:
    case_file = captured["dir"] / "0002-post-webhooks-twilio-webhook.json"
    out = tmp_path / "twilio.yml"
    assert command("new", "--from", str(case_file), "--out", str(out)) == 0
    mapping = starter(out)
    assert mapping["name"] == "0002-post-webhooks-twilio-webhook"  # the file's stem
    request = mapping["request"]
    assert request["format"] == "form"
    assert (request["sender"], request["text"], request["message_id"]) == (
        "From",
        "Body",
        "MessageSid",
    )
    assert mapping["tests"][0]["body"] == TWILIO.read_text()
    assert mapping["tests"][0]["expect"] == {
        "sender": "+14017122661",
        "text": "Ahoy! Let's build something amazing.",
        "message_id": "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    }


def test_new_makes_a_captured_verification_get_a_handshake(
    captured: Dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "meta.yml"
    sources = [
        captured["dir"] / "0001-post-webhooks-telegram-webhook.json",
        captured["dir"] / "0003-get-webhooks-meta-webhook.json",
    ]
    argv = ["new", "--name", "meta", "--out", str(out)]
    for source in sources:
        argv += ["--from", str(source)]
    assert command(*argv) == 0
    mapping = starter(out)
    assert mapping["handshakes"] == [
        {
            "name": "webhook verification",
            "method": "GET",
            "when": "query('hub.mode') == 'subscribe'",
            "verify": "query('hub.verify_token') == env('VERIFY_TOKEN')",
            "response": {"body": "query('hub.challenge')", "content_type": "text/plain"},
        }
    ]
    get = mapping["tests"][1]
    assert get["method"] == "GET" and "path" not in get
    assert get["env"] == {"VERIFY_TOKEN": "<redacted>"}  # the masked token the case sends
    assert get["expect"] == {"status": 200, "response": "1158201444"}


def test_new_prints_the_mapping_by_default(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert command("new", "--from", str(TELEGRAM)) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == f"# yaml-language-server: $schema={SCHEMA_PATH}"
    assert "\nname: message\n" in text  # the payload file's stem
    printed = tmp_path / "message.yml"
    printed.write_text(text, encoding="utf-8")
    mapping = starter(printed)
    assert mapping["tests"][0]["name"] == "the payload of message.json"


@pytest.mark.parametrize(
    "payload, events, sender, text, message_id, expect",
    [
        (
            "line/text_message_group.json",
            "events[]",
            "source.userId",
            "message.text",
            "webhookEventId",
            {
                "sender": "U4af4980629...",
                "text": "@All @example Good Morning!! (love)",
                "message_id": "01FZ74A0TDDPYRVKNK77XKC3ZR",
            },
        ),
        (
            "whatsapp/text_message.json",
            "entry[].changes[].value.messages[]",
            "from",
            "text.body",
            "id",
            {
                "sender": "16505551234",
                "text": "Does it come in another color?",
                "message_id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
            },
        ),
        (
            "messenger/message.json",
            None,
            "sender.id",
            "message.text",
            "message.mid",
            {
                "sender": "<PSID>",
                "text": "hello, world!",
                "message_id": "mid.1457764197618:41d102a3e1ae206a38",
            },
        ),
        (
            "twilio/sms.form",  # a form body file, not a capture
            None,
            "From",
            "Body",
            "MessageSid",
            {
                "sender": "+14017122661",
                "text": "Ahoy! Let's build something amazing.",
                "message_id": "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            },
        ),
    ],
)
def test_new_guesses_from_payload_files(
    tmp_path: Path,
    payload: str,
    events: Optional[str],
    sender: str,
    text: str,
    message_id: str,
    expect: Dict[str, Any],
) -> None:
    out = tmp_path / "starter.yml"
    assert command("new", "--from", str(PAYLOADS / payload), "--out", str(out)) == 0
    mapping = starter(out)
    request = mapping["request"]
    assert request.get("events") == events
    assert (request["sender"], request["text"], request["message_id"]) == (
        sender,
        text,
        message_id,
    )
    assert mapping["tests"][0]["expect"] == expect


def test_new_from_a_batch_expects_every_event(tmp_path: Path) -> None:
    payload = tmp_path / "batch.json"
    payload.write_text(
        json.dumps(
            {
                "messages": [
                    {"id": "m1", "author": {"id": 7}, "content": "hello"},
                    {"id": "m2", "author": {"id": 8}, "content": "bye"},
                    {"id": "m3", "author": {"id": 8}, "reaction": "+1"},
                ]
            }
        )
    )
    out = tmp_path / "batch.yml"
    assert command("new", "--from", str(payload), "--out", str(out)) == 0
    assert "  # each item of this list becomes one user message (3 in the sample)\n" in (
        out.read_text()
    )
    mapping = starter(out)
    assert mapping["request"]["events"] == "messages[]"
    assert mapping["tests"][0]["expect"] == {
        "status": 200,
        "messages": [
            {"sender": "7", "text": "hello", "message_id": "m1"},
            {"sender": "8", "text": "bye", "message_id": "m2"},
        ],
        "ignored": ["no text"],
    }


def test_new_keeps_a_raw_body_file_next_to_its_capture(tmp_path: Path) -> None:
    captures = tmp_path / "captured"
    with capture_server(captures, "--count", "1", "--raw-bodies") as (port, _):
        send(port, "/webhooks/rest/webhook", b'{"sender": "u1",  "message": "hi"}')
    out = tmp_path / "mappings" / "rest.yml"
    case_file = captures / "0001-post-webhooks-rest-webhook.json"
    assert command("new", "--from", str(case_file), "--name", "rest", "--out", str(out)) == 0
    mapping = starter(out)
    [case] = mapping["tests"]
    assert case["body_file"] == "../captured/0001-post-webhooks-rest-webhook.body"
    assert case["expect"] == {"sender": "u1", "text": "hi"}
    assert "message_id" not in mapping["request"]


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (["--from", "nowhere.json"], 2, "error: cannot read nowhere.json"),
        (
            ["--from", str(PAYLOADS / "slack" / "url_verification.json")],
            1,
            "found no text: no key named text, message, body, content holds a string",
        ),
        (
            ["--from", str(PAYLOADS / "whatsapp" / "status_sent.json")],
            1,
            "found no text",
        ),
        (["--from", str(TELEGRAM), "--name", "no spaces"], 2, "--name 'no spaces': use letters"),
    ],
)
def test_new_says_why_it_cannot_start_a_mapping(
    capsys: pytest.CaptureFixture, argv: List[str], code: int, message: str
) -> None:
    assert command("new", *argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


def test_new_does_not_replace_a_file_without_force(tmp_path: Path) -> None:
    out = tmp_path / "m.yml"
    out.write_text("keep me")
    assert command("new", "--from", str(TELEGRAM), "--out", str(out)) == 2
    assert out.read_text() == "keep me"
    assert command("new", "--from", str(TELEGRAM), "--out", str(out), "--force") == 0
    assert starter(out)["request"]["text"] == "message.text"


def test_new_leaves_out_requests_no_channel_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    put = tmp_path / "0001-put-x.json"
    put.write_text(
        json.dumps({"name": "a put", "method": "PUT", "body": {"text": "hi"}, "expect": {}})
    )
    out = tmp_path / "m.yml"
    assert command("new", "--from", str(TELEGRAM), "--from", str(put), "--out", str(out)) == 0
    assert f"{put}: left out, a PUT request" in capsys.readouterr().err
    assert len(starter(out)["tests"]) == 1


def test_commands_are_registered_with_their_options() -> None:
    args = parser().parse_args(["capture", "--out", "d"])
    assert (args.port, args.host, args.max_body, args.max_requests, args.count) == (
        5005,
        "127.0.0.1",
        1_048_576,
        1000,
        None,
    )
    assert args.answer == "{}" and args.out == Path("d") and callable(args.run)
    args = parser().parse_args(["new", "--from", "a.json", "--from", "b.json"])
    assert args.sources == [Path("a.json"), Path("b.json")] and callable(args.run)
    with pytest.raises(SystemExit):
        parser().parse_args(["capture", "--count", "0"])
    with pytest.raises(SystemExit):
        parser().parse_args(["new"])  # --from is required
    assert os.environ.get("VERIFY_TOKEN") is None  # the dry runs left the environment alone
